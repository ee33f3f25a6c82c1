package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/protocol"
)

// The channel to a worker carries exactly what Caddy parsed: these tests
// drive the Go encoder and the real Python runtime (the embedded
// hearth_worker.py, in /usr/bin/python3) with requests and responses full
// of arbitrary bytes, and check that nothing can add, drop or override an
// environ key, a scope field or a response header.

// testPython is the interpreter the runtime tests use.
func testPython() string {
	if p := os.Getenv("HEARTH_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

// runtimeProc is the embedded runtime serving an app from source, over
// one channel, as a pool starts it.
type runtimeProc struct {
	conn   net.Conn
	frames *protocol.Reader
	cmd    *exec.Cmd
	stderr *lockedBytes
}

type lockedBytes struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBytes) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBytes) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startRuntime(t *testing.T, kind, source string) *runtimeProc {
	t.Helper()
	if _, err := os.Stat(testPython()); err != nil {
		t.Skipf("no Python at %s", testPython())
	}
	dir := t.TempDir()
	runtime, err := installRuntime(filepath.Join(dir, "runtime"), 0o755, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "testapp.py"), []byte(source), 0o644); err != nil {
		t.Fatal(err)
	}
	conn, peer, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testPython(), runtime)
	cmd.Dir = dir
	cmd.Env = []string{"HEARTH_APP=testapp:application", "HEARTH_FDS=3", "HEARTH_DIR=" + dir, "HEARTH_KIND=" + kind, "PATH=/usr/bin:/bin"}
	cmd.ExtraFiles = []*os.File{peer}
	rp := &runtimeProc{conn: conn, frames: protocol.NewReader(conn), cmd: cmd, stderr: &lockedBytes{}}
	cmd.Stderr = rp.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	t.Cleanup(func() {
		conn.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	h, payload, err := rp.frames.Next()
	if err != nil || h.Type != protocol.Hello {
		t.Fatalf("runtime did not say hello: %v %v %s\n%s", h.Type, err, payload, rp.stderr)
	}
	return rp
}

// exchange sends one request's frames and returns the response head
// payload and body.
func (rp *runtimeProc) exchange(t *testing.T, frames []byte, sid uint32) ([]byte, []byte) {
	t.Helper()
	_ = rp.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := rp.conn.Write(frames); err != nil {
		t.Fatalf("sending to the runtime: %v\n%s", err, rp.stderr)
	}
	h, payload, err := rp.frames.Next()
	if err != nil || h.Type != protocol.ResponseHead || h.Stream != sid {
		t.Fatalf("response head: %v %v (stream %d, want %d)\n%s", h.Type, err, h.Stream, sid, rp.stderr)
	}
	head := slices.Clone(payload)
	var body []byte
	for {
		h, payload, err := rp.frames.Next()
		if err != nil || h.Stream != sid {
			t.Fatalf("response body: %v %v\n%s", h.Type, err, rp.stderr)
		}
		if h.Type == protocol.Abort {
			t.Fatalf("the app aborted: %s\n%s", payload, rp.stderr)
		}
		body = append(body, payload...)
		if h.End() {
			return head, body
		}
	}
}

// fuzzRequest builds a request as Caddy could hand it to the handler,
// with arbitrary bytes where a client chooses them: the decoded path,
// the query, header names and values. The connection's facts are fixed.
func fuzzRequest(rng *rand.Rand) *http.Request {
	dirty := rng.IntN(3) == 0 // a third of the requests may hold NULs
	randomBytes := func(rng *rand.Rand, n int) string {
		b := randomBytes(rng, n)
		if !dirty {
			b = strings.ReplaceAll(b, "\x00", "\x01")
		}
		return b
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "site.example:2929"
	r.RemoteAddr = "203.0.113.7:4567"
	r.URL.Path = "/" + randomBytes(rng, 24)
	r.URL.RawQuery = randomBytes(rng, 24)
	r.RequestURI = "/" + randomBytes(rng, 24)
	r.Header = http.Header{}
	for range rng.IntN(6) {
		name := http.CanonicalHeaderKey(randomToken(rng))
		r.Header[name] = append(r.Header[name], randomBytes(rng, 16))
	}
	// names a forger would like, with values of its choice
	for _, name := range []string{"Remote-User", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded", "Forwarded", "X-Real-Ip", "X-Scheme", "Cf-Connecting-Ip", "Client-Ip", "Cookie", "Host"} {
		if rng.IntN(2) == 0 {
			r.Header[name] = []string{randomBytes(rng, 16)}
		}
	}
	if rng.IntN(2) == 0 {
		r.TLS = &tls.ConnectionState{}
	}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2929}
	return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
}

// randomBytes is up to n bytes, any of 0–255, weighted towards the ones
// that frame or end things (NUL, CR, LF, '=', '&', '%', ';', ',').
func randomBytes(rng *rand.Rand, n int) string {
	special := []byte{0, 0, '\r', '\n', '=', '&', '%', ';', ',', ' ', '\t', 0x7f, 0xff, 'R', '_'}
	b := make([]byte, rng.IntN(n+1))
	for i := range b {
		if rng.IntN(3) == 0 {
			b[i] = special[rng.IntN(len(special))]
		} else {
			b[i] = byte(rng.IntN(256))
		}
	}
	return string(b)
}

// printable replaces the control characters of s (but tab) with '?'.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

func randomToken(rng *rand.Rand) string {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~"
	b := make([]byte, 1+rng.IntN(12))
	for i := range b {
		b[i] = chars[rng.IntN(len(chars))]
	}
	return string(b)
}

// latin1 is what the runtime makes of bytes: each byte one character.
func latin1(s string) string {
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}

// passedOn reports whether a header reaches the app: not one whose name
// holds "_", nor Host, nor one a proxy sets about the request unless the
// request came from a trusted proxy.
func passedOn(name string, trusted bool) bool {
	proxies := strings.HasPrefix(name, "X-Forwarded") || slices.Contains([]string{"Forwarded", "X-Real-Ip", "X-Client-Ip",
		"True-Client-Ip", "Cf-Connecting-Ip", "X-Cluster-Client-Ip", "Fastly-Client-Ip", "X-Scheme", "X-Url-Scheme",
		"Front-End-Https", "X-Original-Host", "X-Host", "Client-Ip", "Forwarded-For", "Via", "X-Script-Name",
		"X-Original-Forwarded-For"}, name)
	return !strings.Contains(name, "_") && name != "Host" && (trusted || !proxies)
}

// wantEnviron is the environ a request must produce, keyed as the app
// sees it, computed from the request alone (not from the encoder); trusted
// says it came from a trusted proxy.
func wantEnviron(r *http.Request, trusted bool) map[string]string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	want := map[string]string{
		"REQUEST_METHOD": "GET", "PATH_INFO": latin1(r.URL.Path), "QUERY_STRING": latin1(r.URL.RawQuery),
		"REQUEST_URI": latin1(r.RequestURI), "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": scheme,
		"SERVER_NAME": "site.example", "SERVER_PORT": "2929", "REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "4567",
		"HTTP_HOST": "site.example:2929", "SCRIPT_NAME": "",
	}
	for name, values := range r.Header {
		if !passedOn(name, trusted) {
			continue
		}
		key := "HTTP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if name == "Content-Type" {
			key = "CONTENT_TYPE"
		}
		sep := ", "
		if name == "Cookie" {
			sep = "; "
		}
		want[key] = latin1(strings.Join(values, sep))
	}
	return want
}

// hasNUL reports whether any client-chosen field of r holds a NUL.
func hasNUL(r *http.Request, trusted bool) bool {
	s := r.URL.Path + r.URL.RawQuery + r.RequestURI
	for name, values := range r.Header {
		if !passedOn(name, trusted) {
			continue
		}
		s += name + strings.Join(values, "")
	}
	return strings.IndexByte(s, 0) >= 0
}

const echoEnvironApp = `
import json
def application(environ, start_response):
    body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [body]
`

const echoScopeApp = `
import json
async def application(scope, receive, send):
    if scope['type'] != 'http':
        return
    await receive()
    out = {k: scope[k] for k in ('client', 'server', 'scheme', 'root_path', 'method', 'path', 'query_string', 'http_version')}
    out['query_string'] = out['query_string'].decode('latin-1')
    out['headers'] = [[k.decode('latin-1'), v.decode('latin-1')] for k, v in scope['headers']]
    body = json.dumps(out).encode()
    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'application/json')]})
    await send({'type': 'http.response.body', 'body': body})
`

// TestRequestHeadIntegrity: across requests with arbitrary bytes where
// the client chooses them, a request either is refused with 400 (it holds
// a NUL, which NUL-separated fields cannot carry) or the app's environ
// has exactly the keys the request determines, with the values the
// connection and the request determine.
func TestRequestHeadIntegrity(t *testing.T) {
	rp := startRuntime(t, "wsgi", echoEnvironApp)
	rng := rand.New(rand.NewPCG(13, 1))
	refused, served := 0, 0
	for i := range 600 {
		r := fuzzRequest(rng)
		sid := uint32(i + 1)
		trusted := i%2 == 1 // half as from a trusted proxy
		head, err := appendRequestHead(make([]byte, protocol.HeaderSize), r, &Request{FromTrustedProxy: trusted})
		if hasNUL(r, trusted) {
			if FailureOf(err) != Refused {
				t.Fatalf("request %d holds a NUL and was not refused (a 400): %v", i, err)
			}
			refused++
			continue
		}
		if err != nil {
			t.Fatalf("request %d refused: %v", i, err)
		}
		protocol.PutHeader(head, protocol.Header{Length: uint32(len(head) - protocol.HeaderSize), Type: protocol.RequestHead, Flags: protocol.FlagEnd, Stream: sid})
		_, body := rp.exchange(t, head, sid)
		var got map[string]string
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("request %d: %v: %s", i, err, body)
		}
		for k := range got {
			if strings.HasPrefix(k, "wsgi.") && k != "wsgi.url_scheme" {
				delete(got, k) // the runtime's own
			}
		}
		want := wantEnviron(r, trusted)
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("request %d: environ %s = %q, want %q", i, k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Fatalf("request %d: the app got an environ key the request should not make: %q = %q", i, k, got[k])
			}
		}
		served++
	}
	if refused < 50 || served < 50 {
		t.Fatalf("the generator made %d refused and %d served requests; want both common", refused, served)
	}
}

// TestRequestScopeIntegrity is the same property for an ASGI app's
// scope: client, server, scheme, root_path and headers are what the
// connection and the request determine.
func TestRequestScopeIntegrity(t *testing.T) {
	rp := startRuntime(t, "asgi", echoScopeApp)
	rng := rand.New(rand.NewPCG(13, 2))
	served := 0
	for i := range 400 {
		r := fuzzRequest(rng)
		sid := uint32(i + 1)
		trusted := i%2 == 1
		head, err := appendRequestHead(make([]byte, protocol.HeaderSize), r, &Request{FromTrustedProxy: trusted})
		if err != nil {
			if !hasNUL(r, trusted) {
				t.Fatalf("request %d refused: %v", i, err)
			}
			continue
		}
		protocol.PutHeader(head, protocol.Header{Length: uint32(len(head) - protocol.HeaderSize), Type: protocol.RequestHead, Flags: protocol.FlagEnd, Stream: sid})
		_, body := rp.exchange(t, head, sid)
		var got struct {
			Client   []any      `json:"client"`
			Server   []any      `json:"server"`
			Scheme   string     `json:"scheme"`
			RootPath string     `json:"root_path"`
			Method   string     `json:"method"`
			Query    string     `json:"query_string"`
			Headers  [][]string `json:"headers"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("request %d: %v: %s", i, err, body)
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if fmt.Sprint(got.Client) != "[203.0.113.7 4567]" || fmt.Sprint(got.Server) != "[site.example 2929]" ||
			got.Scheme != scheme || got.RootPath != "" || got.Method != "GET" || got.Query != latin1(r.URL.RawQuery) {
			t.Fatalf("request %d: scope %+v", i, got)
		}
		want := map[string]string{}
		for k, v := range wantEnviron(r, trusted) {
			if name, ok := strings.CutPrefix(k, "HTTP_"); ok {
				want[strings.ToLower(strings.ReplaceAll(name, "_", "-"))] = v
			} else if k == "CONTENT_TYPE" {
				want["content-type"] = v
			}
		}
		if len(got.Headers) != len(want) {
			t.Fatalf("request %d: headers %q, want %q", i, got.Headers, want)
		}
		for _, kv := range got.Headers {
			if want[kv[0]] != kv[1] {
				t.Fatalf("request %d: header %q = %q, want %q", i, kv[0], kv[1], want[kv[0]])
			}
		}
		served++
	}
	if served < 50 {
		t.Fatalf("only %d requests served", served)
	}
}

// reflectApp sets the status and headers its request body asks for (as
// JSON), as an app that reflects input into a header does.
const reflectApp = `
import json
def application(environ, start_response):
    spec = json.loads(environ['wsgi.input'].read())
    start_response(spec['status'], [tuple(h) for h in spec['headers']])
    return [b'body']
`

const reflectAsgiApp = `
import json
async def application(scope, receive, send):
    if scope['type'] != 'http':
        return
    spec = json.loads((await receive())['body'])
    await send({'type': 'http.response.start', 'status': int(spec['status'][:3]),
                'headers': [(n.encode('latin-1'), v.encode('latin-1')) for n, v in spec['headers']]})
    await send({'type': 'http.response.body', 'body': b'body'})
`

// TestResponseHeadIntegrity: whatever status and headers an app sets,
// the headers Caddy would send are exactly the ones it set, or the
// response is refused (a 500 from the runtime, or parseResponseHead's
// error); the worker keeps serving either way, and the log names the
// header but never shows its value.
func TestResponseHeadIntegrity(t *testing.T) {
	for _, tc := range []struct{ kind, app string }{{"wsgi", reflectApp}, {"asgi", reflectAsgiApp}} {
		t.Run(tc.kind, func(t *testing.T) {
			rp := startRuntime(t, tc.kind, tc.app)
			rng := rand.New(rand.NewPCG(13, 3))
			refused, passed := 0, 0
			for i := range 400 {
				type pair = [2]string
				var set []pair
				for range 1 + rng.IntN(4) {
					name, value := randomToken(rng), "v"+printable(randomBytes(rng, 12))
					if rng.IntN(8) == 0 {
						name += randomBytes(rng, 3)
					}
					if rng.IntN(8) == 0 {
						value += randomBytes(rng, 3)
					}
					if rng.IntN(8) == 0 { // the attack: a value that carries a header
						value = "a\x00Set-Cookie\x00sessionid=SECRETVALUE"
						if rng.IntN(2) == 0 {
							value = "a\r\nSet-Cookie: sessionid=SECRETVALUE"
						}
					}
					set = append(set, pair{name, value})
				}
				status := "200 OK"
				if rng.IntN(8) == 0 {
					status = "200 OK" + randomBytes(rng, 6)
				}
				spec, _ := json.Marshal(map[string]any{"status": latin1(status), "headers": func() [][]string {
					out := [][]string{}
					for _, p := range set {
						out = append(out, []string{latin1(p[0]), latin1(p[1])})
					}
					return out
				}()})
				sid := uint32(i + 1)
				frames := protocol.AppendFrame(nil, protocol.RequestHead, 0, sid, []byte("REQUEST_METHOD\x00POST\x00PATH_INFO\x00/\x00"))
				frames = protocol.AppendFrame(frames, protocol.RequestBody, protocol.FlagEnd, sid, spec)
				head, body := rp.exchange(t, frames, sid)
				hdr := http.Header{}
				code, err := parseResponseHead(head, hdr)
				if err != nil || code == 500 && string(body) == "Internal Server Error\n" {
					refused++
					continue
				}
				if string(body) != "body" {
					t.Fatalf("case %d: body %q", i, body)
				}
				// every header Caddy would send is one the app set, and
				// every one the app set (but hop-by-hop ones) is there
				want := http.Header{}
				for _, p := range set {
					name := http.CanonicalHeaderKey(p[0])
					if !hopByHop[name] {
						want[name] = append(want[name], p[1])
					}
				}
				delete(hdr, "Content-Type") // nil: "no sniffing"
				delete(want, "Content-Type")
				if fmt.Sprint(hdr) != fmt.Sprint(want) {
					t.Fatalf("case %d: Caddy would send %q; the app set %q", i, hdr, want)
				}
				passed++
			}
			if refused < 50 || passed < 50 {
				t.Fatalf("%d refused, %d passed: want both common", refused, passed)
			}
			log := rp.stderr.String()
			if strings.Contains(log, "SECRETVALUE") {
				t.Errorf("the log shows a refused header's value:\n%s", log)
			}
			if !strings.Contains(log, "control character") {
				t.Errorf("the log does not say why headers were refused:\n%s", log)
			}
		})
	}
}

// FuzzRequestHead: whatever a client puts in the path, query or a
// header, the encoded head either is refused or splits (as the runtime
// splits it) into exactly the pairs the request determines.
func FuzzRequestHead(f *testing.F) {
	f.Add("/a\x00REMOTE_USER\x00admin\x00b", "x=1", "Remote-User", "v")
	f.Add("/.env\x00x", "", "X-A", "a\x00HTTP_HOST\x00evil")
	f.Add("/", "__debugger__=yes", "Cookie", "a=b")
	f.Fuzz(func(t *testing.T, path, query, name, value string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = "site.example:2929"
		r.RemoteAddr = "203.0.113.7:4567"
		r.URL.Path, r.URL.RawQuery, r.RequestURI = path, query, "/"
		r.Header = http.Header{http.CanonicalHeaderKey(name): {value}}
		head, err := appendRequestHead(nil, r, &Request{})
		if err != nil {
			if !hasNUL(r, false) {
				t.Fatalf("refused a request without a NUL: %v", err)
			}
			return
		}
		fields := strings.Split(string(head), "\x00")
		if len(fields)%2 != 1 || fields[len(fields)-1] != "" {
			t.Fatalf("%d fields", len(fields))
		}
		got := map[string]string{}
		for i := 0; i+1 < len(fields); i += 2 {
			if _, dup := got[fields[i]]; dup {
				t.Fatalf("key %q twice", fields[i])
			}
			got[fields[i]] = fields[i+1]
		}
		if got["REMOTE_ADDR"] != "203.0.113.7" || got["HTTP_HOST"] != "site.example:2929" || got["PATH_INFO"] != path && path != "" ||
			got["SERVER_NAME"] != "site.example" || got["wsgi.url_scheme"] != "http" {
			t.Fatalf("connection facts changed: %q", got)
		}
		if _, ok := got["REMOTE_USER"]; ok {
			t.Fatalf("REMOTE_USER set: %q", got)
		}
		if len(got) > 11+1 {
			t.Fatalf("%d keys from a request with one header: %q", len(got), got)
		}
	})
}

// TestOffered: the subprotocol an app accepts goes into a response
// header only when the client offered it.
func TestOffered(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header["Sec-Websocket-Protocol"] = []string{"chat.v1, echo.v1", "x"}
	for sub, want := range map[string]bool{"echo.v1": true, "chat.v1": true, "x": true, "echo": false, "echo.v1\r\nSet-Cookie: a=b": false, "chat.v1, echo.v1": false} {
		if got := offered(r, sub); got != want {
			t.Errorf("offered(%q) = %v, want %v", sub, got, want)
		}
	}
}

// TestHugeResponseHead: an app that reflects a large input into a header
// (more than a frame can carry, or more than Caddy takes of a head) gets a
// 500 from the runtime, and its worker keeps serving rather than breaking
// the channel.
func TestHugeResponseHead(t *testing.T) {
	rp := startRuntime(t, "wsgi", reflectApp)
	for i, size := range []int{protocol.MaxPayload + 1, maxResponseHeadBytes, 100} {
		spec, _ := json.Marshal(map[string]any{"status": "200 OK", "headers": [][]string{{"X-Big", strings.Repeat("x", size)}}})
		sid := uint32(i + 1)
		frames := protocol.AppendFrame(nil, protocol.RequestHead, 0, sid, []byte("REQUEST_METHOD\x00POST\x00PATH_INFO\x00/\x00"))
		frames = appendBodyFrames(frames, sid, spec)
		head, _ := rp.exchange(t, frames, sid)
		hdr := http.Header{}
		status, err := parseResponseHead(head, hdr)
		if want := map[int]int{0: 500, 1: 500, 2: 200}[i]; err != nil || status != want {
			t.Fatalf("a %d-byte header: status %d, %v; want %d", size, status, err, want)
		}
	}
	if !strings.Contains(rp.stderr.String(), "more than the 131072 a response head may have") {
		t.Errorf("the log does not say why:\n%s", rp.stderr)
	}
	// more headers than Caddy takes: the same
	many := make([][]string, maxResponseHeaders+1)
	for i := range many {
		many[i] = []string{"X-A", "v"}
	}
	spec, _ := json.Marshal(map[string]any{"status": "200 OK", "headers": many})
	frames := protocol.AppendFrame(nil, protocol.RequestHead, 0, 9, []byte("REQUEST_METHOD\x00POST\x00PATH_INFO\x00/\x00"))
	head, _ := rp.exchange(t, appendBodyFrames(frames, 9, spec), 9)
	if status, err := parseResponseHead(head, http.Header{}); err != nil || status != 500 {
		t.Errorf("%d headers: status %d, %v; want the runtime's 500", len(many), status, err)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(rp.stderr.String(), "more than the 1000 a response may have"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) { // (the runtime logs after it answered)
			t.Errorf("the log does not say why:\n%s", rp.stderr)
			break
		}
	}
}
