package engine

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// withHeld sets the process's held budget for the test.
func withHeld(t *testing.T, b *heldBudget) {
	old := held
	held = b
	t.Cleanup(func() { held = old })
}

// TestRequestBodiesShareTheHeldBudget: request bodies Caddy buffers count
// in the held budget: in memory while it allows, then in a file, and past
// its disk part a body is refused with 503 (Unavailable), not held. Each
// body had max_body (100 MiB) as its only bound: slow uploads on many
// connections held as many bodies as their clients pleased.
func TestRequestBodiesShareTheHeldBudget(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 100 << 10, diskLimit: 300 << 10})
	read := func(size int) (*Body, error) {
		return ReadBody(httptest.NewRequest(http.MethodPost, "/upload", bytes.NewReader(bytes.Repeat([]byte{'x'}, size))), 100<<20)
	}
	small, err := read(60 << 10)
	if err != nil || small.file != nil || held.mem.Load() != 60<<10 {
		t.Fatalf("a 60 KiB body: %v, in a file %v, %d held in memory", err, small.file != nil, held.mem.Load())
	}
	// the memory budget is spent at 100 KiB: the next body goes to a file
	big, err := read(200 << 10)
	if err != nil || big.file == nil || held.disk.Load() != 200<<10 || held.mem.Load() != 60<<10 {
		t.Fatalf("a 200 KiB body: %v, in a file %v, held %d in memory and %d on disk", err, big != nil && big.file != nil, held.mem.Load(), held.disk.Load())
	}
	if data, _ := io.ReadAll(big.reader()); len(data) != 200<<10 || bytes.Count(data, []byte{'x'}) != 200<<10 {
		t.Fatalf("the spilled body reads back %d bytes", len(data))
	}
	// the disk budget would pass 300 KiB: refused
	if _, err := read(200 << 10); FailureOf(err) != Unavailable {
		t.Fatalf("a body past the held budget: %v, want Unavailable", err)
	}
	if held.disk.Load() != 200<<10 {
		t.Fatalf("the refused body left %d on disk counted", held.disk.Load()-200<<10)
	}
	small.Close()
	big.Close()
	if held.mem.Load() != 0 || held.disk.Load() != 0 {
		t.Fatalf("closed bodies still count %d in memory and %d on disk", held.mem.Load(), held.disk.Load())
	}
	// and with room again, the same body is taken
	again, err := read(200 << 10)
	if err != nil {
		t.Fatalf("a body once the budget is free: %v", err)
	}
	again.Close()
}

// unreadBody is a request body that records whether anything read it.
type unreadBody struct {
	io.Reader
	read bool
}

func (u *unreadBody) Read(p []byte) (int, error) { u.read = true; return u.Reader.Read(p) }

// TestBodyPastTheBudgetIsNotRead: a body whose declared length does not
// fit in what the held budget has left is refused before any of it is
// read, so a client that waits for 100 Continue never uploads it.
func TestBodyPastTheBudgetIsNotRead(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 100 << 10, diskLimit: 300 << 10})
	held.disk.Store(250 << 10) // others' bodies
	defer held.disk.Store(0)
	body := &unreadBody{Reader: bytes.NewReader(make([]byte, 200<<10))}
	r := httptest.NewRequest(http.MethodPost, "/upload", body)
	r.ContentLength = 200 << 10
	if _, err := ReadBody(r, 100<<20); FailureOf(err) != Unavailable || body.read {
		t.Fatalf("a 200 KiB body with 150 KiB left: %v, read %v; want Unavailable, unread", err, body.read)
	}
	fitting := &unreadBody{Reader: bytes.NewReader(make([]byte, 100<<10))}
	r = httptest.NewRequest(http.MethodPost, "/upload", fitting)
	r.ContentLength = 100 << 10
	b, err := ReadBody(r, 100<<20)
	if err != nil || !fitting.read {
		t.Fatalf("a 100 KiB body with 150 KiB left: %v", err)
	}
	b.Close()
}
