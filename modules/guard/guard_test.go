package guard

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hearth-dev/hearth/modules/internal/textcut"
)

func TestHostSet(t *testing.T) {
	s, err := newHostSet([]string{"Example.net", "*.home.example", "[::1]", "192.168.1.5"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"example.net": true, "EXAMPLE.NET:8443": true, "example.net.": true, "www.home.example": true,
		"home.example": false, "a.b.home.example": false, "evil.net": false, "example.net.evil": false, "[::2]:80": false,
		// an IPv6 address is listed in brackets and sent in them
		"[::1]": true, "[::1]:8080": true, "::1": false, "192.168.1.5:80": true,
		// a port that is not a number, brackets around a name
		"example.net:evil.example": false, "example.net:80x": false, "[example.net]": false, "[example.net]:80": false,
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

// TestScanLimitBoundInJSON: the Caddyfile bounds scan_limit at 1 GiB;
// JSON did not, and past it the hold's arithmetic overflowed (every
// compressed error page was replaced).
func TestScanLimitBoundInJSON(t *testing.T) {
	if err := (&Guard{ScanLimit: math.MaxInt}).Prepare(zap.NewNop()); err == nil || !strings.Contains(err.Error(), "scan_limit") {
		t.Errorf("a scan_limit of the largest int: %v", err)
	}
	if err := (&Guard{ScanLimit: 1 << 30}).Prepare(zap.NewNop()); err != nil {
		t.Errorf("a scan_limit of 1GiB: %v", err)
	}
}

func TestRefusePatternThatNeverMatches(t *testing.T) {
	for _, p := range []string{"static/private/*", "a/b"} {
		if err := (&Guard{Refuse: []string{p}}).Prepare(zap.NewNop()); err == nil || !strings.Contains(err.Error(), "would never match") {
			t.Errorf("refuse %s: %v", p, err)
		}
	}
	if err := (&Guard{Refuse: []string{"/static/private/*", "*.zip", "secret"}}).Prepare(zap.NewNop()); err != nil {
		t.Errorf("patterns that match: %v", err)
	}
}

func TestRefused(t *testing.T) {
	g := &Guard{Refuse: []string{"/private/*", "*.bak", "*.ZIP", "/users/*/secret/*"}}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	for target, refused := range map[string]bool{
		// a pattern ending in /* refuses what is under it, at any depth;
		// patterns match in any case
		"/private/sub/deep.txt": true, "/private/": true, "/PRIVATE/Sub/x": true, "/privates/x": false, "/private": false,
		"/users/ann/secret/a/b": true, "/users/ann/public/a": false, "/files/a.zip": true, "/files/A.Zip": true,
		// secrets and databases beside the built-in ones
		"/app.db": true, "/instance/site.db": true, "/db.sqlite3-wal": true, "/db.sqlite3-journal": true, "/app.db-shm": true,
		"/settings.py~": true, "/x.orig": true, "/.envrc": true, "/a/.venv/bin/python": true, "/.ssh/id_rsa": true,
		"/.aws/credentials": true, "/.htpasswd": true, "/static/.htpasswd": true,
		"/.git-credentials": true, "/.flaskenv": true, "/dump.sql": true, "/backup/db.sql.gz": true, "/.env-production": true,
		"/.env_local": true, "/.pgpass": true, "/.netrc": true, "/.pypirc": true, "/.npmrc": true, "/.gitconfig": true,
		"/docs/sql.html": false, "/envoy/": false,
		// private keys: TLS (certbot's privkey.pem), SSH, PuTTY, PKCS#12 and Java stores
		"/server.key": true, "/certs/privkey.pem": true, "/Server.KEY": true, "/id_rsa": true, "/home/id_ed25519": true,
		"/keys/me.ppk": true, "/cert.p12": true, "/cert.pfx": true, "/app.jks": true, "/release.keystore": true,
		"/id_rsa.pub": false, "/ca.crt": false, "/monkey": false, "/apikey": false, "/user.keys": false, "/docs/pem.html": false,
		// letters a case-folding file system reads as s or st
		"/db.\u017fqlite3": true, "/.\u017f\u017fh/id_rsa": true, "/.git-credential\u017f": true, "/\ufb06atic/app.css": false,
		// and as ss, ff, fi, fl, ffi, ffl (ẞ lowers to ß)
		"/.htpa\u00dfwd": true, "/.htpa\u1e9ewd": true, "/.\u00dfh/authorized_keys": true, "/.gitcon\ufb01g": true,
		"/.\ufb02askenv": true, "/a.di\ufb00": false, "/stra\u00dfe/": false,
		// characters nothing shows, which a case-folding file system may ignore
		"/.g\u200dit/config": true, "/db.sqlite\u00ad3": true, "/.e\u200bnv": true, "/.env\ufe0f": true, "/caf\u00e9/\u200d": false,
		"/db": false, "/dbs/x.json": false, "/~user/": false, "/venv/": false, "/docs/ssh.html": false,
		"/.env": true, "/.ENV": true, "/.env.local": true, "/a/.git/config": true, "/db.sqlite3": true,
		"/app/models.py": true, "/console": true, "/console/x": true, "/?__debugger__=yes": true,
		"/private/x": true, "/old.bak": true, "/x/__pycache__/m.pyc": true, "/a/.DS_Store": true,
		"/?a=1&__debugger__=yes&cmd=x": true,
		"/?q=__debugger__":             false, "/": false, "/environment": false, "/consoles": false, "/static/app.css": false, "/python": false,
		"/envelope.env-file": false, "/blog/.well-known/x": false,

		// the decoded path, in every reading an app or a file system may make of it
		"/%2eenv": true, "/.Env": true, "/.GIT/config": true, "/.git": true, "/.git/": true, "/.env/": true,
		"/db.sqlite3/": true, "/app/models.py//": true, "/x/..%2f.env": true, "/x/..%2F..%2F.git%2FHEAD": true,
		"/.env%00x": true, "/.env%00": true, "/a%00/.env%00x": true, "/db.sqlite3%00.png": true, "/.env%0a": true,
		"/.git%09/config": true, "/app/settings.py%00": true, "/db.sqlite3%00/x": true, "/app/views.py%00/../x": true,
		"/.env;x": true, "/app/models.py;jsessionid=1": true, "/.git;x/config": true, "/console;x": true,
		"/.env.": true, "/.env%20": true, "/.git./config": true, "/.git%20/config": true, "/db.sqlite3.": true,
		"/settings.py%20": true, "/old.bak..": true,
		"/static/..%5c.env": true, "/static%5C..%5C.git%5Cconfig": true, "/a%5C__pycache__%5Cm.pyc": true,
		"/.env::$DATA": true, "/app/settings.py::$DATA": true,
		"/x/../private/notes": true, "//private/notes": true, "/PRIVATE/notes": true, "/x/%2e%2e/private/n": true,
		"/CONSOLE": true, "/console/": true, "/x/../console": true,
		// double encoding is not decoded by apps either: left alone
		"/%252eenv": false, "/%252e%252e/x": false,
		// odd but harmless paths pass, a NUL that hides nothing is the channel's
		"/x%00y": false, "/a;b/c": false, "/wiki/Special:Search": false, "/files/a..b": false, "/docs/v1.2/": false,
		"/my%20file.txt": false, "/notes./": false, "/blog/": false, "/x/../y/": false, "/python./": false,

		// the decoded query, split and decoded as Werkzeug does, in any case
		"/?%5F%5Fdebugger%5F%5F=yes&cmd=resource": true, "/?%5f%5fdebugger%5f%5f=yes": true,
		"/?__debugger%5F%5F=yes": true, "/?%5F%5FDEBUGGER%5F%5F=yes": true, "/?__DEBUGGER__=yes": true,
		"/?x=1;__debugger__=yes": true, "/?%5F_debugger__=yes&cmd=pinauth": true, "/?__debugger__": true,
		"/?%5F%5F%64%65%62%75%67%67%65%72%5F%5F=yes": true, "/x?a=1&%5F%5Fdebugger%5F%5F": true,
		"/?q=%5F%5Fdebugger%5F%5F": false, "/?__debugger__x=yes": false, "/?q=a%26__debugger__%3Dyes": false,
		"/?__debugger__+=yes": false, "/?%255F%255Fdebugger%255F%255F=yes": false, "/?q=%zz__": false,
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

func TestRefusedDoesNotAllocate(t *testing.T) {
	g := &Guard{Refuse: []string{"/private/*", "*.bak"}}
	for _, target := range []string{
		"/", "/blog/post-1/", "/static/app.css?v=3", "/search?q=caf%C3%A9&page=2", "/api/items?__x=1&y=%20",
		"/a.b/c.d/", "/my%20file.txt?a+b=c", // (an upper-case path is lowered: one allocation, as before)
	} {
		r := httptest.NewRequest("GET", target, nil)
		if reason := g.refused(r); reason != "" {
			t.Fatalf("%s refused: %s", target, reason)
		}
		if allocs := testing.AllocsPerRun(100, func() { g.refused(r) }); allocs != 0 {
			t.Errorf("%s: %v allocations per request", target, allocs)
		}
	}
}

// Pages as the frameworks render them with DEBUG on, and a clean one.
const (
	djangoDebug500   = "<!DOCTYPE html><html><head><title>RuntimeError at /boom</title></head><body>Traceback (most recent call last):\n  File \"views.py\", line 3\nRuntimeError: database password is hunter2</body></html>"
	djangoDebug404   = "<!DOCTYPE html><html><head><title>Page not found at /nowhere</title></head><body><p>Using the URLconf defined in <code>urls</code></p><p>You’re seeing this error because you have <code>DEBUG = True</code> in\n your Django settings file.</p></body></html>"
	werkzeugDebugger = "<!doctype html><title>RuntimeError // Werkzeug Debugger</title><p>The debugger caught an exception in your WSGI application. hunter2</p>"
	cleanPage        = "<!doctype html><title>Not here</title><h1>Page not found</h1>"
)

func gzipped(t testing.TB, s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zlibbed(t testing.TB, s string) []byte {
	var b bytes.Buffer
	zw := zlib.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func deflated(t testing.TB, s string) []byte {
	var b bytes.Buffer
	fw, _ := flate.NewWriter(&b, flate.DefaultCompression)
	_, _ = fw.Write([]byte(s))
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstded(t testing.TB, s string) []byte {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll([]byte(s), nil)
}

// randomText is n bytes of text that does not compress.
func randomText(n int) string {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(rng.IntN(26))
	}
	return string(b)
}

// guardedResponse runs a response (status, header, body written in chunks
// of chunk bytes) through a guard with the given scan limit, and returns
// what the client gets and the guard's log.
func guardedResponse(t testing.TB, scanLimit, status int, header http.Header, body []byte, chunk int) (*httptest.ResponseRecorder, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	g := &Guard{ScanLimit: scanLimit}
	if err := g.Prepare(zap.New(core)); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		maps.Copy(w.Header(), header)
		w.WriteHeader(status)
		for rest := body; len(rest) > 0; {
			n := min(chunk, len(rest))
			if _, err := w.Write(rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
	if err := g.ServeHTTP(rec, httptest.NewRequest("GET", "/page", nil), next); err != nil {
		t.Fatal(err)
	}
	return rec, logs
}

func TestGuardResponses(t *testing.T) {
	const html = "text/html; charset=utf-8"
	var twice bytes.Buffer // gzip over gzip
	zw := gzip.NewWriter(&twice)
	_, _ = zw.Write(gzipped(t, werkzeugDebugger))
	_ = zw.Close()
	bigDebug := djangoDebug500 + randomText(400<<10) // compressed, far over the scan limit below
	bigClean := cleanPage + randomText(400<<10)      // likewise, with nothing to find
	// a debug page pushed past the scan limit by a long query string the
	// page quotes (its signatures are not at its start)
	lateDebug := cleanPage + randomText(400<<10) + djangoDebug500
	corrupt := gzipped(t, djangoDebug500) // a gzip header, then garbage
	corrupt = append(corrupt[:10:10], bytes.Repeat([]byte{0xff}, 40)...)
	for _, c := range []struct {
		name      string
		scanLimit int
		status    int
		ct, ce    string
		body      []byte
		// want: the status and body the client gets; replaced: the body
		// is the plain page (else the original, byte for byte, with its
		// Content-Encoding); sig: the signature logged, "" for none
		wantStatus int
		replaced   bool
		sig        string
	}{
		{"gzip Django 500", 0, 500, html, "gzip", gzipped(t, djangoDebug500), 500, true, "Traceback (most recent call last)"},
		{"x-gzip Django 500", 0, 500, html, "x-gzip", gzipped(t, djangoDebug500), 500, true, "Traceback (most recent call last)"},
		{"deflate (zlib) Werkzeug 500", 0, 500, html, "deflate", zlibbed(t, werkzeugDebugger), 500, true, "The debugger caught an exception in your WSGI application"},
		{"deflate (raw) technical 404", 0, 404, html, "Deflate", deflated(t, djangoDebug404), 404, true, "because you have <code>DEBUG = True</code> in"},
		{"zstd DisallowedHost 400", 0, 400, html, "zstd", zstded(t, djangoDebug404), 400, true, "because you have <code>DEBUG = True</code> in"},
		{"gzip, gzip Werkzeug 503", 0, 503, "", "gzip, gzip", twice.Bytes(), 500, true, "The debugger caught an exception in your WSGI application"},
		{"gzip clean 404", 0, 404, html, "gzip", gzipped(t, cleanPage), 404, false, ""},
		{"deflate clean 500", 0, 500, html, "deflate", zlibbed(t, cleanPage), 500, false, ""},
		{"zstd clean 410", 0, 410, "application/json", "zstd", zstded(t, `{"error": "gone"}`), 410, false, ""},
		{"identity debug 404", 0, 404, html, "identity", []byte(djangoDebug404), 404, true, "because you have <code>DEBUG = True</code> in"},
		{"gzip debug over the limit", 4 << 10, 500, html, "gzip", gzipped(t, bigDebug), 500, true, ""},
		{"gzip clean over the limit", 4 << 10, 500, html, "gzip", gzipped(t, bigClean), 500, true, ""},
		{"gzip debug past the limit", 4 << 10, 500, html, "gzip", gzipped(t, lateDebug), 500, true, ""},
		{"debug past the limit", 4 << 10, 500, html, "", []byte(lateDebug), 500, true, ""},
		{"gzip debug past the limit, held whole", 256 << 10, 500, html, "gzip", gzipped(t, lateDebug), 500, true, ""},
		{"zstd debug over the limit", 4 << 10, 500, html, "zstd", zstded(t, bigDebug), 500, true, ""},
		{"zstd clean over the limit", 4 << 10, 500, html, "zstd", zstded(t, bigClean), 500, true, ""},
		{"deflate clean over the limit", 4 << 10, 404, html, "deflate", zlibbed(t, bigClean), 404, true, ""},
		{"corrupt gzip", 0, 500, html, "gzip", corrupt, 500, true, ""},
		{"truncated gzip", 0, 404, html, "gzip", gzipped(t, cleanPage)[:30], 404, true, ""},
		{"unknown coding", 0, 404, html, "br", []byte("\x1b\x03\x00\xf8\xa5\x40\x02"), 404, true, ""},
		{"too many codings", 0, 500, html, "gzip, gzip, gzip, gzip", gzipped(t, cleanPage), 500, true, ""},
		{"not scannable, corrupt", 0, 500, "image/png", "gzip", []byte("\x89PNG not gzip"), 500, false, ""},
		{"empty gzip body", 0, 500, html, "gzip", nil, 500, false, ""},
		// the status class is kept, encoded or not
		{"debug 400", 0, 400, html, "", []byte(djangoDebug404), 400, true, "because you have <code>DEBUG = True</code> in"},
		{"debug 404", 0, 404, html, "", []byte(djangoDebug404), 404, true, "because you have <code>DEBUG = True</code> in"},
		{"debug 418", 0, 418, html, "", []byte(werkzeugDebugger), 418, true, "The debugger caught an exception in your WSGI application"},
		{"debug 499 (no status text)", 0, 499, html, "", []byte(werkzeugDebugger), 400, true, "The debugger caught an exception in your WSGI application"},
		{"debug 503", 0, 503, html, "", []byte(djangoDebug500), 500, true, "Traceback (most recent call last)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.scanLimit > 0 && len(lateDebug) <= c.scanLimit {
				t.Fatalf("the page (%d bytes) is within the limit: it does not test one over it", len(lateDebug))
			}
			h := http.Header{}
			if c.ct != "" {
				h.Set("Content-Type", c.ct)
			}
			if c.ce != "" {
				h.Set("Content-Encoding", c.ce)
			}
			rec, logs := guardedResponse(t, c.scanLimit, c.status, h, c.body, 1000)
			if rec.Code != c.wantStatus {
				t.Errorf("status %d, want %d", rec.Code, c.wantStatus)
			}
			got := rec.Body.Bytes()
			if c.replaced {
				if want := http.StatusText(c.wantStatus) + "\n"; string(got) != want || rec.Header().Get("Content-Encoding") != "" ||
					rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
					t.Errorf("replaced: %q (%v), want %q, plain and unencoded", textcut.Shorten(string(got), 100), rec.Header(), want)
				}
			} else if !bytes.Equal(got, c.body) || rec.Header().Get("Content-Encoding") != c.ce {
				t.Errorf("not passed through byte for byte: %d bytes, want %d; Content-Encoding %q", len(got), len(c.body), rec.Header().Get("Content-Encoding"))
			}
			entries := logs.FilterLevelExact(zap.ErrorLevel).All()
			switch {
			case !c.replaced && len(entries) != 0:
				t.Errorf("logged a response it let through: %v", entries[0].Message)
			case c.replaced && len(entries) != 1:
				t.Fatalf("%d log lines for a replaced response", len(entries))
			case c.replaced:
				fields := entries[0].ContextMap()
				if fields["path"] != "/page" || fields["status"] != int64(c.status) {
					t.Errorf("log line %q %v: the path and the original status must be named", entries[0].Message, fields)
				}
				if c.sig == "" {
					if fields["error"] == nil && fields["scan_limit"] == nil {
						t.Errorf("a response that could not be checked logged without its error: %v", fields)
					}
					break
				}
				if page := fields["page"]; fields["signature"] != c.sig || page != "RuntimeError" && page != "Page not found" {
					t.Errorf("log line %v: want signature %q and the page's name, read from the decoded page", fields, c.sig)
				}
				if strings.Contains(fmt.Sprint(fields), "hunter2") {
					t.Errorf("log line %v: the page's contents are in the log", fields)
				}
			}
		})
	}
}

// bomb is 1 GiB of zeros, gzipped: 1024 gzip members of 1 MiB each, about
// 1 MiB in all.
func bomb(t testing.TB) []byte {
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	_, _ = zw.Write(make([]byte, 1<<20))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Repeat(member.Bytes(), 1024)
}

func TestGuardGzipBomb(t *testing.T) {
	b := bomb(t)
	h := http.Header{"Content-Encoding": {"gzip"}}
	if text, err := decodedBody(h, b, 256<<10); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("decoded %d bytes (%v), want an error: more than the limit", len(text), err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rec, _ := guardedResponse(t, 256<<10, 500, http.Header{"Content-Type": {"text/html"}, "Content-Encoding": {"gzip"}}, b, 32<<10)
	runtime.ReadMemStats(&after)
	// the body is replaced (it is not checked whole), and checking it cost
	// the held part and the scan limit, not the gigabyte it expands to
	if rec.Code != 500 || rec.Body.String() != "Internal Server Error\n" {
		t.Errorf("the bomb was not replaced: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("checking a gzip bomb allocated %d MiB", alloc>>20)
	}
}

func TestDecodedBody(t *testing.T) {
	page := cleanPage + randomText(8<<10)
	gz := gzipped(t, page)
	for _, c := range []struct {
		name   string
		coding string
		body   []byte
		limit  int
		want   string // the decoded body; "error" for an error
	}{
		{"no coding", "", []byte(page), 10, page}, // an unencoded body is held whole, within the limit
		{"identity", "identity", []byte(page), 10, page},
		{"whole", "gzip", gz, 64 << 10, page},
		{"exactly the limit", "gzip", gz, len(page), page},
		{"one byte over the limit", "gzip", gz, len(page) - 1, "error"},
		{"over the limit", "gzip", gz, 100, "error"},
		{"truncated", "gzip", gz[:len(gz)/2], 64 << 10, "error"},
		{"checksum", "gzip", append(slices.Clone(gz[:len(gz)-8]), 0, 0, 0, 0, 0, 0, 0, 0), 64 << 10, "error"},
		{"zstd truncated", "zstd", zstded(t, page)[:len(page)/2], 64 << 10, "error"},
		{"zstd twice", "zstd, zstd", zstded(t, string(zstded(t, page))), 64 << 10, "error"},
		{"zstd", "zstd", zstded(t, page), 64 << 10, page},
		{"deflate header cut", "deflate", []byte{0x78}, 64 << 10, "error"},
		// a few KiB of gzip over gzip holding empty deflate or zstd blocks,
		// which decode to nothing: their decoding stops at a bound
		{"empty deflate blocks under two gzips", "deflate, gzip, gzip", emptyBlocks(t, "deflate"), 4 << 10, "error"},
		{"empty zstd blocks under two gzips", "zstd, gzip, gzip", emptyBlocks(t, "zstd"), 4 << 10, "error"},
		{"a page under two gzips", "gzip, gzip", gzipped(t, string(gz)), 64 << 10, page},
		{"unknown", "compress", gz, 64 << 10, "error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.coding != "" {
				h.Set("Content-Encoding", c.coding)
			}
			got, err := decodedBody(h, c.body, c.limit)
			switch {
			case c.want == "error":
				if err == nil {
					t.Errorf("no error; decoded %d bytes", len(got))
				}
			case err != nil:
				t.Errorf("error %v", err)
			case string(got) != c.want:
				t.Errorf("decoded %q, want %q", textcut.Shorten(string(got), 40), textcut.Shorten(c.want, 40))
			}
		})
	}
}

// emptyBlocks is a stream of the coding ("deflate": raw, stored blocks;
// "zstd": raw blocks) of 200,000 empty blocks, which decodes to nothing,
// gzipped twice: 1 MB of blocks in a few KiB.
func emptyBlocks(t testing.TB, coding string) []byte {
	var inner bytes.Buffer
	switch coding {
	case "deflate":
		inner.Write(bytes.Repeat([]byte{0x00, 0x00, 0x00, 0xff, 0xff}, 200000)) // stored, not final, empty
		inner.Write([]byte{0x03, 0x00})                                         // fixed Huffman, final, empty
	case "zstd":
		inner.Write([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00})     // frame: magic, no content size, a 1 KiB window
		inner.Write(bytes.Repeat([]byte{0x00, 0x00, 0x00}, 200000)) // raw, not last, empty
		inner.Write([]byte{0x01, 0x00, 0x00})                       // raw, last, empty
	}
	return gzipped(t, string(gzipped(t, inner.String())))
}

// TestZstdDecodersAreBounded: a zstd decoder sets aside the window its
// frame declares (up to 8 MiB), outside the count of held pages, so the
// zstd-coded pages decoded at once are bounded: past the bound one waits
// for another to end, and is decoded then.
func TestZstdDecodersAreBounded(t *testing.T) {
	for range cap(zstdDecoders) { // every place taken
		zstdDecoders <- struct{}{}
	}
	h := http.Header{"Content-Encoding": {"zstd"}}
	done := make(chan error, 1)
	go func() {
		_, err := decodedBody(h, zstded(t, cleanPage), 64<<10)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("decoded past the bound: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	<-zstdDecoders // a place is given back
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("decoding once a place was free: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting with a place free")
	}
	for range cap(zstdDecoders) - 1 {
		<-zstdDecoders
	}
	if len(zstdDecoders) != 0 {
		t.Errorf("%d places still taken", len(zstdDecoders))
	}
}

// TestGuardHead: the answer to a HEAD request for an error page has the
// replacement's header, not the app's: a debug page's Content-Length
// would tell that DEBUG is on.
func TestGuardHead(t *testing.T) {
	g := &Guard{}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		status int
		ct     string
		want   string // the Content-Type the client gets
	}{
		{500, "text/html", "text/plain; charset=utf-8"},
		{404, "text/html; charset=utf-8", "text/plain; charset=utf-8"},
		{200, "text/html", "text/html"},
		{500, "image/png", "image/png"},
	} {
		rec := httptest.NewRecorder()
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", c.ct)
			w.Header().Set("Content-Length", "251778")
			w.WriteHeader(c.status)
			return nil
		})
		if err := g.ServeHTTP(rec, httptest.NewRequest("HEAD", "/search?q=x", nil), next); err != nil {
			t.Fatal(err)
		}
		replaced := c.want != c.ct
		if rec.Header().Get("Content-Type") != c.want || (rec.Header().Get("Content-Length") == "251778") == replaced {
			t.Errorf("HEAD, %d %s: got %v, want Content-Type %s", c.status, c.ct, rec.Header(), c.want)
		}
	}
}

// TestRefusedAfterARewrite: a rewrite after the site's guard (rewrite, uri,
// try_files change the request in place) that builds the path from what
// the client sent (`rewrite /dl /static/{query.f}`, ?f=.env) is judged
// again when the response starts: a 404, the file's bytes dropped.
func TestRefusedAfterARewrite(t *testing.T) {
	g := &Guard{Refuse: []string{"/static/private/*"}}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from, to   string
		wantStatus int
	}{
		// a rewrite whose result the client made a suffix of its path
		// (rewrite * /static/{query.f}) is still judged by the refuse list
		{"/zz/static/private/notes.txt?f=private/notes.txt", "/static/private/notes.txt", 404},
		{"/dl?f=private/notes.txt", "/static/private/notes.txt", 404},
		{"/dl?f=x", "/static/.env", 404},
		{"/dl?f=x", "/static/db.sqlite3", 404},
		{"/dl?f=x", "/static/app.css", 200},
		// handle_path /static/* strips the prefix: /console is the site's
		// path, not a file's
		{"/static/console/app.js", "/console/app.js", 200},
	} {
		rec := httptest.NewRecorder()
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			r.URL.Path = c.to // as Caddy's rewrite does
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Accept-Ranges", "bytes")
			w.Header().Set("Content-Range", "bytes 0-7/4711")
			_, err := w.Write([]byte("SECRET=x"))
			return err
		})
		if err := g.ServeHTTP(rec, httptest.NewRequest("GET", c.from, nil), next); err != nil {
			t.Fatal(err)
		}
		if rec.Code != c.wantStatus || (c.wantStatus == 404) == strings.Contains(rec.Body.String(), "SECRET") {
			t.Errorf("%s rewritten to %s: %d %q, want %d", c.from, c.to, rec.Code, rec.Body.String(), c.wantStatus)
		}
		if c.wantStatus == 404 && rec.Header().Get("Content-Range") != "" {
			t.Errorf("%s rewritten to %s: the 404 tells the file's size: %v", c.from, c.to, rec.Header())
		}
	}
}

// TestForwardedHostsFromATrustedProxy: behind a trusted proxy, the hosts
// it forwards are judged like Host (an app may build its links on them);
// from any other peer they are dropped, not judged.
func TestForwardedHostsFromATrustedProxy(t *testing.T) {
	g := &Guard{Hosts: []string{"example.net"}}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		trusted bool
		header  string
		value   string
		ok      bool
	}{
		{true, "X-Forwarded-Host", "example.net", true},
		{true, "X-Forwarded-Host", "evil.example", false},
		{true, "X-Forwarded-Host", "example.net, evil.example", false},
		{true, "Forwarded", `for=192.0.2.1;host="example.net";proto=https`, true},
		{true, "Forwarded", `for=192.0.2.1;Host=evil.example`, false},
		{true, "Forwarded", `for=192.0.2.1, for=198.51.100.2;host=evil.example`, false},
		{false, "X-Forwarded-Host", "evil.example", true},
		{true, "X-Original-Host", "evil.example", false},
		{true, "X-Host", "evil.example", false},
	} {
		r := httptest.NewRequest("GET", "http://example.net/", nil)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: tc.trusted}))
		r.Header.Set(tc.header, tc.value)
		err := g.Check(r)
		var he caddyhttp.HandlerError
		if tc.ok && err != nil || !tc.ok && (!errors.As(err, &he) || he.StatusCode != http.StatusMisdirectedRequest) {
			t.Errorf("trusted %v, %s: %s: %v", tc.trusted, tc.header, tc.value, err)
		}
	}
}

// TestGuardDropsProxyHeaders: what the handlers behind the guard get (a
// reverse_proxy to Node as much as a Python app) carries no proxy header
// a client wrote itself; a trusted proxy's stay, but for those spelled
// with '_': the guard does not judge them, and FastCGI and gunicorn read
// X_Forwarded_Host as X-Forwarded-Host (joined to the proxy's own: a
// password reset's link on the client's host).
func TestGuardDropsProxyHeaders(t *testing.T) {
	g := &Guard{}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	for _, trusted := range []bool{false, true} {
		r := httptest.NewRequest("GET", "/", nil)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: trusted}))
		for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-For", "Forwarded", "X-Real-IP", "CF-Connecting-IP", "True-Client-IP", "Cookie", "X-Requested-With"} {
			r.Header.Set(h, "evil.example")
		}
		r.Header["X_forwarded_host"] = []string{"evil.example"} // as net/http keeps X_Forwarded_Host
		r.Header["X_real_ip"] = []string{"192.0.2.1"}
		var seen http.Header
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			seen = r.Header.Clone()
			return nil
		})
		if err := g.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-For", "Forwarded", "X-Real-IP", "CF-Connecting-IP", "True-Client-IP"} {
			if (seen.Get(h) != "") != trusted {
				t.Errorf("trusted %v: %s is %q behind the guard", trusted, h, seen.Get(h))
			}
		}
		if seen["X_forwarded_host"] != nil || seen["X_real_ip"] != nil {
			t.Errorf("trusted %v: proxy headers spelled with '_' reach the app: %v", trusted, seen)
		}
		if seen.Get("Cookie") == "" || seen.Get("X-Requested-With") == "" {
			t.Errorf("trusted %v: other headers were dropped: %v", trusted, seen)
		}
	}
}

// TestIsWebSocket: what is taken for a WebSocket opening, leniently (the
// handler checks it more closely): a Connection header in two lines, as
// RFC 9110 allows, was read by its first line only, and the opening served
// as a plain request.
func TestIsWebSocket(t *testing.T) {
	for _, c := range []struct {
		name       string
		method     string
		http2      bool
		upgrade    string
		connection []string
		want       bool
	}{
		{"an upgrade", "GET", false, "websocket", []string{"Upgrade"}, true},
		{"in a list", "GET", false, "WebSocket", []string{"keep-alive, Upgrade"}, true},
		{"in a second line", "GET", false, "websocket", []string{"keep-alive", "upgrade"}, true},
		{"inside another word (the handler refuses it)", "GET", false, "websocket", []string{"keep-alive-upgrade"}, true},
		{"no Connection", "GET", false, "websocket", nil, false},
		{"another protocol", "GET", false, "h2c", []string{"Upgrade"}, false},
		{"a POST", "POST", false, "websocket", []string{"Upgrade"}, false},
		{"an extended CONNECT", "CONNECT", true, "", nil, true},
	} {
		r := httptest.NewRequest(c.method, "/ws", nil)
		if c.http2 {
			r.ProtoMajor = 2
			r.Header.Set(":protocol", "websocket")
		}
		if c.upgrade != "" {
			r.Header.Set("Upgrade", c.upgrade)
		}
		r.Header["Connection"] = c.connection
		if got := IsWebSocket(r); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// The security headers a response lacks are added with one allocation in
// all (they were one each), none when it lacks none, and each keeps its
// own value: adding to one never writes into another, nor into the next
// response's. A max-age changed after Prepare is the one sent.
func TestSecureHeadersShareOneArray(t *testing.T) {
	r := httptest.NewRequest("GET", "https://example.test/", nil) // TLS: HSTS too
	g := &Guard{}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	gw := g.wrap(httptest.NewRecorder(), r)
	h := http.Header{}
	if allocs := testing.AllocsPerRun(100, func() {
		clear(h)
		gw.secureHeaders(h)
	}); allocs != 1 {
		t.Errorf("%v allocations per response, want 1", allocs)
	}
	// an app that sets them all (Django's middleware does) costs none
	set := http.Header{"X-Content-Type-Options": {"nosniff"}, "X-Frame-Options": {"DENY"},
		"Referrer-Policy": {"same-origin"}, "Strict-Transport-Security": {"max-age=60"}}
	if allocs := testing.AllocsPerRun(100, func() { gw.secureHeaders(set) }); allocs != 0 {
		t.Errorf("%v allocations for a response with every header set, want 0", allocs)
	}
	clear(h)
	h.Set("X-Frame-Options", "DENY") // the app's own is kept
	gw.secureHeaders(h)
	next := http.Header{}
	gw.secureHeaders(next)
	h.Add("X-Content-Type-Options", "extra")
	h["Referrer-Policy"][0] = "no-referrer"
	for name, want := range map[string][]string{
		"X-Content-Type-Options":    {"nosniff", "extra"},
		"X-Frame-Options":           {"DENY"},
		"Referrer-Policy":           {"no-referrer"},
		"Strict-Transport-Security": {"max-age=31536000"},
	} {
		if got := h[name]; !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	g.HSTSMaxAge = 60
	later := http.Header{}
	gw.secureHeaders(later)
	if got := later.Get("Strict-Transport-Security"); got != "max-age=60" {
		t.Errorf("HSTS after max-age changed to 60: %q", got)
	}
	g.HSTSMaxAge = 31536000
	for name, want := range map[string]string{
		"X-Content-Type-Options":    "nosniff",
		"X-Frame-Options":           "SAMEORIGIN",
		"Referrer-Policy":           "strict-origin-when-cross-origin",
		"Strict-Transport-Security": "max-age=31536000",
	} {
		if got := next[name]; len(got) != 1 || got[0] != want {
			t.Errorf("the next response's %s: %q, want %q", name, got, want)
		}
	}
}

// TestReplacedResponsesAreLoggedOnceASecond: a client can make an app
// with DEBUG on answer a debug page with every request (any unknown URL):
// each is replaced, but the log gets one line a second, counting the rest.
func TestReplacedResponsesAreLoggedOnceASecond(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	g := &Guard{}
	if err := g.Prepare(zap.New(core)); err != nil {
		t.Fatal(err)
	}
	g.logs.debugPage.Every = time.Hour // (the test may take more than a second)
	serve := func(status int, page string) {
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(status)
			_, err := w.Write([]byte(page))
			return err
		})
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, httptest.NewRequest("GET", "/page", nil), next); err != nil {
			t.Fatal(err)
		}
		if rec.Body.String() != http.StatusText(status)+"\n" {
			t.Fatalf("not replaced: %q", rec.Body.String())
		}
	}
	for range 5 {
		serve(500, djangoDebug500)
	}
	if n := logs.Len(); n != 1 {
		t.Errorf("%d log lines for 5 replaced responses within a second, want 1", n)
	}
	// another kind of line is not held back by that one
	serve(500, djangoDebug500+strings.Repeat("x", 300<<10))
	if n := logs.FilterMessageSnippet("larger than it checks").Len(); n != 1 {
		t.Errorf("the line about a page too large to check was held back by the debug pages' (%d)", n)
	}
}

// TestForwardedPlaceFromATrustedProxy: a trusted proxy's scheme, port and
// prefix reach the app only when they are what a proxy sets; a prefix
// that makes the app's redirects leave the site (ProxyFix x_prefix) is
// refused with 400. From other peers they are dropped, not judged.
func TestForwardedPlaceFromATrustedProxy(t *testing.T) {
	g := &Guard{}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		trusted bool
		header  string
		value   string
		ok      bool
	}{
		{true, "X-Forwarded-Proto", "https", true},
		{true, "X-Forwarded-Proto", "HTTP, https", true},
		{true, "X-Forwarded-Proto", "javascript", false},
		{true, "X-Scheme", "ftp", false},
		{true, "X-Url-Scheme", "https", true},
		{true, "X-Forwarded-Proto", "wss", true}, // Traefik, for a WebSocket opening
		{true, "X-Forwarded-Proto", "https,", true},
		{true, "Forwarded", `for=192.0.2.1;proto=https`, true},
		{true, "Forwarded", `for=192.0.2.1;Proto="javascript"`, false},
		{true, "Forwarded", `for=192.0.2.1, for=198.51.100.2;proto=javascript`, false},
		{true, "X-Forwarded-Port", "443", true},
		{true, "X-Forwarded-Port", "443, 8443", true},
		{true, "X-Forwarded-Port", "0", false},
		{true, "X-Forwarded-Port", "65536", false},
		{true, "X-Forwarded-Port", "+80", false},
		{true, "X-Forwarded-Port", "80@evil.example", false},
		{true, "X-Forwarded-Prefix", "/app", true},
		{true, "X-Forwarded-Prefix", "", true},
		{true, "X-Forwarded-Prefix", "//evil.example", false},
		{true, "X-Forwarded-Prefix", "/\\evil.example", false},
		{true, "X-Forwarded-Prefix", "https://evil.example", false},
		{true, "X-Forwarded-Prefix", "/app\r\nSet-Cookie: a=b", false},
		{true, "X-Script-Name", "//evil.example", false},
		{false, "X-Forwarded-Prefix", "//evil.example", true},
		{false, "X-Forwarded-Proto", "javascript", true},
	} {
		r := httptest.NewRequest("GET", "http://example.net/", nil)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: tc.trusted}))
		r.Header[tc.header] = []string{tc.value}
		err := g.Check(r)
		var he caddyhttp.HandlerError
		if tc.ok && err != nil || !tc.ok && (!errors.As(err, &he) || he.StatusCode != http.StatusBadRequest) {
			t.Errorf("trusted %v, %s: %q: %v", tc.trusted, tc.header, tc.value, err)
		}
	}
}

// TestOneLargeWriteIsNotHeld: an error page past what the guard checks,
// written in one piece (the engine writes a whole small response at
// once; an app may write 8 MiB), is replaced without being copied first:
// the copy, made before the bound was looked at, was outside the budget
// of pages held.
func TestOneLargeWriteIsNotHeld(t *testing.T) {
	body := bytes.Repeat([]byte("<p>x</p>"), 1<<20) // 8 MiB
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rec, _ := guardedResponse(t, 64<<10, 500, http.Header{"Content-Type": {"text/html"}}, body, len(body))
	runtime.ReadMemStats(&after)
	if rec.Body.Len() >= len(body) || bytes.Contains(rec.Body.Bytes(), []byte("<p>x</p><p>x</p>")) {
		t.Errorf("the page was sent (%d bytes), not replaced", rec.Body.Len())
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > uint64(len(body))/2 {
		t.Errorf("%d bytes allocated for a page of %d past the scan limit: it was copied", grew, len(body))
	}
}
