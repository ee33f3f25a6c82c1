package tests

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestGuardUsesAppHosts: on a port-only site whose guard lists no hosts,
// a Django app that allows only localhost is asked only for localhost:
// other Hosts get 421 before any worker sees them, and the log says once
// which setting to change.
func TestGuardUsesAppHosts(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	c := startCaddy(t, fmt.Sprintf(`
:%d {
	bind 127.0.0.1
	wsgi djhosts:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		settings auto
	}
}`, port))
	base := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if resp, body := fetchHost(t, base, fmt.Sprintf("localhost:%d", port)); resp.StatusCode != 200 || !strings.HasPrefix(body, "hello from localhost") {
		t.Fatalf("Host localhost: %d %q", resp.StatusCode, body)
	}
	for _, host := range []string{"evil.example", fmt.Sprintf("evil.example:%d", port), "localhost.evil.example", fmt.Sprintf("127.0.0.1:%d", port)} {
		if resp, body := fetchHost(t, base, host); resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("Host %s: %d %q, want 421", host, resp.StatusCode, body)
		}
	}
	log := c.log.String()
	if strings.Contains(log, "djhosts saw evil") || strings.Contains(log, "djhosts saw localhost.evil") || strings.Contains(log, "djhosts saw 127.0.0.1") {
		t.Errorf("the app was asked for a foreign Host:\n%s", tail(log, 20))
	}
	if !strings.Contains(log, "djhosts saw localhost") {
		t.Errorf("the app never saw the good request, so this test proves nothing:\n%s", tail(log, 20))
	}
	if n := strings.Count(log, "guard answered 421 to a Host the app does not allow"); n != 1 || !strings.Contains(log, "ALLOWED_HOSTS") {
		t.Errorf("want one warning naming ALLOWED_HOSTS, got %d:\n%s", n, tail(log, 20))
	}
}

// TestGuardJudgesWebSocketOpenings: WebSocket openings pass the guard
// like every request — its hosts and its refused paths — over HTTP/1.1
// and HTTP/2 extended CONNECT, from the asgi block's own guard and from a
// site-level guard directive; good openings still connect.
func TestGuardJudgesWebSocketOpenings(t *testing.T) {
	t.Setenv("GODEBUG", "http2xconnect=1") // inherited by caddy
	own, site := freePort(t), freePort(t)
	startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	servers {
		protocols h1 h2c
	}
}
http://:%d {
	bind 127.0.0.1
	asgi ws_app:app {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard enforce {
			hosts 127.0.0.1
		}
	}
}
http://:%d {
	bind 127.0.0.1
	guard {
		hosts 127.0.0.1
	}
	asgi ws_app:app {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard off
	}
}`, own, site))
	for name, port := range map[string]int{"asgi guard": own, "site guard": site} {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		for _, tc := range []struct {
			host, path string
			want       int
		}{
			{addr, "/echo", http.StatusSwitchingProtocols},
			{"evil.example", "/echo", http.StatusMisdirectedRequest},
			{addr, "/.env", http.StatusNotFound},
			{addr, "/.git/config", http.StatusNotFound},
			{addr, "/app.py", http.StatusNotFound},
		} {
			if got := h1Opening(t, addr, tc.host, tc.path); got != tc.want {
				t.Errorf("%s: HTTP/1.1 opening of %s with Host %s: %d, want %d", name, tc.path, tc.host, got, tc.want)
			}
			want := tc.want
			if want == http.StatusSwitchingProtocols {
				want = http.StatusOK // an accepted extended CONNECT
			}
			if got := h2Opening(t, addr, tc.host, tc.path); got != want {
				t.Errorf("%s: HTTP/2 opening of %s with Host %s: %d, want %d", name, tc.path, tc.host, got, want)
			}
		}
		ws := wsDial(t, "ws://"+addr+"/echo")
		if _, got := wsRoundTrip(t, ws, 1, "hi"); got != "echo:hi" {
			t.Errorf("%s: a guarded WebSocket echoes %q", name, got)
		}
		ws.CloseNow()
	}
}

// h1Opening sends a WebSocket opening over HTTP/1.1 and returns the
// status of the answer.
func h1Opening(t *testing.T, addr, host, path string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path, host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// h2Opening sends a WebSocket extended CONNECT over cleartext HTTP/2 and
// returns the status of the answer.
func h2Opening(t *testing.T, addr, host, path string) int {
	t.Helper()
	transport := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, a string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer transport.CloseIdleConnections()
	in, out := io.Pipe()
	defer out.Close()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Scheme: "http", Host: addr, Path: path}, Host: host, Header: http.Header{}, Body: in}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := transport.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("extended CONNECT to %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
