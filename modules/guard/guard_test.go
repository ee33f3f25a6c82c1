package guard

import (
	"net/http/httptest"
	"testing"
)

func TestHostSet(t *testing.T) {
	s, err := newHostSet([]string{"Example.net", "*.home.example"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"example.net": true, "EXAMPLE.NET:8443": true, "example.net.": true, "www.home.example": true,
		"home.example": false, "a.b.home.example": false, "evil.net": false, "example.net.evil": false, "[::1]:80": false,
	} {
		if got := s.allows(host); got != want {
			t.Errorf("%s: %v, want %v", host, got, want)
		}
	}
	if empty, _ := newHostSet(nil); !empty.allows("anything") {
		t.Errorf("no hosts configured must allow any host")
	}
	if _, err := newHostSet([]string{"http://x"}); err == nil {
		t.Errorf("a URL accepted as a host")
	}
}

func TestRefused(t *testing.T) {
	g := &Guard{Refuse: []string{"/private/*", "*.bak"}}
	for target, refused := range map[string]bool{
		"/.env": true, "/.ENV": true, "/.env.local": true, "/a/.git/config": true, "/db.sqlite3": true,
		"/app/models.py": true, "/console": true, "/console/x": true, "/?__debugger__=yes": true,
		"/private/x": true, "/old.bak": true, "/x/__pycache__/m.pyc": true, "/a/.DS_Store": true,
		"/?a=1&__debugger__=yes&cmd=x": true,
		"/?q=__debugger__":             false, "/": false, "/environment": false, "/consoles": false, "/static/app.css": false, "/python": false,
		"/envelope.env-file": false, "/blog/.well-known/x": false,
	} {
		r := httptest.NewRequest("GET", target, nil)
		if got := g.refused(r) != ""; got != refused {
			t.Errorf("%s: refused %v, want %v (%s)", target, got, refused, g.refused(r))
		}
	}
}

func TestLeak(t *testing.T) {
	for body, want := range map[string]bool{
		"Traceback (most recent call last):\n  File \"x.py\"":                                                        true,
		"You’re seeing this error because you have <code>DEBUG = True</code> in\n your":                              true,
		"<title>RuntimeError // Werkzeug Debugger</title> The debugger caught an exception in your WSGI application": true,
		`<div class="traceback-container">`:                                                                          true,
		"<h1>Forbidden (403)</h1><p>CSRF verification failed.</p>":                                                   false,
		"no such page": false,
	} {
		if got := leak([]byte(body)) != ""; got != want {
			t.Errorf("%q: leak %v, want %v", body, got, want)
		}
	}
}
