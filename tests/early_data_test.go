package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// TestEarlyDataGets425: Caddy accepts HTTP/3 requests in 0-RTT, before
// the TLS handshake is done, when neither the client's address (a 0-RTT
// packet may carry any source, a trusted proxy's included) nor the request
// (it may be a replay) is proven. A Python app's request sent so gets 425
// Too Early; the same request once the handshake is done is served. A
// real QUIC client resumes a session with 0-RTT through a relay on
// loopback that delays every packet, so that the request is served before
// the client's handshake ends (as across a network).
func TestEarlyDataGets425(t *testing.T) {
	t.Parallel()
	port := freeUDPAndTCPPort(t)
	startCaddy(t, fmt.Sprintf(`
https://localhost:%d {
	bind 127.0.0.1
	tls internal
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}`, port))
	relay := delayingRelay(t, fmt.Sprintf("127.0.0.1:%d", port), 25*time.Millisecond)
	tickets := tls.NewLRUClientSessionCache(4)
	tlsConfig := &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, ClientSessionCache: tickets} // tls internal's root is not installed
	url := fmt.Sprintf("https://localhost:%d/", relay)
	get := func(tr *http3.Transport, method string) (int, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, method, url, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	// a first connection: a full handshake, and a session ticket
	var status int
	var err error
	waitFor(t, 30*time.Second, "an HTTP/3 answer (tls internal issues its certificate as Caddy starts)", func() bool {
		first := &http3.Transport{TLSClientConfig: tlsConfig}
		defer first.Close()
		status, _, err = get(first, http.MethodGet)
		return err == nil && status == 200
	})
	// the next one resumes it and sends its request in 0-RTT
	second := &http3.Transport{TLSClientConfig: tlsConfig}
	defer second.Close() // (before the relay stops: Caddy's shutdown waits for its close)
	status, body, err := get(second, http3.MethodGet0RTT)
	if err != nil || status != http.StatusTooEarly {
		t.Errorf("a request in 0-RTT: %d %q %v, want 425", status, body, err)
	}
	// and once its handshake is done, the same request is served
	if status, body, err := get(second, http.MethodGet); err != nil || status != 200 {
		t.Errorf("the request after the handshake: %d %q %v, want 200", status, body, err)
	}
}

// freeUDPAndTCPPort is a loopback port free for both TCP and UDP (an
// HTTPS site listens on both, HTTP/3 on UDP).
func freeUDPAndTCPPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		port := freePort(t)
		if c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

// delayingRelay relays UDP datagrams between one client and target,
// each after delay, and returns its port. It stops with the test.
func delayingRelay(t *testing.T, target string, delay time.Duration) int {
	t.Helper()
	front, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	to, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var client net.Addr
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // client to target
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			client = from
			mu.Unlock()
			packet := append([]byte(nil), buf[:n]...)
			time.AfterFunc(delay, func() { back.Write(packet) })
		}
	}()
	go func() { // target to client
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			to := client
			mu.Unlock()
			packet := append([]byte(nil), buf[:n]...)
			time.AfterFunc(delay, func() {
				select {
				case <-done:
				default:
					front.WriteTo(packet, to)
				}
			})
		}
	}()
	t.Cleanup(func() {
		// what is on its way (a client's close, which Caddy's shutdown
		// waits for) arrives first
		time.Sleep(4 * delay)
		close(done)
		front.Close()
		back.Close()
		wg.Wait()
	})
	return front.LocalAddr().(*net.UDPAddr).Port
}
