package tests

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// guardSite serves app (from tests/apps) with the site-level `guard {
// options }` directive before it, or, when options is "-", with the wsgi
// block's own guard (mode wsgiGuard) alone.
func guardSite(t *testing.T, app, wsgiGuard, options string) string {
	port := freePort(t)
	siteGuard := "guard {\n" + options + "\n\t}"
	if options == "-" {
		siteGuard = ""
	}
	// a site without a host name, so that any Host reaches the guard
	startCaddy(t, fmt.Sprintf(`
http://:%d {
	bind 127.0.0.1
	%s
	wsgi %s {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard %s
	}
}`, port, siteGuard, app, wsgiGuard))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

func fetchHost(t *testing.T, url string, host string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestGuardHidesDjangoDebugPages(t *testing.T) {
	t.Parallel()
	// without the guard, Django's DEBUG pages leak: the test app is right
	bare := guardSite(t, "djdebug:application", "off", "-")
	if resp, body := fetchHost(t, bare+"/boom", ""); resp.StatusCode != 500 || !strings.Contains(body, "hunter2") {
		t.Fatalf("the unguarded DEBUG app did not leak its traceback (%d), so this test proves nothing", resp.StatusCode)
	}
	if _, body := fetchHost(t, bare+"/nowhere", ""); !strings.Contains(body, "Using the URLconf defined in") {
		t.Fatalf("the unguarded DEBUG app did not show its technical 404")
	}
	// the wsgi block's guard in warn mode: DEBUG is reported, the app
	// starts, and its debug pages never reach the client
	url := guardSite(t, "djdebug:application", "warn", "-")
	resp, body := fetchHost(t, url+"/boom", "")
	if resp.StatusCode != 500 || strings.Contains(body, "hunter2") || strings.Contains(body, "Traceback") || strings.Contains(body, "Django") {
		t.Errorf("guarded debug 500: %d %q", resp.StatusCode, truncateString(body, 200))
	}
	// a client error keeps its status, without the page
	resp, body = fetchHost(t, url+"/nowhere", "")
	if resp.StatusCode != 404 || body != "Not Found\n" {
		t.Errorf("guarded technical 404: %d %q", resp.StatusCode, truncateString(body, 200))
	}
	if resp, body := fetchHost(t, url+"/ok", ""); resp.StatusCode != 200 || body != "fine" {
		t.Errorf("a normal page through the guard: %d %q", resp.StatusCode, body)
	}
}

// fetchEncoded GETs url with Host host (unless "") and Accept-Encoding
// acceptEncoding, and returns the response and its body decoded from its
// Content-Encoding (Go's client decodes only what it asked for itself).
func fetchEncoded(t *testing.T, url, host, acceptEncoding string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Accept-Encoding", acceptEncoding)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	switch ce := resp.Header.Get("Content-Encoding"); ce {
	case "":
	case "gzip":
		if body, err = gzip.NewReader(resp.Body); err != nil {
			t.Fatalf("%s: a gzip body that does not decode: %v", url, err)
		}
	case "zstd":
		d, err := zstd.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		body = d
	default:
		t.Fatalf("%s: Content-Encoding %q", url, ce)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("%s: reading the %s body: %v", url, resp.Header.Get("Content-Encoding"), err)
	}
	return resp, string(b)
}

// TestGuardHidesCompressedDebugPages: debug pages compressed by the app
// (Django's GZipMiddleware, for gzip) or by Caddy's encode under a site
// guard (for zstd) are decoded to be checked, and replaced within their
// status class.
func TestGuardHidesCompressedDebugPages(t *testing.T) {
	t.Parallel()
	bare, guarded, encoded := freePort(t), freePort(t), freePort(t)
	c := startCaddy(t, fmt.Sprintf(`
http://:%d {
	bind 127.0.0.1
	wsgi djgzip:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard off
	}
}
http://:%d {
	bind 127.0.0.1
	wsgi djgzip:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard warn {
			hosts 127.0.0.1 evil.example # more than the app allows, to reach its DisallowedHost
		}
	}
}
http://:%d {
	bind 127.0.0.1
	guard
	encode zstd gzip
	wsgi djgzip:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard off
	}
}`, bare, guarded, encoded))
	at := func(port int, path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", port, path) }

	// unguarded, the compressed pages leak: the test app is right
	for path, host := range map[string]string{"/boom": "", "/nowhere": "", "/ok": "evil.example"} {
		resp, body := fetchEncoded(t, at(bare, path), host, "gzip")
		if resp.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(body, "DEBUG = True") {
			t.Fatalf("the unguarded app's %s (Host %q) is not a gzipped debug page (%d, %q), so this test proves nothing",
				path, host, resp.StatusCode, resp.Header.Get("Content-Encoding"))
		}
	}

	for i, site := range []struct {
		port   int
		accept string
	}{{guarded, "gzip"}, {encoded, "zstd"}, {encoded, "gzip"}} {
		name := fmt.Sprintf("port %d, Accept-Encoding %s", site.port, site.accept)
		if i > 0 {
			time.Sleep(1100 * time.Millisecond) // the guard logs one replaced page a second
		}
		resp, body := fetchEncoded(t, at(site.port, "/boom"), "", site.accept)
		if resp.StatusCode != 500 || body != "Internal Server Error\n" {
			t.Errorf("%s: a failing view: %d %q", name, resp.StatusCode, truncateString(body, 200))
		}
		resp, body = fetchEncoded(t, at(site.port, "/nowhere"), "", site.accept)
		if resp.StatusCode != 404 || body != "Not Found\n" {
			t.Errorf("%s: the technical 404: %d %q", name, resp.StatusCode, truncateString(body, 200))
		}
		// a page that passes is still compressed
		resp, body = fetchEncoded(t, at(site.port, "/ok"), "", site.accept)
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "fine") || resp.Header.Get("Content-Encoding") != site.accept {
			t.Errorf("%s: a normal page: %d %q %q", name, resp.StatusCode, resp.Header.Get("Content-Encoding"), truncateString(body, 50))
		}
	}
	// Django's DisallowedHost page (with DEBUG on) stays a 400
	for _, site := range []struct {
		port   int
		accept string
	}{{guarded, "gzip"}, {encoded, "zstd"}} {
		resp, body := fetchEncoded(t, at(site.port, "/ok"), "evil.example", site.accept)
		if resp.StatusCode != 400 || body != "Bad Request\n" {
			t.Errorf("port %d, Accept-Encoding %s: DisallowedHost: %d %q", site.port, site.accept, resp.StatusCode, truncateString(body, 200))
		}
	}

	// each page was decoded and found out (not replaced as one that could
	// not be checked), and the log names its exception (read from the
	// decoded page) but holds none of the page
	var logged int
	for line := range strings.SplitSeq(c.log.String(), "\n") {
		if strings.Contains(line, "could not check") {
			t.Errorf("a page was not decoded: %s", truncateString(line, 400))
		}
		if strings.Contains(line, "guard replaced a response that carried a debug page") && strings.Contains(line, `"path":"/boom"`) {
			logged++
			if !strings.Contains(line, `"status":500`) || !strings.Contains(line, `"signature":`) || !strings.Contains(line, `"page":"RuntimeError"`) || strings.Contains(line, "hunter2") {
				t.Errorf("the log line of a replaced compressed page: %s", truncateString(line, 400))
			}
		}
	}
	if logged != 3 {
		t.Errorf("%d log lines for the 3 replaced /boom pages:\n%s", logged, tail(c.log.String(), 20))
	}
}

func TestGuardHidesWerkzeugDebugger(t *testing.T) {
	t.Parallel()
	bare := guardSite(t, "werkzeug_debug:application", "off", "-")
	if _, body := fetchHost(t, bare+"/boom", ""); !strings.Contains(body, "hunter2") {
		t.Fatalf("the unguarded Werkzeug debugger did not leak, so this test proves nothing")
	}
	url := guardSite(t, "werkzeug_debug:application", "off", "")
	resp, body := fetchHost(t, url+"/boom", "")
	if resp.StatusCode != 500 || strings.Contains(body, "hunter2") || strings.Contains(body, "debugger") {
		t.Errorf("guarded debugger page: %d %q", resp.StatusCode, truncateString(body, 200))
	}
	if resp, _ := fetchHost(t, url+"/?__debugger__=yes&cmd=resource&f=style.css", ""); resp.StatusCode != 404 {
		t.Errorf("a __debugger__ request: %d", resp.StatusCode)
	}
	// the debugger's key percent-encoded is the same key to Werkzeug
	const encoded = "/?%5F%5Fdebugger%5F%5F=yes&cmd=resource&f=style.css"
	if resp, body := fetchHost(t, bare+encoded, ""); resp.StatusCode != 200 || !strings.Contains(body, "font-family") {
		t.Fatalf("Werkzeug did not serve its debugger's style sheet to the encoded key (%d), so this test proves nothing", resp.StatusCode)
	}
	for _, q := range []string{encoded, "/?%5f%5fdebugger%5f%5f=yes&cmd=resource&f=style.css", "/?x=1&__debugger%5F%5F=yes&cmd=resource&f=debugger.js"} {
		if resp, body := fetchHost(t, url+q, ""); resp.StatusCode != 404 || strings.Contains(body, "font-family") {
			t.Errorf("%s: %d %q", q, resp.StatusCode, truncateString(body, 100))
		}
	}
	if resp, _ := fetchHost(t, url+"/console", ""); resp.StatusCode != 404 {
		t.Errorf("/console: %d", resp.StatusCode)
	}
}

func TestGuardRefusesPathsAndHosts(t *testing.T) {
	t.Parallel()
	url := guardSite(t, "headers:application", "off", "\t\thosts app.example 127.0.0.1 *.home.example\n\t\trefuse /private/*")
	for _, p := range []string{"/.env", "/.env.production", "/.git/config", "/db.sqlite3", "/app/settings.py", "/x/__pycache__/y", "/private/notes", "/static/../.git/HEAD",
		// the same files, spelled otherwise
		"/.ENV", "/.Git/config", "/.env/", "/.env.", "/.env%20", "/.env;x", "/.env%00x", "/db.sqlite3%00.png", "/x/..%2f.env",
		"/static/..%5C.git%5Cconfig", "/app/settings.py::$DATA", "/x/..%2Fprivate/notes", "//private/notes", "/%2eenv"} {
		if resp, body := fetchHost(t, url+p, ""); resp.StatusCode != 404 || strings.Contains(body, "served") {
			t.Errorf("%s: %d %q", p, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/", "/environment", "/static/app.css", "/python-guide", "/%252eenv", "/notes./", "/a;b/c"} {
		if resp, body := fetchHost(t, url+p, ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "served") {
			t.Errorf("%s was refused: %d %q", p, resp.StatusCode, body)
		}
	}
	for host, want := range map[string]int{"app.example": 200, "APP.example:443": 200, "www.home.example": 200, "evil.example": 421, "a.b.home.example": 421, "home.example": 421} {
		if resp, _ := fetchHost(t, url+"/", host); resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func TestGuardHeaders(t *testing.T) {
	t.Parallel()
	url := guardSite(t, "headers:application", "off", "")
	resp, _ := fetchHost(t, url+"/", "")
	for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "SAMEORIGIN", "Referrer-Policy": "strict-origin-when-cross-origin", "X-Powered-By": "", "Strict-Transport-Security": ""} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if servers := resp.Header.Values("Server"); len(servers) != 1 || servers[0] != "Caddy" {
		t.Errorf("Server headers %q: the app's must be removed", servers)
	}
	resp, _ = fetchHost(t, url+"/framed", "")
	if resp.Header.Get("X-Frame-Options") != "ALLOW-FROM https://partner.example" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("the app's own headers were overwritten: %v", resp.Header)
	}
	// an error response without debug content passes intact; one larger
	// than the guard checks (scan_limit, 256 KiB) is replaced, status kept
	resp, body := fetchHost(t, url+"/plain-error", "")
	if resp.StatusCode != 404 || body != "no such page\n" {
		t.Errorf("plain error: %d %q", resp.StatusCode, body)
	}
	resp, body = fetchHost(t, url+"/big-error", "")
	if resp.StatusCode != 404 || body != "Not Found\n" {
		t.Errorf("large error: %d, %d bytes, want the plain 404", resp.StatusCode, len(body))
	}
}

func truncateString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
