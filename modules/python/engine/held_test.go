package engine

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/protocol"
)

// unlimited is a held budget that never runs out, for tests of one spool.
func unlimited() *heldBudget { return &heldBudget{memLimit: 1 << 62, diskLimit: 1 << 62} }

// withHeld sets the process's held budget for the test.
func withHeld(t *testing.T, b *heldBudget) {
	old := held
	held = b
	t.Cleanup(func() { held = old })
}

// TestSpoolsShareTheHeldBudget: a spool keeps in memory only what the
// shared budget allows, spills the rest, and once the disk budget is spent
// waits for its own consumer, unless it holds nothing unread; everything
// taken is given back as it is read, or when the spool is dropped.
func TestSpoolsShareTheHeldBudget(t *testing.T) {
	b := &heldBudget{memLimit: 100, diskLimit: 300}
	a := newSpool(1000, 1<<20, b)
	chunk := bytes.Repeat([]byte{'a'}, 60)
	for i := 0; i < 3; i++ { // 60 in memory, then 120 on disk (the file, once used, takes all)
		if _, err := a.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if b.mem.Load() != 60 || b.disk.Load() != 120 {
		t.Fatalf("held %d in memory and %d on disk, want 60 and 120", b.mem.Load(), b.disk.Load())
	}
	// another spool finds the disk budget nearly spent: its first chunk
	// goes through anyway (nothing of its own unread), its second waits
	// for its consumer
	other := newSpool(0, 1<<20, b)
	big := bytes.Repeat([]byte{'b'}, 200)
	if _, err := other.Write(big); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan struct{})
	go func() {
		_, _ = other.Write(big)
		close(wrote)
	}()
	select {
	case <-wrote:
		t.Fatal("a spool wrote past the spent disk budget while it held unread data")
	case <-time.After(200 * time.Millisecond):
	}
	if got, _, err := other.Next(); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("the waiting spool's consumer: %q %v", got, err)
	}
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("the spool still waits after its consumer read")
	}
	// read a to its end, drop other: nothing stays counted
	a.CloseWithError(nil)
	var n int
	for {
		got, _, err := a.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n += len(got)
	}
	other.Discard()
	a.Close()
	if n != 180 || b.mem.Load() != 0 || b.disk.Load() != 0 {
		t.Fatalf("read %d of 180; still held %d in memory and %d on disk", n, b.mem.Load(), b.disk.Load())
	}
}

// stalledWriter is a client that takes nothing until release is closed.
type stalledWriter struct {
	*httptest.ResponseRecorder
	release chan struct{}
}

func (s *stalledWriter) Write(p []byte) (int, error) {
	<-s.release
	return s.ResponseRecorder.Write(p)
}

// TestCopiedAnswersStayWithinTheHeldBudget: answers copied for clients that
// do not read (an HTTP/2 client's many streams) stop at the held budget;
// past it, an answer goes out while its worker waits. Each copy was held
// whatever the others held: 250 streams of a connection, 250 copies.
func TestCopiedAnswersStayWithinTheHeldBudget(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 3 << 20, diskLimit: 1 << 30})
	p, far := onePool(t)
	page := make([]byte, 1<<20)
	go func() { // the worker: a 1 MiB page to every request
		fr := protocol.NewReader(far)
		for {
			h, _, err := fr.Next()
			if err != nil {
				return
			}
			out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00"))
			out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, page)
			if _, err := far.Write(out); err != nil {
				return
			}
		}
	}()
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &stalledWriter{httptest.NewRecorder(), release}
			if err := p.Serve(w, httptest.NewRequest(http.MethodGet, "/page", nil), &Request{}); err != nil {
				t.Errorf("Serve: %v", err)
			}
		}()
	}
	// three copies held, the fourth answer waits on its client with the
	// worker, the fifth request waits for the worker: and it stays so
	queued := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.waiters)
	}
	deadline := time.Now().Add(10 * time.Second)
	for held.mem.Load() != 3<<20 || queued() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("held %d bytes with %d requests queued; want 3 MiB held and the fourth answer keeping the worker", held.mem.Load(), queued())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if held.mem.Load() != 3<<20 || queued() != 1 {
		t.Fatalf("then %d bytes held with %d requests queued; want 3 MiB and one", held.mem.Load(), queued())
	}
	close(release)
	wg.Wait()
	if held.mem.Load() != 0 {
		t.Fatalf("%d bytes still counted once every answer went out", held.mem.Load())
	}
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
