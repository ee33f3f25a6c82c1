package tests

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
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
	resp, body = fetchHost(t, url+"/nowhere", "")
	if resp.StatusCode != 500 || strings.Contains(body, "URLconf") {
		t.Errorf("guarded technical 404: %d %q", resp.StatusCode, truncateString(body, 200))
	}
	if resp, body := fetchHost(t, url+"/ok", ""); resp.StatusCode != 200 || body != "fine" {
		t.Errorf("a normal page through the guard: %d %q", resp.StatusCode, body)
	}
}

func TestGuardHidesWerkzeugDebugger(t *testing.T) {
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
	if resp, _ := fetchHost(t, url+"/console", ""); resp.StatusCode != 404 {
		t.Errorf("/console: %d", resp.StatusCode)
	}
}

func TestGuardRefusesPathsAndHosts(t *testing.T) {
	url := guardSite(t, "headers:application", "off", "\t\thosts app.example 127.0.0.1 *.home.example\n\t\trefuse /private/*")
	for _, p := range []string{"/.env", "/.env.production", "/.git/config", "/db.sqlite3", "/app/settings.py", "/x/__pycache__/y", "/private/notes", "/static/../.git/HEAD"} {
		if resp, body := fetchHost(t, url+p, ""); resp.StatusCode != 404 || strings.Contains(body, "served") {
			t.Errorf("%s: %d %q", p, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/", "/environment", "/static/app.css", "/python-guide"} {
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
	// error responses without debug content pass intact, small and large
	resp, body := fetchHost(t, url+"/plain-error", "")
	if resp.StatusCode != 404 || body != "no such page\n" {
		t.Errorf("plain error: %d %q", resp.StatusCode, body)
	}
	resp, body = fetchHost(t, url+"/big-error", "")
	if resp.StatusCode != 404 || len(body) != 600<<10 {
		t.Errorf("large error: %d, %d bytes", resp.StatusCode, len(body))
	}
}

func truncateString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
