package tests

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
)

// integritySites serves tests/apps/integrity.py under wsgi and asgi, on
// two loopback ports speaking HTTP/1.1 and cleartext HTTP/2.
func integritySites(t *testing.T) (*caddyProc, map[string]string) {
	t.Helper()
	wsgiPort, asgiPort := freePort(t), freePort(t)
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	servers {
		protocols h1 h2c
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi integrity:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	asgi integrity:asgi {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}`, wsgiPort, asgiPort))
	return c, map[string]string{
		"wsgi": fmt.Sprintf("127.0.0.1:%d", wsgiPort),
		"asgi": fmt.Sprintf("127.0.0.1:%d", asgiPort),
	}
}

// rawGet sends GET target (as written, not re-encoded) over HTTP/1.1 or
// cleartext HTTP/2.
func rawGet(t *testing.T, proto, hostport, target string) (*http.Response, string) {
	t.Helper()
	var rt http.RoundTripper = &http.Transport{DisableKeepAlives: true}
	if proto == "h2" {
		rt = &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
	}
	u := &url.URL{Scheme: "http", Host: hostport, Opaque: target}
	if i := strings.IndexByte(target, '?'); i >= 0 {
		u.Opaque, u.RawQuery = target[:i], target[i+1:]
	}
	req := &http.Request{Method: "GET", URL: u, Host: hostport, Header: http.Header{}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("GET %s over %s: %v", target, proto, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != map[string]int{"h1": 1, "h2": 2}[proto] {
		t.Fatalf("GET %s: spoke %s, want %s", target, resp.Proto, proto)
	}
	return resp, string(body)
}

// TestRequestIntegrity: a percent-encoded NUL cannot forge what the app
// is told (REMOTE_USER, REMOTE_ADDR, the Host, the scheme): such requests
// are refused with 400 before any worker sees them, on WSGI and ASGI,
// over HTTP/1.1 and HTTP/2; paths with other odd bytes still reach the
// app exactly.
func TestRequestIntegrity(t *testing.T) {
	t.Parallel()
	c, sites := integritySites(t)
	forgeries := []string{
		"/a%00REMOTE_USER%00admin%00b",
		"/a%00REMOTE_ADDR%0010.0.0.1%00HTTP_HOST%00evil.example%00wsgi.url_scheme%00https%00SERVER_NAME%00evil.example%00b",
		"/x%00hearth.websocket%001%00y",
		"/.env%00x",
		"/ok?q=1&next=%00",
	}
	for _, kind := range []string{"wsgi", "asgi"} {
		for _, proto := range []string{"h1", "h2"} {
			for _, target := range forgeries[:4] {
				resp, _ := rawGet(t, proto, sites[kind], target)
				if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
					t.Errorf("%s %s GET %s: %d, want 400 (or the guard's 404)", kind, proto, target, resp.StatusCode)
				}
			}
			// a NUL in the raw query is not decoded by Caddy: the app gets
			// the query as sent, and decodes it itself
			resp, body := rawGet(t, proto, sites[kind], forgeries[4])
			if resp.StatusCode != 200 || !strings.Contains(body, `"q=1&next=%00"`) {
				t.Errorf("%s %s: the query with an encoded NUL: %d %s", kind, proto, resp.StatusCode, body)
			}
			// odd bytes but NUL pass through unchanged
			resp, body = rawGet(t, proto, sites[kind], "/caf%C3%A9%01%0A%FF;x")
			var got struct {
				Environ map[string]string `json:"environ"`
				Path    string            `json:"path"`
				Client  []any             `json:"client"`
				Scheme  string            `json:"scheme"`
			}
			if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &got) != nil {
				t.Fatalf("%s %s: odd path: %d %s", kind, proto, resp.StatusCode, body)
			}
			if kind == "wsgi" {
				e := got.Environ
				if e["PATH_INFO"] != "/caf\u00c3\u00a9\x01\n\u00ff;x" || e["REMOTE_ADDR"] != "127.0.0.1" || e["wsgi.url_scheme"] != "http" || e["REMOTE_USER"] != "" {
					t.Errorf("%s %s: environ %q", kind, proto, e)
				}
			} else if got.Path != "/café\x01\n\ufffd;x" || fmt.Sprint(got.Client[0]) != "127.0.0.1" || got.Scheme != "http" {
				t.Errorf("%s %s: scope path %q client %v scheme %s", kind, proto, got.Path, got.Client, got.Scheme)
			}
		}
	}
	if log := c.log.String(); strings.Contains(log, `saw '/a\x00`) || strings.Contains(log, `saw '/.env`) || strings.Contains(log, `\x00REMOTE_ADDR`) || strings.Contains(log, `saw '/x\x00`) {
		t.Errorf("an app saw a forged request:\n%s", tail(log, 30))
	}
}

// TestResponseIntegrity: an app that reflects input into a header value
// cannot be made to send a header of the client's choosing (NUL, CR, LF
// or another control character): the client gets a plain 500, the log
// names the header and the reason without the value, and the worker
// keeps serving.
func TestResponseIntegrity(t *testing.T) {
	t.Parallel()
	c, sites := integritySites(t)
	for _, kind := range []string{"wsgi", "asgi"} {
		for _, proto := range []string{"h1", "h2"} {
			_, before := rawGet(t, proto, sites[kind], "/pid")
			for _, name := range []string{"a%00Set-Cookie%00sessionid=FIXATED", "a%0D%0ASet-Cookie:%20sessionid=FIXATED",
				"a%0ASet-Cookie:%20sessionid=FIXATED", "a%0BFIXATED", "a%7FFIXATED"} {
				resp, body := rawGet(t, proto, sites[kind], "/reflect?name="+name)
				if resp.StatusCode != 500 || resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Content-Disposition") != "" || strings.Contains(body, "FIXATED") {
					t.Errorf("%s %s: reflecting %s: %d %q %q", kind, proto, name, resp.StatusCode, resp.Header, body)
				}
			}
			resp, _ := rawGet(t, proto, sites[kind], "/reflect?name=report%09v2.pdf")
			if resp.StatusCode != 200 || resp.Header.Get("Content-Disposition") != "attachment; filename=\"report\tv2.pdf\"" {
				t.Errorf("%s %s: a tab in a value is allowed: %d %q", kind, proto, resp.StatusCode, resp.Header)
			}
			var a, b struct {
				PID int `json:"pid"`
			}
			_, after := rawGet(t, proto, sites[kind], "/pid")
			if json.Unmarshal([]byte(before), &a) != nil || json.Unmarshal([]byte(after), &b) != nil || a.PID == 0 || a.PID != b.PID {
				t.Errorf("%s %s: the worker changed (%s → %s): refused headers must not cost a worker", kind, proto, before, after)
			}
		}
	}
	log := c.log.String()
	if strings.Contains(log, "FIXATED") {
		t.Errorf("the log shows a refused header's value:\n%s", tail(log, 30))
	}
	if !strings.Contains(log, "Content-Disposition") && !strings.Contains(log, "content-disposition") || !strings.Contains(log, "control character") {
		t.Errorf("the log does not name the header and the reason:\n%s", tail(log, 30))
	}
}

// TestPushyAppsAreStopped: an ASGI app whose answer Caddy refuses (a
// header name HTTP does not allow; a WebSocket subprotocol the client did
// not offer) while it keeps sending is told the client is gone, so it
// stops and its channel serves again: with one channel in all, the next
// request is answered at once rather than after the app's timeout.
func TestPushyAppsAreStopped(t *testing.T) {
	t.Parallel()
	config, base := asgiSite(t, "asgi_pushy:app", "workers 1\n\t\tmax_concurrency 1\n\t\ttimeout 60s")
	startCaddy(t, config)
	addr := strings.TrimPrefix(base, "http://")
	client := &http.Client{Timeout: 10 * time.Second}
	for _, attempt := range []func() int{
		func() int {
			resp, err := client.Get(base + "/bad-header-stream")
			if err != nil {
				t.Fatalf("the refused stream: %v", err)
			}
			resp.Body.Close()
			return resp.StatusCode
		},
		func() int { return h1Opening(t, addr, addr, "/bogus") },
	} {
		if status := attempt(); status != 500 {
			t.Errorf("a refused answer: %d, want 500", status)
		}
		resp, err := client.Get(base + "/ok")
		if err != nil {
			t.Fatalf("the next request waited for the pushy app: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok ") {
			t.Errorf("the next request: %d %q", resp.StatusCode, body)
		}
	}
}

// TestScriptNameIsAMountPoint: SCRIPT_NAME is only ever a prefix the
// config strips (handle_path), never what a client wrote before a path
// another rewrite produced.
func TestScriptNameIsAMountPoint(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	handle_path /mounted/* {
		wsgi integrity:application {
			dir {APPS}
			python {PYTHON}
			workers 1
		}
	}
	handle {
		rewrite /legacy/* /landing
		wsgi integrity:application {
			dir {APPS}
			python {PYTHON}
			workers 1
		}
	}
}`, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for target, want := range map[string]string{
		"/mounted/x":                         "/mounted",
		"/legacy/%2F%2Fevil.example/landing": "",
		"/legacy/anything":                   "",
	} {
		resp, body := rawGet(t, "h1", addr, target)
		var got struct {
			Environ map[string]string `json:"environ"`
		}
		if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &got) != nil {
			t.Fatalf("%s: %d %s", target, resp.StatusCode, body)
		}
		if got.Environ["SCRIPT_NAME"] != want {
			t.Errorf("%s: SCRIPT_NAME %q, want %q", target, got.Environ["SCRIPT_NAME"], want)
		}
	}
}

// TestUnixSocketServerPort: on a site bound to a unix socket, SERVER_PORT
// is the scheme's default, never the port a client writes in Host (which
// may not be a number at all).
func TestUnixSocketServerPort(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "site.sock")
	startCaddy(t, fmt.Sprintf(`
http:// {
	bind unix/%s
	asgi asgi_pushy:app {
		dir {APPS}
		python {PYTHON}
		workers 1
		timeout 60s
	}
}`, sock))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for _, host := range []string{"x:abc", "x:99999999999999999999", "x"} {
		req, _ := http.NewRequest("GET", "http://x/ok", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("Host %s: %v", host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok 80 " {
			t.Errorf("Host %s: %d %q, want 200 \"ok 80 \"", host, resp.StatusCode, body)
		}
	}
}

// TestAbsoluteFormTarget: a request target in absolute form
// ("GET http://host/path") reaches the app as a path, like any other:
// REQUEST_URI (and the ASGI raw_path made from it) never holds a scheme
// and host the client chose.
func TestAbsoluteFormTarget(t *testing.T) {
	t.Parallel()
	_, sites := integritySites(t)
	addr := sites["wsgi"]
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET http://%s/admin/x?a=1 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	var got struct {
		Environ map[string]string `json:"environ"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got.Environ["REQUEST_URI"] != "/admin/x?a=1" || got.Environ["PATH_INFO"] != "/admin/x" {
		t.Errorf("REQUEST_URI %q PATH_INFO %q, want /admin/x?a=1 and /admin/x", got.Environ["REQUEST_URI"], got.Environ["PATH_INFO"])
	}
}

// TestProxyHeadersFromClients: a client's X-Forwarded-Host, -Proto and
// -For do not reach the app (an app told to believe them, here Flask with
// ProxyFix, would put the client's host in a password-reset link it
// mails, and take its word for its address); from a proxy in Caddy's
// trusted_proxies they do, as before.
func TestProxyHeadersFromClients(t *testing.T) {
	t.Parallel()
	plain, trusting, plainWS, trustingWS := freePort(t), freePort(t), freePort(t), freePort(t)
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	servers 127.0.0.1:%[2]d {
		trusted_proxies static 127.0.0.1/32
	}
	servers 127.0.0.1:%[4]d {
		trusted_proxies static 127.0.0.1/32
	}
}
http://127.0.0.1:%[1]d {
	bind 127.0.0.1
	wsgi proxyfix:app {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
http://127.0.0.1:%[2]d {
	bind 127.0.0.1
	wsgi proxyfix:app {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
http://127.0.0.1:%[3]d {
	bind 127.0.0.1
	asgi ws_app:app {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
http://127.0.0.1:%[4]d {
	bind 127.0.0.1
	asgi ws_app:app {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}`, plain, trusting, plainWS, trustingWS))
	proxyHeaders := http.Header{}
	proxyHeaders.Set("X-Forwarded-Host", "evil.example")
	proxyHeaders.Set("X-Forwarded-Proto", "https")
	proxyHeaders.Set("X-Forwarded-For", "10.9.9.9")
	proxyHeaders.Set("X-Forwarded-Prefix", "/evil")
	proxyHeaders.Set("Forwarded", "host=evil.example;proto=https")
	proxyHeaders.Set("X-Real-IP", "10.9.9.9")
	for _, tc := range []struct {
		port               int
		link, remote, seen string
	}{
		{plain, fmt.Sprintf("http://127.0.0.1:%d/reset?token=TOKEN", plain), "127.0.0.1", "[]"},
		{trusting, "https://evil.example/reset?token=TOKEN", "10.9.9.9", "[HTTP_FORWARDED HTTP_X_FORWARDED_FOR HTTP_X_FORWARDED_HOST HTTP_X_FORWARDED_PREFIX HTTP_X_FORWARDED_PROTO HTTP_X_REAL_IP]"},
	} {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/reset", tc.port), nil)
		req.Header = proxyHeaders.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Link         string   `json:"link"`
			RemoteAddr   string   `json:"remote_addr"`
			ProxyHeaders []string `json:"proxy_headers"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("port %d: %d %v\n%s", tc.port, resp.StatusCode, err, tail(c.log.String(), 20))
		}
		if got.Link != tc.link || got.RemoteAddr != tc.remote || fmt.Sprint(got.ProxyHeaders) != tc.seen {
			t.Errorf("port %d: the app made %q for %s and saw %v; want %q for %s and %s", tc.port, got.Link, got.RemoteAddr, got.ProxyHeaders, tc.link, tc.remote, tc.seen)
		}
	}
	// WebSocket openings follow the same rule
	for port, want := range map[int]string{plainWS: "", trustingWS: "forwarded x-forwarded-for x-forwarded-host x-forwarded-prefix x-forwarded-proto x-real-ip"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		ws, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/proxy-headers", port), &websocket.DialOptions{HTTPHeader: proxyHeaders.Clone()})
		if err != nil {
			cancel()
			t.Fatalf("WebSocket to port %d: %v\n%s", port, err, tail(c.log.String(), 20))
		}
		_, msg, err := ws.Read(ctx)
		ws.CloseNow()
		cancel()
		if err != nil || string(msg) != want {
			t.Errorf("WebSocket opening on port %d: the app saw %q (%v), want %q", port, msg, err, want)
		}
	}
}
