package engine

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// noSpillBound is a spool's own bound on disk high enough that only the
// held budget bounds it.
const noSpillBound = 1 << 30

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
	clients := 0
	read := func(size int) (*Body, error) { // each from a client of its own (the per-client share is another test's)
		clients++
		r := httptest.NewRequest(http.MethodPost, "/upload", bytes.NewReader(bytes.Repeat([]byte{'x'}, size)))
		r.RemoteAddr = fmt.Sprintf("198.51.100.%d:4000", clients)
		return readBody(r, 100<<20, "", nil)
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
	if _, err := readBody(r, 100<<20, "", nil); FailureOf(err) != Unavailable || body.read {
		t.Fatalf("a 200 KiB body with 150 KiB left: %v, read %v; want Unavailable, unread", err, body.read)
	}
	fitting := &unreadBody{Reader: bytes.NewReader(make([]byte, 100<<10))}
	r = httptest.NewRequest(http.MethodPost, "/upload", fitting)
	r.ContentLength = 100 << 10
	b, err := readBody(r, 100<<20, "", nil)
	if err != nil || !fitting.read {
		t.Fatalf("a 100 KiB body with 150 KiB left: %v", err)
	}
	b.Close()
}

// TestSpoolMemoryCountsInTheHeldBudget: what a response's spool keeps in
// memory counts in the held budget until its consumer is done with it (the
// chunk last handed out included), and past the budget the spool goes to
// its file at once rather than wait.
func TestSpoolMemoryCountsInTheHeldBudget(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 100 << 10, diskLimit: 1 << 30})
	first := newSpool(streamMemLimit, noSpillBound)
	defer first.Discard()
	first.Write(bytes.Repeat([]byte{'a'}, 80<<10))
	if first.file != nil || held.mem.Load() != 80<<10 {
		t.Fatalf("80 KiB with 100 KiB free: in a file %v, %d held", first.file != nil, held.mem.Load())
	}
	second := newSpool(streamMemLimit, noSpillBound)
	defer second.Discard()
	second.Write(bytes.Repeat([]byte{'b'}, 80<<10)) // does not wait: to the file
	if second.file == nil || held.mem.Load() != 80<<10 {
		t.Fatalf("80 KiB past the budget: in a file %v, %d held", second.file != nil, held.mem.Load())
	}
	first.CloseWithError(nil)
	if chunk, _, err := first.Next(); err != nil || len(chunk) != 80<<10 || held.mem.Load() != 80<<10 {
		t.Fatalf("the chunk handed out: %d bytes, %v; %d held (it must count while written)", len(chunk), err, held.mem.Load())
	}
	if _, _, err := first.Next(); err != io.EOF || held.mem.Load() != 0 {
		t.Fatalf("the end: %v, %d still held", err, held.mem.Load())
	}
	second.CloseWithError(nil)
	got := readSpool(t, second) // its read buffer counts while it reads
	if len(got) != 80<<10 || bytes.Count(got, []byte{'b'}) != 80<<10 || held.mem.Load() != spillReadSize {
		t.Fatalf("the spilled spool read back %d bytes; %d held", len(got), held.mem.Load())
	}
	second.Close()
	if held.mem.Load() != 0 {
		t.Fatalf("done spools still count %d", held.mem.Load())
	}
	// a consumer that leaves gives back what was never read
	gone := newSpool(streamMemLimit, noSpillBound)
	gone.Write(make([]byte, 50<<10))
	gone.Discard()
	if held.mem.Load() != 0 {
		t.Fatalf("a discarded spool still counts %d", held.mem.Load())
	}
}

// TestSpoolHoldsWhatItCounts: a response written in tiny pieces (an event
// stream, a CSV a row at a time) costs Caddy about what its spool counts in
// the held budget, and empty pieces cost nothing. Each write used to keep a
// chunk of its own: 200,000 one-byte writes counted 200 KB and held about
// 8 MB (the copies' smallest allocations and their slice headers), and
// empty writes counted nothing, without bound.
func TestSpoolHoldsWhatItCounts(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 64 << 20, diskLimit: 1 << 30})
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	for _, c := range []struct {
		name   string
		piece  []byte
		writes int
	}{
		{"one byte", []byte{'x'}, 200_000},
		{"an event", []byte("data: 1\n\n"), 50_000},
		{"empty", nil, 200_000},
	} {
		t.Run(c.name, func(t *testing.T) {
			sp := newSpool(streamMemLimit, noSpillBound)
			defer sp.Discard()
			base := heap()
			for range c.writes {
				if _, err := sp.Write(c.piece); err != nil {
					t.Fatal(err)
				}
			}
			grown, counted := heap()-base, held.mem.Load()
			written := int64(len(c.piece) * c.writes)
			t.Logf("%d writes of %d bytes: %d KiB counted, the heap grew by %d KiB", c.writes, len(c.piece), counted>>10, grown>>10)
			if counted < written || counted > written+written/8+minChunk {
				t.Errorf("%d bytes written, %d counted", written, counted)
			}
			if grown > counted+counted/8+32<<10 {
				t.Errorf("%d bytes counted held %d KiB of heap", counted, grown>>10)
			}
			runtime.KeepAlive(sp)
			sp.CloseWithError(nil)
			if got := readSpool(t, sp); int64(len(got)) != written || !bytes.Equal(got[:len(c.piece)], c.piece) {
				t.Errorf("read back %d of %d bytes", len(got), written)
			}
			sp.Close()
			if held.mem.Load() != 0 {
				t.Errorf("%d still counted once read", held.mem.Load())
			}
		})
	}
}

// stalledClient is a response writer whose body writes wait until the
// test lets them through, as a client that reads nothing.
type stalledClient struct {
	*httptest.ResponseRecorder
	through chan struct{}
	writing chan struct{} // a write began
	once    sync.Once
}

func (c *stalledClient) Write(p []byte) (int, error) {
	c.once.Do(func() { close(c.writing) })
	<-c.through
	return c.ResponseRecorder.Write(p)
}

// TestStalledClientsShareTheHeldBudget: answers waiting for clients that
// read nothing hold, together, no more memory than the held budget: an
// HTTP/2 client opening many streams to a large page made Caddy keep a
// copy of the page per stream (a one-frame page) or a megabyte of it (a
// streamed one). The rest waits on disk, the worker is free for others
// meanwhile, and every client gets its answer whole once it reads.
func TestStalledClientsShareTheHeldBudget(t *testing.T) {
	const budget = 2 << 20
	withHeld(t, &heldBudget{memLimit: budget, diskLimit: 1 << 30})
	const clients = 16
	page := bytes.Repeat([]byte("0123456789abcdef"), (900<<10)/16) // one frame
	long := bytes.Repeat([]byte("fedcba9876543210"), (3<<20)/16)   // three frames and more
	p, far := onePool(t)
	go func() { // the worker answers each request as it comes
		fr := protocol.NewReader(bufio.NewReaderSize(far, 64<<10))
		for {
			h, _, err := fr.Next()
			if err != nil {
				return
			}
			body := page
			if h.Stream%2 == 0 {
				body = long
			}
			// written frame by frame, so the test itself keeps no copy
			out := net.Buffers{protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00Content-Type\x00text/plain"))}
			for len(body) > 0 {
				n, flags := min(len(body), protocol.MaxPayload), uint8(0)
				if n == len(body) {
					flags = protocol.FlagEnd
				}
				head := make([]byte, protocol.HeaderSize)
				protocol.PutHeader(head, protocol.Header{Length: uint32(n), Type: protocol.ResponseBody, Flags: flags, Stream: h.Stream})
				out = append(out, head, body[:n])
				body = body[n:]
			}
			if _, err := out.WriteTo(far); err != nil {
				return
			}
		}
	}()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	through := make(chan struct{})
	stalled := make([]*stalledClient, clients)
	done := make(chan error, clients)
	for i := range stalled {
		c := &stalledClient{ResponseRecorder: httptest.NewRecorder(), through: through, writing: make(chan struct{})}
		stalled[i] = c
		go func() {
			done <- p.Serve(c, httptest.NewRequest("GET", "/page", nil), &Request{Timeout: 30 * time.Second})
		}()
		select { // its answer is taken from the worker, which is free for the next
		case <-c.writing:
		case <-time.After(10 * time.Second):
			t.Fatalf("client %d: no answer began while %d clients before it stalled", i, i)
		}
	}
	var during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&during)
	grown := int64(during.HeapAlloc) - int64(before.HeapAlloc)
	if held := held.mem.Load(); held > budget {
		t.Errorf("%d stalled clients count %d bytes, over the %d budget", clients, held, budget)
	}
	// each stalled answer may keep a little of its own (a read buffer, its
	// goroutines); 16 copies of the pages would be 30 MiB
	if grown > budget+4<<20 {
		t.Errorf("%d stalled clients grew the heap by %d KiB; the budget is %d KiB", clients, grown>>10, budget>>10)
	}
	close(through)
	for range stalled {
		if err := <-done; err != nil {
			t.Fatalf("Serve: %v", err)
		}
	}
	for i, c := range stalled {
		want := page
		if c.Body.Len() == len(long) {
			want = long
		}
		if c.Code != 200 || !bytes.Equal(c.Body.Bytes(), want) {
			t.Errorf("client %d: status %d, %d bytes, not the page", i, c.Code, c.Body.Len())
		}
	}
	if held.mem.Load() != 0 {
		t.Errorf("%d bytes still counted once every answer was sent", held.mem.Load())
	}
}

// TestAnswersWithoutATemporaryFile: with the held budget spent and no
// temporary file to be had (an unwritable TMPDIR, no descriptor left), an
// answer is kept in memory past the budget, within its own bound, rather
// than cut off or given to its client with the worker still held: a
// one-frame answer for a client that reads nothing held the worker, and a
// streamed answer lost its first frame and still ended as complete.
func TestAnswersWithoutATemporaryFile(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 4 << 20, diskLimit: 1 << 30})
	held.mem.Store(held.memLimit) // spent by others
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "gone"))
	p, far := onePool(t)
	first, second := bytes.Repeat([]byte("A"), 100<<10), bytes.Repeat([]byte("B"), 100<<10)
	go func() {
		fr := protocol.NewReader(bufio.NewReaderSize(far, 64<<10))
		for {
			h, _, err := fr.Next()
			if err != nil {
				return
			}
			out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK"))
			if h.Stream%2 == 1 { // one frame
				out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, first)
			} else { // streamed: the budget comes back between its frames
				out = protocol.AppendFrame(out, protocol.ResponseBody, 0, h.Stream, first)
				if _, err := far.Write(out); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
				held.mem.Add(-held.memLimit)
				out = protocol.AppendFrame(nil, protocol.ResponseBody, protocol.FlagEnd, h.Stream, second)
			}
			if _, err := far.Write(out); err != nil {
				return
			}
		}
	}()
	stalled := &stalledClient{ResponseRecorder: httptest.NewRecorder(), through: make(chan struct{}), writing: make(chan struct{})}
	stalledDone := make(chan error, 1)
	go func() {
		stalledDone <- p.Serve(stalled, httptest.NewRequest("GET", "/one-frame", nil), &Request{Timeout: 30 * time.Second})
	}()
	<-stalled.writing
	streamed := httptest.NewRecorder()
	done := make(chan error, 1)
	go func() { // the worker is free for it while the first client stalls
		done <- p.Serve(streamed, httptest.NewRequest("GET", "/streamed", nil), &Request{Timeout: 30 * time.Second})
	}()
	select {
	case err := <-done:
		if err != nil || !bytes.Equal(streamed.Body.Bytes(), append(append([]byte(nil), first...), second...)) {
			t.Errorf("the streamed answer: %v, %d bytes, starting %q", err, streamed.Body.Len(), streamed.Body.Bytes()[:min(4, streamed.Body.Len())])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client that reads nothing holds the worker")
	}
	close(stalled.through)
	if err := <-stalledDone; err != nil || !bytes.Equal(stalled.Body.Bytes(), first) {
		t.Errorf("the one-frame answer: %v, %d bytes", err, stalled.Body.Len())
	}
	if held.mem.Load() != 0 {
		t.Errorf("%d bytes still counted once both answers were sent", held.mem.Load())
	}
}

// TestASGIStreamWhoseSpoolFailedIsEnded: an ASGI stream whose spool fails
// (no temporary file to be had once its part of memory is full) has its
// app told, as when its client leaves, and gives its place among the
// streams back once the app ended it: an event stream has no end, and its
// app went on sending into nothing, holding its channel and its place, its
// client waiting for good.
func TestASGIStreamWhoseSpoolFailedIsEnded(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 64 << 20, diskLimit: 1 << 30})
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "gone"))
	p, far := onePoolOf(t, "asgi")
	cancelled := make(chan struct{})
	go func() { // an endless stream of 256 KiB frames, ended once cancelled
		fr := protocol.NewReader(bufio.NewReaderSize(far, 64<<10))
		h, _, err := fr.Next()
		if err != nil {
			return
		}
		sid := h.Stream
		go func() {
			for {
				h, _, err := fr.Next()
				if err != nil {
					return
				}
				if h.Type == protocol.Cancel {
					close(cancelled)
					return
				}
			}
		}()
		chunk := make([]byte, 256<<10)
		out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, sid, []byte("200 OK"))
		for {
			select {
			case <-cancelled:
				far.Write(protocol.AppendFrame(nil, protocol.ResponseBody, protocol.FlagEnd, sid, nil))
				return
			default:
			}
			if _, err := far.Write(protocol.AppendFrame(out, protocol.ResponseBody, 0, sid, chunk)); err != nil {
				return
			}
			out = out[:0]
		}
	}()
	serveStalled(t, p, "/events", 30*time.Second)
	t.Cleanup(func() { far.Close() }) // (first: an app never told would stream for good)
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the app of a stream whose spool failed was not told")
	}
	waitUntil(t, "the stream's place given back", func() bool { return p.longLived[streamedResponse].Load() == 0 })
}

// TestSpoolDiskCountsInTheHeldBudget: what a spool keeps in its file counts
// in the held budget until the consumer reads it; past the budget the
// producer waits for its consumer instead of spilling more (offer says so
// without waiting), and with nothing of its own unread it hands its chunk
// over in memory and waits until the consumer took it.
func TestSpoolDiskCountsInTheHeldBudget(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 0, diskLimit: 300 << 10}) // answers may take 225 KiB of it
	sp := newSpool(streamMemLimit, noSpillBound)
	defer sp.Discard()
	if taken, err := sp.offer(bytes.Repeat([]byte{'a'}, 200<<10)); !taken || err != nil || sp.file == nil || held.disk.Load() != 200<<10 {
		t.Fatalf("200 KiB with 225 KiB of disk: taken %v, %v, in a file %v, %d counted", taken, err, sp.file != nil, held.disk.Load())
	}
	if taken, _ := sp.offer(bytes.Repeat([]byte{'b'}, 100<<10)); taken || held.disk.Load() != 200<<10 {
		t.Fatalf("100 KiB more past the budget: taken %v, %d counted", taken, held.disk.Load())
	}
	wrote := make(chan struct{})
	go func() { // waits for the consumer to read some
		sp.Write(bytes.Repeat([]byte{'b'}, 100<<10))
		sp.CloseWithError(nil)
		close(wrote)
	}()
	select {
	case <-wrote:
		t.Fatal("the write past the budget did not wait")
	case <-time.After(300 * time.Millisecond):
	}
	var got []byte
	for {
		chunk, _, err := sp.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if d := held.disk.Load(); d > held.diskLimit-held.diskLimit/4 {
			t.Fatalf("%d counted on disk, past the answers' %d of the budget", d, held.diskLimit-held.diskLimit/4)
		}
		got = append(got, chunk...)
	}
	<-wrote
	if !bytes.Equal(got, append(bytes.Repeat([]byte{'a'}, 200<<10), bytes.Repeat([]byte{'b'}, 100<<10)...)) || held.disk.Load() != 0 {
		t.Fatalf("read back %d bytes (in order: %v); %d still counted", len(got), bytes.HasPrefix(got, []byte{'a'}), held.disk.Load())
	}
	sp.Close()

	// the disk spent by others, nothing unread: handed over in memory
	held.disk.Store(held.diskLimit)
	defer held.disk.Store(0)
	over := newSpool(streamMemLimit, noSpillBound)
	defer over.Discard()
	wrote = make(chan struct{})
	go func() {
		over.Write([]byte("handed over"))
		close(wrote)
	}()
	select {
	case <-wrote:
		t.Fatal("a chunk past the budget was taken without its consumer")
	case <-time.After(300 * time.Millisecond):
	}
	if chunk, _, err := over.Next(); err != nil || string(chunk) != "handed over" {
		t.Fatalf("the handed-over chunk: %q %v", chunk, err)
	}
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("the producer still waits once its chunk was taken")
	}
}

// TestSpoolGivesBackWhatWasRead: a spool's file gives its blocks back as
// they are read, so a response its client reads a little slower than the
// app writes (the file never caught up, never reset) does not grow its
// file to the whole response.
func TestSpoolGivesBackWhatWasRead(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 0, diskLimit: 1 << 30})
	t.Setenv("TMPDIR", t.TempDir())
	sp := newSpool(streamMemLimit, noSpillBound)
	defer sp.Discard()
	sp.Write(bytes.Repeat([]byte{'x'}, 4<<20))
	for read := 0; read < 3<<20; {
		chunk, _, err := sp.Next()
		if err != nil {
			t.Fatal(err)
		}
		read += len(chunk)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(sp.file.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if onDisk := st.Blocks * 512; onDisk > 1<<20+punchUnit {
		t.Fatalf("with 1 MiB of 4 unread the file holds %d KiB", onDisk>>10)
	}
	// the budget counts what the file holds, given back as it is punched
	if counted := held.disk.Load(); counted < 1<<20 || counted > 1<<20+punchUnit {
		t.Fatalf("with 1 MiB of 4 unread the budget counts %d KiB", counted>>10)
	}
}

// TestAnswersLeaveDiskForBodies: one answer keeps at most a sixteenth of
// the held budget's disk part, and answers together three quarters, so
// that a download to a client that reads nothing cannot spend what request
// bodies need (a body past the budget is refused; an answer only slowed).
func TestAnswersLeaveDiskForBodies(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 0, diskLimit: 1 << 20})
	t.Setenv("TMPDIR", t.TempDir())
	one := newSpool(streamMemLimit, held.answerSpill())
	defer one.Discard()
	if taken, _ := one.offer(make([]byte, 64<<10)); !taken {
		t.Fatal("an answer's first 64 KiB (its sixteenth of 1 MiB) refused")
	}
	if taken, _ := one.offer(make([]byte, 1)); taken {
		t.Fatal("one answer took more than a sixteenth of the disk budget")
	}
	held.disk.Add(650 << 10) // others' answers and bodies: 714 KiB in all
	other := newSpool(streamMemLimit, held.answerSpill())
	defer other.Discard()
	if taken, _ := other.offer(make([]byte, 64<<10)); taken {
		t.Fatal("answers took more than three quarters of the disk budget")
	}
	body, err := readBody(httptest.NewRequest(http.MethodPost, "/upload", bytes.NewReader(make([]byte, 200<<10))), 100<<20, "", nil)
	if err != nil {
		t.Fatalf("a 200 KiB body with 310 KiB of disk left: %v", err)
	}
	body.Close()
	held.disk.Add(-650 << 10)
}

// spillFilesOnDisk sums what the process's open spool files hold on disk.
func spillFilesOnDisk(t *testing.T) int64 {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.Contains(target, "hearth-response-") {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/self/fd/"+e.Name(), &st) == nil {
			sum += st.Blocks * 512
		}
	}
	return sum
}

// slowClient takes a response a write at a time, pausing before each.
type slowClient struct {
	*httptest.ResponseRecorder
	pause   time.Duration
	mu      sync.Mutex
	maxDisk int64 // the most the spool files held on disk, seen at a write
	t       *testing.T
}

func (c *slowClient) Write(p []byte) (int, error) {
	time.Sleep(c.pause)
	c.mu.Lock()
	c.maxDisk = max(c.maxDisk, spillFilesOnDisk(c.t), held.disk.Load())
	c.mu.Unlock()
	return c.ResponseRecorder.Write(p)
}

// TestSlowClientPastTheBudgetWaitsWithItsWorker: past the held budget
// (memory and disk) a streamed answer goes at its client's pace, its
// worker waiting for the client instead of the answer filling the disk;
// the worker's timeout does not count the wait (a worker blocked on a
// slow client is not hung). Answers' files had a bound each (1 GiB) but
// none in sum, and a pump that waited ran into its request's timeout and
// had its worker killed.
func TestSlowClientPastTheBudgetWaitsWithItsWorker(t *testing.T) {
	const diskBudget = 256 << 10
	// memory for the file's read buffer, none for the answer's frames
	withHeld(t, &heldBudget{memLimit: spillReadSize, diskLimit: diskBudget})
	t.Setenv("TMPDIR", t.TempDir())
	p, far := onePool(t)
	answer := bytes.Repeat([]byte("0123456789abcdef"), (2<<20)/16)
	go func() {
		fr := protocol.NewReader(bufio.NewReaderSize(far, 64<<10))
		h, _, err := fr.Next()
		if err != nil {
			return
		}
		out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK"))
		for body := answer; len(body) > 0; body = body[min(len(body), 256<<10):] {
			flags := uint8(0)
			if len(body) <= 256<<10 {
				flags = protocol.FlagEnd
			}
			out = protocol.AppendFrame(out, protocol.ResponseBody, flags, h.Stream, body[:min(len(body), 256<<10)])
			if flags == 0 && len(body) == len(answer) {
				// the first part, then 600 ms of work for the rest
				if _, err := far.Write(out); err != nil {
					return
				}
				out = nil
				time.Sleep(600 * time.Millisecond)
			}
		}
		far.Write(out)
	}()
	// 2 MiB taken 100 ms apart in parts of at most 256 KiB: with the
	// app's 600 ms of work ~1.4 s in all, past the 1 s timeout, of which
	// ~0.8 s waiting on the client
	c := &slowClient{ResponseRecorder: httptest.NewRecorder(), pause: 100 * time.Millisecond, t: t}
	if err := p.Serve(c, httptest.NewRequest("GET", "/download", nil), &Request{Timeout: time.Second}); err != nil {
		t.Fatalf("Serve: %v (failure %v)", err, FailureOf(err))
	}
	if !bytes.Equal(c.Body.Bytes(), answer) {
		t.Fatalf("the client got %d bytes of the %d-byte answer", c.Body.Len(), len(answer))
	}
	if c.maxDisk > diskBudget+punchUnit {
		t.Errorf("the answer held %d KiB on disk; the budget is %d KiB", c.maxDisk>>10, diskBudget>>10)
	}
	if held.disk.Load() != 0 || held.mem.Load() != 0 {
		t.Errorf("still counted: %d on disk, %d in memory", held.disk.Load(), held.mem.Load())
	}
}

// TestOneFrameAnswerPastTheWholeBudget: with memory and disk both spent, a
// one-frame answer goes to its client before the worker is given back (as
// through a proxy that does not buffer), whole.
func TestOneFrameAnswerPastTheWholeBudget(t *testing.T) {
	spentBudget(t)
	p, far := onePool(t)
	page := bytes.Repeat([]byte("p"), 300<<10)
	answerFirst(far, func(sid uint32) []byte {
		out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, sid, []byte("200 OK"))
		return protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, sid, page)
	})
	rec := httptest.NewRecorder()
	if err := p.Serve(rec, httptest.NewRequest("GET", "/page", nil), &Request{Timeout: 10 * time.Second}); err != nil || !bytes.Equal(rec.Body.Bytes(), page) {
		t.Fatalf("Serve: %v, %d bytes of %d", err, rec.Body.Len(), len(page))
	}
	if held.mem.Load() != held.memLimit || held.disk.Load() != held.diskLimit {
		t.Fatalf("the answer left %d in memory and %d on disk counted", held.mem.Load()-held.memLimit, held.disk.Load()-held.diskLimit)
	}
}

// spentBudget sets a held budget whose memory and disk others have spent.
func spentBudget(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 1 << 20, diskLimit: 1 << 20})
	held.mem.Store(held.memLimit)
	held.disk.Store(held.diskLimit)
	t.Setenv("TMPDIR", t.TempDir())
}

// streamedAnswer is a response head and n frames of 256 KiB for sid.
func streamedAnswer(sid uint32, n int) []byte {
	out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, sid, []byte("200 OK"))
	chunk := make([]byte, 256<<10)
	for i := 0; i < n; i++ {
		flags := uint8(0)
		if i == n-1 {
			flags = protocol.FlagEnd
		}
		out = protocol.AppendFrame(out, protocol.ResponseBody, flags, sid, chunk)
	}
	return out
}

// answerFirst plays a worker that answers the first request it reads on
// far with what answer makes for its stream.
func answerFirst(far net.Conn, answer func(sid uint32) []byte) {
	go func() {
		h, _, err := protocol.NewReader(bufio.NewReaderSize(far, 64<<10)).Next()
		if err == nil {
			far.Write(answer(h.Stream))
		}
	}()
}

// serveStalled serves a request on p for a client that takes nothing until
// the test ends.
func serveStalled(t *testing.T, p *Pool, path string, timeout time.Duration) *stalledClient {
	c := &stalledClient{ResponseRecorder: httptest.NewRecorder(), through: make(chan struct{}), writing: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = recover() }() // http.ErrAbortHandler: the answer was cut off
		_ = p.Serve(c, httptest.NewRequest("GET", path, nil), &Request{Timeout: timeout})
	}()
	t.Cleanup(func() {
		close(c.through)
		<-done
	})
	return c
}

// TestSlowClientHoldsItsWorkerNoLongerThanItsTimeout: past the held
// budget, a client that takes nothing holds the worker (and the requests
// pipelined behind its answer) for the request's timeout at most: then its
// answer is cut off and the worker drained, not killed. The wait on the
// client was unbounded: a request pipelined behind it waited as long as
// the client did, past its own queue_timeout.
func TestSlowClientHoldsItsWorkerNoLongerThanItsTimeout(t *testing.T) {
	spentBudget(t)
	p := New(Options{Name: "slow", Kind: "wsgi", Pipeline: "auto", Threads: 1, Workers: 1, MaxQueue: 10, QueueTimeout: 5 * time.Second}, zap.NewNop())
	p.state = supervisor.Running
	p.meanDuration = time.Microsecond // so that the next request is pipelined
	_, far := addFakeWorker(t, p)
	fr := protocol.NewReader(bufio.NewReaderSize(far, 64<<10))
	// a first request holds the channel while the stalled one and the
	// next come, so that the next is pipelined behind the stalled one
	first := make(chan error, 1)
	go func() {
		first <- p.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/first", nil), &Request{Timeout: time.Second})
	}()
	h, _, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	serveStalled(t, p, "/download", time.Second)
	waitUntil(t, "the download queued", func() bool { return waiting(p) == 1 })
	next := make(chan error, 1)
	go func() {
		next <- p.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/next", nil), &Request{Timeout: time.Second})
	}()
	waitUntil(t, "the next request queued behind it", func() bool { return waiting(p) == 2 })
	far.Write(protocol.AppendFrame(protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK")), protocol.ResponseBody, protocol.FlagEnd, h.Stream, []byte("first")))
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	download, _, _ := fr.Next()
	pipelined, _, _ := fr.Next()
	go func() {
		far.Write(streamedAnswer(download.Stream, 16))
		far.Write(protocol.AppendFrame(protocol.AppendFrame(nil, protocol.ResponseHead, 0, pipelined.Stream, []byte("200 OK")), protocol.ResponseBody, protocol.FlagEnd, pipelined.Stream, []byte("next")))
	}()
	select {
	case err := <-next:
		if err != nil {
			t.Fatalf("the pipelined request: %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("a request pipelined behind a stalled client's answer waits for it past the answer's 1 s timeout")
	}
	if w := p.workers[0]; w.proc.Signal(syscall.Signal(0)) != nil {
		t.Fatal("the worker was killed")
	}
}

// TestRecycledWorkerWaitingOnAClientStops: a worker retired by its
// max_requests while its answer waits on a client past the held budget is
// stopped at stop_timeout, as one holding a WebSocket: it was kept as long
// as its client trickled, one more process at each recycling.
func TestRecycledWorkerWaitingOnAClientStops(t *testing.T) {
	spentBudget(t)
	p := New(Options{Name: "recycled", Kind: "wsgi", Pipeline: "off", Threads: 1, Workers: 1, MaxQueue: 10, QueueTimeout: time.Minute, StopTimeout: 300 * time.Millisecond}, zap.NewNop())
	p.state = supervisor.Running
	w, far := addFakeWorker(t, p)
	answerFirst(far, func(sid uint32) []byte { return streamedAnswer(sid, 40) })
	c := serveStalled(t, p, "/download", time.Minute)
	select { // its answer has begun
	case <-c.writing:
	case <-time.After(10 * time.Second):
		t.Fatal("the answer did not begin")
	}
	waitUntil(t, "its pump waiting on the client", w.channels[0].unbounded.Load)
	p.mu.Lock()
	p.retireLocked(w, "max_requests", true)
	p.mu.Unlock()
	select {
	case <-w.proc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a recycled worker waiting on a stalled client still runs 5 s after its 300 ms stop_timeout")
	}
}

// TestLargeAnswerGoesAtItsClientsPace: an answer past its own bound on
// disk (a sixteenth of the budget's disk part) goes at its client's pace
// for as long as the client takes it: only waits for the budget, which
// other clients may have spent, count against the request's timeout. A
// 100 MiB download to a client taking 1 MB/s was cut at the timeout.
func TestLargeAnswerGoesAtItsClientsPace(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: spillReadSize, diskLimit: 1 << 20}) // 64 KiB an answer
	t.Setenv("TMPDIR", t.TempDir())
	p, far := onePool(t)
	answerFirst(far, func(sid uint32) []byte { return streamedAnswer(sid, 8) }) // 2 MiB
	// 32 reads of 64 KiB, 60 ms apart: ~2 s, twice the timeout
	c := &slowClient{ResponseRecorder: httptest.NewRecorder(), pause: 60 * time.Millisecond, t: t}
	if err := p.Serve(c, httptest.NewRequest("GET", "/download", nil), &Request{Timeout: time.Second}); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if c.Body.Len() != 8*256<<10 {
		t.Fatalf("the client got %d bytes of 2 MiB", c.Body.Len())
	}
}

// deadlineClient takes nothing, as a stalled client, until the write
// deadline set through its ResponseController passes.
type deadlineClient struct {
	*httptest.ResponseRecorder
	deadline time.Time
}

func (c *deadlineClient) SetWriteDeadline(d time.Time) error { c.deadline = d; return nil }

func (c *deadlineClient) Write(p []byte) (int, error) {
	if c.deadline.IsZero() {
		select {} // (the test fails by its own timeout)
	}
	time.Sleep(time.Until(c.deadline))
	return 0, os.ErrDeadlineExceeded
}

// TestOneFrameAnswerPastTheWholeBudgetWithinItsTimeout: a one-frame answer
// written to its client with the worker held (memory and disk spent) has
// the request's timeout to go: Caddy's write_idle alone let a client that
// takes 64 KiB a minute hold the worker for 16 minutes for 1 MiB.
func TestOneFrameAnswerPastTheWholeBudgetWithinItsTimeout(t *testing.T) {
	spentBudget(t)
	p, far := onePool(t)
	answerFirst(far, func(sid uint32) []byte {
		out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, sid, []byte("200 OK"))
		return protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, sid, make([]byte, 300<<10))
	})
	done := make(chan error, 1)
	go func() {
		done <- p.Serve(&deadlineClient{ResponseRecorder: httptest.NewRecorder()}, httptest.NewRequest("GET", "/page", nil), &Request{Timeout: time.Second})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a client that takes nothing holds the worker past the request's 1 s timeout")
	}
}

// waiting is how many requests wait in p's queue.
func waiting(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiters)
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}

// TestDiskBudgetOnATmpfs: temporary files on a tmpfs are memory, so the
// held budget's disk part there is at most an eighth of the machine's
// memory and a quarter of the tmpfs (1 GiB elsewhere): slow clients made
// Caddy hold a gigabyte of a 2 GiB board's memory in /tmp, which Debian 13
// mounts as a tmpfs.
func TestDiskBudgetOnATmpfs(t *testing.T) {
	for _, tc := range []struct {
		name         string
		size, memory int64
		want         int64
	}{
		{"a 2 GiB board, /tmp half its memory", 1 << 30, 2 << 30, 256 << 20},
		{"a 1 GiB board", 512 << 20, 1 << 30, 128 << 20},
		{"a large server", 16 << 30, 64 << 30, 1 << 30},
		{"a small tmpfs", 128 << 20, 8 << 30, 64 << 20},
		{"a 256 MiB board: the floor", 128 << 20, 256 << 20, 64 << 20},
		{"unknown memory, unbounded tmpfs", 0, 0, 1 << 30},
	} {
		if got := tmpfsBudget(tc.size, tc.memory); got != tc.want {
			t.Errorf("%s: %d MiB, want %d MiB", tc.name, got>>20, tc.want>>20)
		}
	}
	// a tmpfs of 1 GiB (mounted for the test, as root) has a quarter of it;
	// a directory on disk the whole GiB
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	var info syscall.Sysinfo_t
	if err := syscall.Sysinfo(&info); err != nil || int64(info.Totalram)*int64(info.Unit) < 2<<30 {
		t.Skipf("a machine of less than 2 GiB (%v)", err)
	}
	dir := t.TempDir()
	// the tmpfs is mounted in a mount namespace of one thread's own, which
	// ends with the thread: no mount is left behind, even if the test
	// binary is killed
	skip := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // (never unlocked: the thread ends with this goroutine)
		err := syscall.Unshare(syscall.CLONE_NEWNS)
		if err == nil {
			err = syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, "")
		}
		if err == nil {
			err = syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1g,mode=0700")
		}
		if err != nil {
			skip <- err
			return
		}
		defer close(skip)
		if got := diskBudget(dir); got != 256<<20 {
			t.Errorf("on a tmpfs of 1 GiB: %d MiB, want 256", got>>20)
		}
		// in a container of 1 GiB (Caddy sets Go's memory limit from it)
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(1 << 30))
		if got := diskBudget(dir); got != 128<<20 {
			t.Errorf("on a tmpfs of 1 GiB, in 1 GiB: %d MiB, want 128", got>>20)
		}
	}()
	if err := <-skip; err != nil {
		t.Skipf("mounting a tmpfs in a mount namespace of its own: %v", err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(t.TempDir(), &fs); err == nil && fs.Type != tmpfsMagic {
		if got := diskBudget(t.TempDir()); got != 1<<30 {
			t.Errorf("on a disk: %d MiB, want 1024", got>>20)
		}
	}
}

// TestOneClientCannotHoldEveryBody: request bodies count per client too.
// One client uploading slowly on many connections (or an HTTP/2
// connection's streams) filled the whole held budget, and every upload of
// every other client, to every app, was refused with 503 for as long as
// it kept them open. Past a quarter of the budget (which its one body
// alone may pass, up to max_body) its next body is refused with 429,
// before any of it is read when its length is declared, and other clients
// upload as before. Clients are told apart as for the other per-client
// bounds: an IPv4 address, an IPv6 /64, the address Caddy determined
// before the connection's peer; Unix socket peers have no share.
func TestOneClientCannotHoldEveryBody(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 100 << 10, diskLimit: 700 << 10}) // a quarter: 200 KiB
	const maxBody = 300 << 10
	upload := func(remote, clientIP string, size int, declared bool) (*Body, *unreadBody, error) {
		body := &unreadBody{Reader: bytes.NewReader(bytes.Repeat([]byte{'x'}, size))}
		r := httptest.NewRequest(http.MethodPost, "/upload", body)
		r.RemoteAddr = remote
		r.ContentLength = -1 // chunked: nothing declared
		if declared {
			r.ContentLength = int64(size)
		}
		b, err := readBody(r, maxBody, clientIP, nil)
		return b, body, err
	}
	first, _, err := upload("203.0.113.7:40001", "", 150<<10, true)
	if err != nil {
		t.Fatalf("a client's first body: %v", err)
	}
	// the same client on another connection: past its share
	_, unread, err := upload("203.0.113.7:40002", "", 100<<10, true)
	if FailureOf(err) != TooManyRequests || unread.read || !strings.Contains(fmt.Sprint(err), "client 203.0.113.7") {
		t.Fatalf("a declared body past the client's share: %v, read %v; want TooManyRequests, unread", err, unread.read)
	}
	// nothing declared: refused as it arrives, and what it took given back
	if _, _, err := upload("203.0.113.7:40003", "", 100<<10, false); FailureOf(err) != TooManyRequests {
		t.Fatalf("a chunked body past the client's share: %v, want TooManyRequests", err)
	}
	if got := held.mem.Load() + held.disk.Load(); got != 150<<10 {
		t.Fatalf("after the refusals the budget counts %d bytes, want the first body's %d", got, 150<<10)
	}
	// the address Caddy determined (trusted_proxies) comes first
	if _, _, err := upload("198.51.100.9:40004", "203.0.113.7", 100<<10, true); FailureOf(err) != TooManyRequests {
		t.Fatalf("the same client behind a trusted proxy: %v, want TooManyRequests", err)
	}
	// another client uploads as before
	other, _, err := upload("198.51.100.2:40005", "", 150<<10, true)
	if err != nil {
		t.Fatalf("another client's body: %v", err)
	}
	// an IPv6 client is its /64
	v6, _, err := upload("[2001:db8:1:2::1]:40006", "", 120<<10, true)
	if err != nil {
		t.Fatalf("an IPv6 client's body: %v", err)
	}
	if _, _, err := upload("[2001:db8:1:2::99]:40007", "", 100<<10, true); FailureOf(err) != TooManyRequests {
		t.Fatalf("another address of the same /64: %v, want TooManyRequests", err)
	}
	// peers without an address cannot be told apart: no share
	for i := range 2 {
		b, _, err := upload("@", "", 120<<10, true)
		if err != nil {
			t.Fatalf("a Unix socket peer's body %d: %v", i, err)
		}
		defer b.Close()
	}
	// once its body is freed, the client uploads again
	first.Close()
	again, _, err := upload("203.0.113.7:40008", "", 150<<10, true)
	if err != nil {
		t.Fatalf("the client's body once its first was freed: %v", err)
	}
	again.Close()
	other.Close()
	v6.Close()
	// one body alone may pass the share, not a second beside it
	alone, _, err := upload("192.0.2.50:40009", "", 250<<10, false)
	if err != nil {
		t.Fatalf("a client's one body past its share: %v", err)
	}
	if _, _, err := upload("192.0.2.50:40010", "", 1<<10, true); FailureOf(err) != TooManyRequests {
		t.Fatalf("a second body beside one past the share: %v, want TooManyRequests", err)
	}
	alone.Close()
	held.bodiesMu.Lock()
	defer held.bodiesMu.Unlock()
	if len(held.bodies) != 0 {
		t.Fatalf("clients still counted once their bodies were freed: %v", held.bodies)
	}
}

// TestOneClientHoldsABoundedNumberOfBodies: one client may have as many
// request bodies held at once as it may have requests queued and running
// (max_queue_per_client and the pool's channels); the next gets 429
// before any of it is read. Bodies were counted by their bytes only: a
// client trickling a byte into each of thousands of HTTP/2 streams held a
// read buffer and a goroutine for each, and, past the budget's memory, a
// file descriptor each, without nearing its share.
func TestOneClientHoldsABoundedNumberOfBodies(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 100 << 10, diskLimit: 700 << 10})
	pool := New(Options{Name: "bodies", Workers: 1, Threads: 2, MaxQueuePerClient: 1}, zap.NewNop())
	if pool.bodies.limit != 3 {
		t.Fatalf("a pool of 2 channels with max_queue_per_client 1 lets a client hold %d bodies, want 3", pool.bodies.limit)
	}
	if n := New(Options{Name: "unbounded", Workers: 1}, zap.NewNop()).bodies.limit; n != math.MaxInt {
		t.Errorf("without max_queue_per_client a client may hold %d bodies, want no bound", n)
	}
	upload := func(remote string) (*Body, *unreadBody, error) {
		body := &unreadBody{Reader: strings.NewReader("x")}
		r := httptest.NewRequest(http.MethodPost, "/upload", body)
		r.RemoteAddr, r.ContentLength = remote, 1
		b, err := pool.ReadBody(r, 1<<20, "")
		return b, body, err
	}
	var bodies []*Body
	for i := range 3 {
		b, _, err := upload(fmt.Sprintf("203.0.113.7:%d", 40000+i))
		if err != nil {
			t.Fatalf("the client's body %d: %v", i+1, err)
		}
		bodies = append(bodies, b)
	}
	_, unread, err := upload("203.0.113.7:40100")
	if FailureOf(err) != TooManyRequests || unread.read || !strings.Contains(fmt.Sprint(err), "at most 3 at once") {
		t.Fatalf("the client's fourth body: %v, read %v; want TooManyRequests, unread", err, unread.read)
	}
	if reason := refusalReason(err); reason != "client_bodies" {
		t.Errorf("the refusal is counted as %q, want client_bodies", reason)
	}
	other, _, err := upload("198.51.100.2:40101")
	if err != nil {
		t.Fatalf("another client's body: %v", err)
	}
	other.Close()
	// the count is the pool's: the same client's body to another app, whose
	// bound is its own
	elsewhere := New(Options{Name: "other", Workers: 1, Threads: 1, MaxQueuePerClient: 1}, zap.NewNop())
	r := httptest.NewRequest(http.MethodPost, "/upload", strings.NewReader("x"))
	r.RemoteAddr, r.ContentLength = "203.0.113.7:40200", 1
	another, err := elsewhere.ReadBody(r, 1<<20, "")
	if err != nil {
		t.Fatalf("the client's body to another app: %v", err)
	}
	another.Close()
	bodies[0].Close()
	again, _, err := upload("203.0.113.7:40102")
	if err != nil {
		t.Fatalf("the client's body once one of its others ended: %v", err)
	}
	again.Close()
	for _, b := range bodies[1:] {
		b.Close()
	}
	held.bodiesMu.Lock()
	defer held.bodiesMu.Unlock()
	if len(held.bodies) != 0 || len(pool.bodies.by) != 0 || len(elsewhere.bodies.by) != 0 {
		t.Fatalf("clients still counted once their bodies were freed: %v, %v, %v", held.bodies, pool.bodies.by, elsewhere.bodies.by)
	}
}

// TestLargeAnswerYieldsItsWorkerToWaitingRequests: an answer past its own
// bound on disk goes at its client's pace only while no other request
// waits for a worker: then its waits count against its timeout, and past
// it the answer is cut off and the worker goes on. A client reading a
// large download slowly (or not at all) on as many connections as the app
// had workers held every one of them for as long as it kept reading a
// byte a minute, and every other visitor got 503 at queue_timeout.
func TestLargeAnswerYieldsItsWorkerToWaitingRequests(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: spillReadSize, diskLimit: 1 << 20}) // 64 KiB an answer
	t.Setenv("TMPDIR", t.TempDir())
	p := New(Options{Name: "download", Kind: "wsgi", Pipeline: "off", Threads: 1, Workers: 1, MaxQueue: 10, QueueTimeout: 8 * time.Second}, zap.NewNop())
	p.state = supervisor.Running
	_, far := addFakeWorker(t, p)
	fr := protocol.NewReader(bufio.NewReaderSize(far, 64<<10))
	go func() {
		download, _, err := fr.Next()
		if err != nil {
			return
		}
		if _, err := far.Write(streamedAnswer(download.Stream, 16)); err != nil { // 4 MiB
			return
		}
		next, _, err := fr.Next()
		if err != nil {
			return
		}
		far.Write(protocol.AppendFrame(protocol.AppendFrame(nil, protocol.ResponseHead, 0, next.Stream, []byte("200 OK")), protocol.ResponseBody, protocol.FlagEnd, next.Stream, []byte("next")))
	}()
	c := serveStalled(t, p, "/download", time.Second)
	select { // its answer has begun
	case <-c.writing:
	case <-time.After(10 * time.Second):
		t.Fatal("the answer did not begin")
	}
	next := make(chan error, 1)
	rec := httptest.NewRecorder()
	go func() {
		next <- p.Serve(rec, httptest.NewRequest("GET", "/next", nil), &Request{Timeout: time.Second})
	}()
	select {
	case err := <-next:
		if err != nil || rec.Body.String() != "next" {
			t.Fatalf("the request that waited: %v %q", err, rec.Body.String())
		}
	case <-time.After(6 * time.Second):
		t.Fatal("a request waiting for the worker still waits 6 s on, while a stalled client holds it with an answer past its own bound (1 s timeout)")
	}
}

// TestEnteredRequestLeavesOnceItHoldsAChannel: a request its handler
// counted in the pool while it read the body (Enter) is counted out once
// it holds a channel, not when its client has its answer: a pool a reload
// replaced waited stop_timeout for a slow client's download whose channel
// had gone back long before, its workers kept meanwhile.
func TestEnteredRequestLeavesOnceItHoldsAChannel(t *testing.T) {
	withHeld(t, &heldBudget{memLimit: 64 << 20, diskLimit: 64 << 20})
	t.Setenv("TMPDIR", t.TempDir())
	p, far := onePool(t)
	answerFirst(far, func(sid uint32) []byte { return streamedAnswer(sid, 4) }) // 1 MiB, spooled whole
	p.Enter()
	c := &stalledClient{ResponseRecorder: httptest.NewRecorder(), through: make(chan struct{}), writing: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- p.Serve(c, httptest.NewRequest("GET", "/download", nil), &Request{Timeout: 10 * time.Second, Entered: true})
	}()
	select { // its answer has begun
	case <-c.writing:
	case <-time.After(10 * time.Second):
		t.Fatal("the answer did not begin")
	}
	waitUntil(t, "the channel back, the answer spooled", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.busyChannels == 0 && len(p.idle) == 1
	})
	if n := p.entered.Load(); n != 0 {
		t.Errorf("with its answer spooled and its channel back, the request still counts in the pool (%d entered)", n)
	}
	close(c.through)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := p.entered.Load(); n != 0 {
		t.Errorf("after the request, %d entered", n)
	}
}

// TestRetriedRequestIsCountedThroughItsRetry: a GET whose worker broke
// before it answered goes to another worker, counted in the pool from the
// channel's end until the retry holds a channel (so that a draining pool
// does not stop in between), and counted out once it does.
func TestRetriedRequestIsCountedThroughItsRetry(t *testing.T) {
	p := New(Options{Name: "retry", Kind: "wsgi", Pipeline: "off", Threads: 1, MaxQueue: 10, QueueTimeout: time.Minute}, zap.NewNop())
	p.state = supervisor.Running
	_, first := addFakeWorker(t, p)
	_, second := addFakeWorker(t, p)
	var broke atomic.Bool
	for _, far := range []net.Conn{first, second} {
		go func() {
			h, _, err := protocol.NewReader(bufio.NewReaderSize(far, 64<<10)).Next()
			if err != nil {
				return
			}
			if broke.CompareAndSwap(false, true) {
				far.Close() // the first to get it breaks before it answers
				return
			}
			far.Write(protocol.AppendFrame(protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK")), protocol.ResponseBody, protocol.FlagEnd, h.Stream, []byte("retried")))
		}()
	}
	rec := httptest.NewRecorder()
	if err := p.Serve(rec, httptest.NewRequest("GET", "/", nil), &Request{Timeout: 10 * time.Second}); err != nil || rec.Body.String() != "retried" {
		t.Fatalf("the retried request: %v %q", err, rec.Body.String())
	}
	if n := p.entered.Load(); n != 0 {
		t.Errorf("after the retried request, %d entered (want it counted out once)", n)
	}
	if !broke.Load() {
		t.Error("no worker broke: the test did not retry")
	}
}
