package guard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func TestHeldPagesTake(t *testing.T) {
	const k = 1 << 10
	b := heldPages{limit: 64 * k}
	for _, step := range []struct {
		name         string
		n, had, size int
		ok           bool
		after        int64 // the count after the step
	}{
		{"a large page within three quarters", 40 * k, 0, 40 * k, true, 40 * k},
		{"a small page", 10 * k, 0, 10 * k, true, 50 * k},
		{"a large page past three quarters", 20 * k, 0, 20 * k, false, 50 * k},
		{"more of the first page past three quarters", 10 * k, 40 * k, 45 * k, false, 50 * k},
		{"a small page in the last quarter", 8 * k, 0, 8 * k, true, 58 * k},
		{"a small page whose buffer doubled past 16 KiB", 2 * k, 8 * k, 9 * k, true, 60 * k},
		{"a small page growing large there", 9 * k, 10 * k, 17 * k, false, 60 * k},
		{"a small page past the limit", 5 * k, 0, 5 * k, false, 60 * k},
	} {
		if ok := b.take(step.n, step.had, step.size); ok != step.ok || b.n.Load() != step.after {
			t.Fatalf("%s: take(%d, %d, %d) = %v, count %d; want %v, %d", step.name, step.n, step.had, step.size, ok, b.n.Load(), step.ok, step.after)
		}
	}
	b.give(60 * k)
	if !b.take(150*k, 0, 150*k) || !b.take(50*k, 150*k, 200*k) {
		t.Errorf("a page held alone was refused past the limit (a scan_limit larger than it)")
	}
	if b.take(1, 0, 1) {
		t.Errorf("a second page was taken while one alone is past the limit")
	}
}

// pageHandler answers status with a text page of size bytes, and tells
// written once the page is written.
func pageHandler(status, size int, written chan<- struct{}) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(strings.Repeat("x", size)))
		if written != nil {
			written <- struct{}{}
		}
		return nil
	})
}

// blockedWriter is a client that takes nothing until unblocked.
type blockedWriter struct {
	*httptest.ResponseRecorder
	unblock chan struct{}
}

func (w blockedWriter) Write(p []byte) (int, error) {
	<-w.unblock
	return w.ResponseRecorder.Write(p)
}

// TestGuardHoldsErrorPagesWithinItsLimit: error pages held for clients
// that take nothing count against pagesHeld; past it a page is replaced,
// unread, keeping its status; the memory comes back once a client has its
// page, and from a handler that panicked.
func TestGuardHoldsErrorPagesWithinItsLimit(t *testing.T) {
	saved := pagesHeld.limit
	pagesHeld.limit = 160 << 10
	t.Cleanup(func() { pagesHeld.limit = saved })
	if pagesHeld.n.Load() != 0 {
		t.Fatalf("%d bytes held before the test", pagesHeld.n.Load())
	}
	g := &Guard{}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	// a first client takes nothing of its 100 KiB page
	stalled := blockedWriter{httptest.NewRecorder(), make(chan struct{})}
	written := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- g.ServeHTTP(stalled, httptest.NewRequest("GET", "/missing", nil), pageHandler(404, 100<<10, written))
	}()
	<-written
	if n := pagesHeld.n.Load(); n < 100<<10 {
		t.Fatalf("a held 100 KiB page counts %d bytes", n)
	}
	// a second page would pass the limit: the plain page, status kept
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, httptest.NewRequest("GET", "/other", nil), pageHandler(404, 100<<10, nil)); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 404 || rec.Body.String() != "Not Found\n" {
		t.Errorf("a page past the limit: %d, %d bytes; want the plain 404", rec.Code, rec.Body.Len())
	}
	// a small one still fits in the last quarter, even written in two
	// pieces whose buffer grows past 16 KiB (a page is judged by its size)
	rec = httptest.NewRecorder()
	if err := g.ServeHTTP(rec, httptest.NewRequest("GET", "/small", nil), caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(422)
		_, _ = w.Write([]byte(strings.Repeat("j", 10<<10)))
		_, _ = w.Write([]byte(strings.Repeat("k", 1<<10)))
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 422 || rec.Body.Len() != 11<<10 {
		t.Errorf("a small page beside the held one: %d, %d bytes; want the app's 422 of 11 KiB", rec.Code, rec.Body.Len())
	}
	close(stalled.unblock)
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if stalled.Code != 404 || stalled.Body.Len() != 100<<10 {
		t.Errorf("the stalled client got %d, %d bytes; want the app's 404 of 100 KiB", stalled.Code, stalled.Body.Len())
	}
	if n := pagesHeld.n.Load(); n != 0 {
		t.Errorf("%d bytes still counted once every client had its page", n)
	}
	// a handler that panics with a page held gives its memory back
	func() {
		defer func() { _ = recover() }()
		_ = g.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/panic", nil), caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(500)
			_, _ = w.Write(make([]byte, 10<<10))
			panic("the app's adapter failed")
		}))
	}()
	if n := pagesHeld.n.Load(); n != 0 {
		t.Errorf("%d bytes still counted after a handler panicked with a page held", n)
	}
}
