package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// hearthIOConfig serves the echo app over HTTPS and, over plain HTTP, a
// WebSocket app and static files from files, with the global servers
// option given.
const hearthIOConfig = `{
	admin {ADMIN}
	skip_install_trust
	auto_https disable_redirects
%s
}
https://localhost:%d {
	bind 127.0.0.1
	tls internal
	handle /big {
		wsgi bigpage:application {
			dir {APPS}
			python {PYTHON}
			workers 1
		}
	}
	wsgi echo:application {
		dir {APPS}
		python {PYTHON}
		workers 2
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	handle_path /static/* {
		root * %s
		file_server
	}
	asgi ws_app:app {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
`

const hearthIOServers = `	servers {
		listener_wrappers {
			hearth_io
			tls
		}
	}`

// Caddy's client connections read and written through hearth_io serve
// everything they served before: HTTP/1.1 and HTTP/2 over TLS, request
// bodies and answers larger than a socket's buffer both ways, many streams
// at once on one connection, a WebSocket (a hijacked connection), a file
// sent whole (sendfile, which does not go through hearth_io).
func TestConnectionsThroughHearthIO(t *testing.T) {
	t.Parallel()
	secure, plain := freePort(t), freePort(t)
	files := t.TempDir()
	big := bytes.Repeat([]byte("hearth_io!"), 600_000) // 6 MB
	writeFile(t, filepath.Join(files, "big.bin"), string(big))
	config := func(servers string) string { return fmt.Sprintf(hearthIOConfig, servers, secure, plain, files) }
	c := startCaddy(t, config(hearthIOServers))
	sum := sha256.Sum256(big)
	want := hex.EncodeToString(sum[:])

	post := func(client *http.Client, proto int) {
		t.Helper()
		resp, err := client.Post(fmt.Sprintf("https://localhost:%d/upload", secure), "application/octet-stream", bytes.NewReader(big))
		if err != nil {
			t.Fatalf("POST of 6 MB over HTTP/%d: %v", proto, err)
		}
		defer resp.Body.Close()
		var echo struct {
			Size   int    `json:"body_size"`
			SHA256 string `json:"body_sha256"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&echo); err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST over HTTP/%d: %d %v", proto, resp.StatusCode, err)
		}
		if resp.ProtoMajor != proto {
			t.Fatalf("the answer came over HTTP/%d, want HTTP/%d", resp.ProtoMajor, proto)
		}
		if echo.Size != len(big) || echo.SHA256 != want {
			t.Fatalf("over HTTP/%d the app read %d bytes (sha256 %s), want %d (%s)", proto, echo.Size, echo.SHA256, len(big), want)
		}
	}
	insecure := &tls.Config{InsecureSkipVerify: true} // tls internal's root is not installed (skip_install_trust)
	h1 := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: insecure, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	h2 := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: insecure, ForceAttemptHTTP2: true}}
	defer h1.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	// tls internal issues the certificate as Caddy starts: wait for it
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := h1.Get(fmt.Sprintf("https://localhost:%d/", secure))
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTPS answer within 30 s: %v", err)
		}
	}
	for range 2 { // the second on the kept-alive connection
		post(h1, 1)
		post(h2, 2)
	}
	for proto, client := range map[int]*http.Client{1: h1, 2: h2} { // 4 MiB answers over TLS
		resp, err := client.Get(fmt.Sprintf("https://localhost:%d/big?kib=4096", secure))
		if err != nil {
			t.Fatalf("GET of 4 MiB over HTTP/%d: %v", proto, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.ProtoMajor != proto || len(body) != 4<<20 || strings.Trim(string(body), "x") != "" {
			t.Fatalf("GET of 4 MiB over HTTP/%d: HTTP/%d, %d bytes, %v", proto, resp.ProtoMajor, len(body), err)
		}
	}
	var wg sync.WaitGroup
	for i := range 32 { // many streams at once on the one HTTP/2 connection
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := h2.Get(fmt.Sprintf("https://localhost:%d/stream/%d", secure, i))
			if err != nil {
				t.Errorf("stream %d: %v", i, err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), fmt.Sprintf(`"PATH_INFO": "/stream/%d"`, i)) {
				t.Errorf("stream %d: %d %.200s", i, resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()

	resp, err := (&http.Client{Timeout: 60 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/static/big.bin", plain))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, big) {
		t.Fatalf("the static file came as %d bytes, want the %d written", len(got), len(big))
	}

	ws := wsDial(t, fmt.Sprintf("ws://127.0.0.1:%d/echo", plain))
	ws.SetReadLimit(1 << 20)
	for _, msg := range []string{"hello", strings.Repeat("x", 300_000)} {
		if typ, got := wsRoundTrip(t, ws, websocket.MessageText, msg); typ != websocket.MessageText || got != "echo:"+msg {
			t.Fatalf("the WebSocket echoed %v %.40q, want echo:%.40q", typ, got, msg)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")

	log := c.log.String()
	for _, bad := range []string{"passes its connections through unchanged", hintSays, "panic"} {
		if strings.Contains(log, bad) {
			t.Fatalf("the log says %q:\n%s", bad, log)
		}
	}
	// both servers' listeners were wrapped (the unit tests show what a
	// wrapped connection does)
	for _, port := range []int{secure, plain} {
		if !strings.Contains(log, fmt.Sprintf(`"msg":"clients' connections read and written without entering Go's system-call state","address":"127.0.0.1:%d"`, port)) {
			t.Fatalf("no listener on port %d was wrapped by hearth_io:\n%s", port, log)
		}
	}

	// the same sites without hearth_io: an app's first request says how
	// to fix it
	if code, body := c.load(config("")); code != 200 {
		t.Fatalf("reload without hearth_io: %d %s", code, body)
	}
	// on new connections until the hint comes: just after the load, the
	// old config's socket may still take one, served by the old handler
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(c.log.String(), hintSays) && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if resp, err := fresh.Get(fmt.Sprintf("http://127.0.0.1:%d/no-such-websocket", plain)); err == nil {
			resp.Body.Close()
		}
	}
	log = c.log.String()
	i := strings.Index(log, hintSays)
	if i < 0 {
		t.Fatalf("no hint without hearth_io after a request:\n%s", log)
	}
	if line, _, _ := strings.Cut(log[i:], "\n"); !strings.Contains(line, fmt.Sprintf(`"address":"127.0.0.1:%d"`, plain)) {
		t.Fatalf("the hint does not name the site's address: %s", line)
	}
}

// hintSays is what an app's first request logs when its connection did
// not come through hearth_io.
const hintSays = "without the listener wrapper hearth_io"

// TestOneClientCannotHoldEveryConnection: through hearth_io, one client
// (an address) holds at most max_connections_per_client connections open
// at once (1024 by default); the ones past it are closed as soon as they
// are accepted, a warning says so, and another client is served. An idle
// connection costs Caddy ~24 KiB: before, one address could open tens of
// thousands (its ports' worth) and hold a small board's memory.
func TestOneClientCannotHoldEveryConnection(t *testing.T) {
	t.Parallel()
	// loopback counted, as the test's clients are; the total bound above
	// the default per-client one on any machine (on a small one, the
	// default is less than 1024)
	c, addr := boundedSite(t, "count_loopback\n\t\t\t\tmax_connections 65536")
	const attempts = 1100
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 10 * time.Second}
	for i := range attempts {
		conn, err := dialer.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, conn)
	}
	waitFor(t, 30*time.Second, "the warning naming the client and max_connections_per_client", func() bool {
		return warned(c, "client 127.0.0.3 already holds 1024 connections open to this Caddy, its max_connections_per_client")
	})
	// which are still open: a read of a closed one ends at once, an open
	// one waits (Caddy waits a minute for a request's head)
	var closed atomic.Int32
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := closed.Load(); n != attempts-1024 {
		t.Errorf("%d of one client's %d connections were closed at once, want the %d past 1024", n, attempts, attempts-1024)
	}
	if got := scrape(t, c)[`hearth_refused_connections_total{reason="client"}`]; got != attempts-1024 {
		t.Errorf("hearth_refused_connections_total{reason=\"client\"} = %v, want %d", got, attempts-1024)
	}
	// another client is served
	resp, err := clientFrom("127.0.0.2").Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("another client beside them: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("another client beside them: %d", resp.StatusCode)
	}
	if resp, err := clientFrom("127.0.0.3").Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("one more request of the client holding 1024 connections was served: %d", resp.StatusCode)
	}
	// and the client's connections, once closed, give their places back
	for _, conn := range conns {
		conn.Close()
	}
	conns = nil
	waitFor(t, 30*time.Second, "the client served again once its connections closed", func() bool { return servedFrom(addr, "127.0.0.3") })
}

// TestConnectionCountsGoBackOnEveryPath: every connection hearth_io
// counts is counted out when it ends, however it was served: HTTP/1.1 and
// HTTP/2 over TLS, a plain request, a WebSocket (a hijacked connection).
// With a bound of 2, a count that leaked on any path would shut the
// client out within a few rounds.
func TestConnectionCountsGoBackOnEveryPath(t *testing.T) {
	t.Parallel()
	secure, plain := freePort(t), freePort(t)
	servers := `	servers {
		listener_wrappers {
			hearth_io {
				max_connections_per_client 2
				count_loopback
			}
			tls
		}
	}`
	files := t.TempDir()
	writeFile(t, filepath.Join(files, "a.txt"), "a")
	startCaddy(t, fmt.Sprintf(hearthIOConfig, servers, secure, plain, files))
	fresh := func(proto int) *http.Client {
		// (a config of its own: HTTP/2's transport adds h2 to the one it has)
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true, ForceAttemptHTTP2: proto == 2}
		if proto == 1 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: tr}
	}
	get := func(client *http.Client, url string) error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		client.CloseIdleConnections()
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return err
	}
	paths := []struct {
		name string
		do   func() error
	}{
		{"HTTP/1.1 over TLS", func() error { return get(fresh(1), fmt.Sprintf("https://localhost:%d/", secure)) }},
		{"HTTP/2 over TLS", func() error { return get(fresh(2), fmt.Sprintf("https://localhost:%d/", secure)) }},
		{"plain HTTP/1.1", func() error { return get(fresh(1), fmt.Sprintf("http://127.0.0.1:%d/static/a.txt", plain)) }},
		{"a WebSocket", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/echo", plain), nil)
			if err != nil {
				return err
			}
			if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
				return err
			}
			if _, _, err := ws.Read(ctx); err != nil {
				return err
			}
			return ws.Close(websocket.StatusNormalClosure, "")
		}},
	}
	for round := range 5 {
		for _, path := range paths {
			// the server counts a connection out once it has seen it
			// end, a moment after the client closed it: retried a while
			var err error
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				if err = path.do(); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				t.Fatalf("round %d, %s: %v (a connection counted on an earlier path was never counted out?)", round+1, path.name, err)
			}
		}
	}
}

// TestConnectionsFromManyAddressesAreBounded: past max_connections (all
// clients together; loopback counted, as the clients of a tunnel) a
// connection is reset as soon as it is accepted, whichever address it
// comes from, counted under reason total, with a warning; once some close,
// clients are served again. Without it, connections from many addresses
// (a /56 of IPv6 holds 256 clients of 1024 each) could take the machine's
// memory.
func TestConnectionsFromManyAddressesAreBounded(t *testing.T) {
	t.Parallel()
	c, addr := boundedSite(t, "max_connections 20")
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for i := range 25 { // from 25 addresses
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i+1))}, Timeout: 10 * time.Second}
		conn, err := d.Dial("tcp", addr)
		if err == nil {
			conns = append(conns, conn)
		} else if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection %d: %v", i+1, err)
		}
	}
	waitFor(t, 30*time.Second, "the warning naming max_connections", func() bool {
		return warned(c, "Caddy already holds 20 connections open, past its max_connections (20;")
	})
	if resp, err := clientFrom("127.0.0.2").Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("a request past max_connections was served: %d", resp.StatusCode)
	}
	if got := scrape(t, c)[`hearth_refused_connections_total{reason="total"}`]; got < 5 {
		t.Errorf("hearth_refused_connections_total{reason=\"total\"} = %v, want at least 5", got)
	}
	for _, conn := range conns {
		conn.Close()
	}
	conns = nil
	waitFor(t, 30*time.Second, "a client served once the connections closed", func() bool { return servedFrom(addr, "127.0.0.2") })
}

// boundedSite starts Caddy serving the echo app on 127.0.0.1 through
// hearth_io with options (the lines of its block), waiting 5 minutes for a
// request's head (the connections the tests hold send none, for longer
// than a test runs); it returns Caddy and the site's host:port.
func boundedSite(t *testing.T, options string) (*caddyProc, string) {
	t.Helper()
	port := freePort(t)
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	servers {
		timeouts {
			read_header 5m
		}
		listener_wrappers {
			hearth_io {
				%s
			}
			tls
		}
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi echo:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
`, options, port))
	return c, fmt.Sprintf("127.0.0.1:%d", port)
}

// servedFrom reports whether a request to addr from the address from gets
// its 200.
func servedFrom(addr, from string) bool {
	resp, err := clientFrom(from).Get("http://" + addr + "/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}
