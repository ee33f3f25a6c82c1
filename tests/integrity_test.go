package tests

import (
	"context"
	"crypto/tls"
	"encoding/json"
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
