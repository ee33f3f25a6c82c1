package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"sync"

	"github.com/hearth-dev/hearth/modules/internal/clientnet"
)

// memBodyLimit is how much of a request body is kept in memory before the
// rest is spilled to a temporary file.
const memBodyLimit = 256 << 10

// Body is a request body read completely before a worker is taken, so a
// slow upload never occupies a worker (ReadBody).
type Body struct {
	mem  []byte
	file *os.File
	size int64
	// what the body counts in the held budget, and in its client's share
	memHeld, diskHeld int64
	client            netip.Prefix
	clientHeld        int64
	counts            *bodyCounts // the pool's count it is in (of client's), or nil

	// A body goroutine may still be sending the body when its request's
	// handler returns (a client that left a streamed answer): Close then
	// leaves freeing it to the last sender (hold, drop).
	mu      sync.Mutex
	senders int
	closing bool
}

// bodyPreallocation is the most ReadBody sets aside for a body of a
// declared length when the first of it arrives (and no more than twice
// what arrived).
const bodyPreallocation = 16 << 10

// A body is read with a buffer of firstBodyRead bytes, doubled each time
// as much has arrived, up to bodyReadBuffer (bodySink.ReadFrom).
const (
	firstBodyRead  = 512
	bodyReadBuffer = 32 << 10
)

// noBody stands for a request without a body (Request.Body nil); it is
// only read.
var noBody Body

// errBodyTooLarge is the error of a BodyTooLarge failure.
var errBodyTooLarge = errors.New("request body too large")

// ReadBody buffers r's body for the pool, bounded by maxBody (readBody),
// and refuses it when its client (clientIP as Caddy determined it, else
// r's peer: clientOf) has as many bodies held for the pool already as it
// may have requests queued and running on every channel of the pool
// (max_queue_per_client and the channels): bodies are counted by their
// bytes against the client's share, and a client trickling a byte into
// each of thousands of HTTP/2 streams held thousands of read buffers,
// goroutines and, past the budget's memory, a file descriptor each, within
// it.
func (p *Pool) ReadBody(r *http.Request, maxBody int64, clientIP string) (*Body, error) {
	return readBody(r, maxBody, clientIP, &p.bodies)
}

// bodyCounts counts, per client, the request bodies held for one pool,
// up to limit each.
type bodyCounts struct {
	limit int
	mu    sync.Mutex
	by    map[netip.Prefix]int
}

// add counts one more body of client's, unless it has limit already.
func (c *bodyCounts) add(client netip.Prefix) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by[client] >= c.limit {
		return false
	}
	if c.by == nil {
		c.by = map[netip.Prefix]int{}
	}
	c.by[client]++
	return true
}

// drop ends what add counted.
func (c *bodyCounts) drop(client netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by[client]--; c.by[client] <= 0 {
		delete(c.by, client)
	}
}

// readBody buffers r's body, bounded by maxBody. Beyond that it fails
// with BodyTooLarge, and with BodyUnreadable when the client sends a
// broken body. Past the held budget it fails with Unavailable, past its
// client's share of it (clientIP as Caddy determined it, else r's peer:
// clientOf), or past its client's count in counts (nil: none), with
// TooManyRequests. Close frees what it holds.
func readBody(r *http.Request, maxBody int64, clientIP string, counts *bodyCounts) (*Body, error) {
	b := &Body{}
	if r.ContentLength > maxBody {
		return nil, tooLarge(maxBody)
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return b, nil
	}
	client := clientOf(clientIP, r.RemoteAddr)
	// refused before any of it is read: a client that waits for
	// `100 Continue` is spared the upload
	if r.ContentLength > 0 && !held.fits(r.ContentLength) {
		return nil, Failed(Unavailable, errBodiesHeld)
	}
	if !held.addBody(client, r.ContentLength) {
		return nil, clientBodiesHeld(client)
	}
	if counts != nil && client.IsValid() {
		if !counts.add(client) {
			held.dropBody(client)
			return nil, Failed(TooManyRequests, fmt.Errorf("client %s: %w (at most %d at once: max_queue_per_client and the app's channels)", clientnet.Name(client), errClientBodiesCount, counts.limit))
		}
		b.counts = counts
	}
	b.client = client // (counted: dropBody undoes it)
	// what the client says it sends is not yet sent: room for it is made
	// once the body starts to arrive, and grows as it does (a client
	// declaring 256 KiB on each of an HTTP/2 connection's streams, and
	// sending nothing, made Caddy hold 64 MiB for it)
	sink := &bodySink{declared: r.ContentLength, client: client}
	n, err := io.Copy(sink, io.LimitReader(r.Body, maxBody+1))
	b.file, b.size, b.memHeld, b.diskHeld = sink.file, n, sink.memHeld, sink.diskHeld
	b.clientHeld = sink.clientHeld
	if b.file == nil {
		b.mem = sink.mem.Bytes()
	}
	switch {
	case errors.Is(err, errClientBodiesHeld):
		b.Close()
		return nil, clientBodiesHeld(client)
	case errors.Is(err, errBodiesHeld):
		b.Close()
		return nil, Failed(Unavailable, err)
	case err != nil && sink.failed:
		b.Close()
		return nil, fmt.Errorf("buffering request body: %w", err)
	case err != nil:
		b.Close()
		return nil, clientBodyError(err)
	}
	if err := b.check(maxBody); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// errBodiesHeld is a request body refused because Caddy holds its budget
// (heldBudget) already.
var errBodiesHeld = errors.New("request body refused: Caddy already holds its budget of request bodies and of responses waiting for slow clients, across its apps (in memory and in temporary files); try again shortly")

// errClientBodiesHeld is a request body refused because its client has
// its share of the held budget (clientShare) held already.
var errClientBodiesHeld = errors.New("request body refused: Caddy already holds this client's share of its budget of request bodies (a quarter of it, which one body alone may pass); try again once its other uploads end")

// errClientBodiesCount is a request body refused because its client has
// as many bodies held as it may have requests queued and running.
var errClientBodiesCount = errors.New("request body refused: this client is sending or waiting on as many request bodies as it may have requests queued and running; try again once its other requests end")

// clientBodiesHeld is the failure of a body refused past its client's share.
func clientBodiesHeld(client netip.Prefix) error {
	return Failed(TooManyRequests, fmt.Errorf("client %s: %w (its share: %d bytes)", clientnet.Name(client), errClientBodiesHeld, held.clientShare()))
}

// bodySink takes a request body as it arrives: in memory up to
// memBodyLimit while the held budget allows, then in a temporary file
// while the budget's disk part does. Bodies had a bound each (max_body)
// but not a sum: clients uploading slowly on many connections, or on an
// HTTP/2 connection's many streams, held as many bodies as they pleased
// while they took their time.
type bodySink struct {
	declared          int64 // the body's Content-Length, or -1
	mem               bytes.Buffer
	file              *os.File
	memHeld, diskHeld int64
	failed            bool // the file, not the client, failed
	// the body's client, and what it counts in its share
	client     netip.Prefix
	clientHeld int64
}

// ReadFrom takes the body from r as it arrives, with a read buffer that
// grows with what came (firstBodyRead, doubled each time as much has
// arrived, up to bodyReadBuffer): io.Copy's own would set 32 KiB aside for
// every body before any of it came, held for as long as a client that
// declared a body and sends none, or a byte of it, keeps its request open
// (250 streams on each HTTP/2 connection: 12 MiB a connection, outside the
// held budget, which counts the bytes that came).
func (s *bodySink) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, firstBodyRead)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := s.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			if len(buf) < bodyReadBuffer && total >= int64(len(buf)) {
				buf = make([]byte, 2*len(buf))
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (s *bodySink) Write(p []byte) (int, error) {
	if !held.takeClient(s.client, int64(len(p))) {
		return 0, errClientBodiesHeld
	}
	n, err := s.write(p)
	if n < len(p) {
		held.giveClient(s.client, int64(len(p)-n))
	}
	s.clientHeld += int64(n)
	return n, err
}

// write takes p in memory or in the file, as the held budget allows.
func (s *bodySink) write(p []byte) (int, error) {
	if s.file == nil && s.mem.Len()+len(p) <= memBodyLimit && held.takeMem(len(p)) {
		s.memHeld += int64(len(p))
		if s.mem.Cap() == 0 && s.declared > 0 {
			// room for what was declared, but no more than twice what came
			s.mem.Grow(int(min(s.declared, bodyPreallocation, max(2*int64(len(p)), firstBodyRead))))
		}
		return s.mem.Write(p)
	}
	if !held.takeDisk(len(p), false) {
		return 0, errBodiesHeld
	}
	s.diskHeld += int64(len(p))
	if s.file == nil {
		f, err := os.CreateTemp("", "hearth-request-*")
		if err != nil {
			s.failed = true
			return 0, err
		}
		_ = os.Remove(f.Name()) // unlinked: freed when closed
		s.file = f
		// what memory held moves to the file
		moved := s.memHeld
		held.takeDisk(int(moved), true)
		held.giveMem(int(moved))
		s.diskHeld, s.memHeld = s.diskHeld+moved, 0
		if _, err := f.Write(s.mem.Bytes()); err != nil {
			s.failed = true
			return 0, err
		}
		s.mem = bytes.Buffer{}
	}
	n, err := s.file.Write(p)
	if err != nil {
		s.failed = true
	}
	return n, err
}

func (b *Body) check(maxBody int64) error {
	if b.size > maxBody {
		return tooLarge(maxBody)
	}
	return nil
}

func tooLarge(maxBody int64) error {
	return Failed(BodyTooLarge, fmt.Errorf("%w: more than max_body (%d bytes)", errBodyTooLarge, maxBody))
}

func clientBodyError(err error) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return Failed(BodyTooLarge, err)
	}
	return Failed(BodyUnreadable, fmt.Errorf("reading request body: %w", err))
}

// Size is the body's length in bytes (0 for a nil Body).
func (b *Body) Size() int64 {
	if b == nil {
		return 0
	}
	return b.size
}

// Close frees the spill file, if any, and gives back what the body
// counted in the held budget.
func (b *Body) Close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.closing = true
	free := b.senders == 0
	b.mu.Unlock()
	if free {
		b.free()
	}
}

// hold marks a goroutine that sends the body: Close does not free it
// before that goroutine's drop. Closed, the file was closed under a
// sender: the worker got part of the body and waited for the rest until
// its timeout killed it.
func (b *Body) hold() {
	b.mu.Lock()
	b.senders++
	b.mu.Unlock()
}

// drop ends hold; the last sender of a closed body frees it.
func (b *Body) drop() {
	b.mu.Lock()
	b.senders--
	free := b.senders == 0 && b.closing
	b.mu.Unlock()
	if free {
		b.free()
	}
}

// free closes the spill file and gives back what the body held.
func (b *Body) free() {
	if b.file != nil {
		b.file.Close()
		b.file = nil
	}
	held.giveMem(int(b.memHeld))
	held.giveDisk(b.diskHeld)
	held.giveClient(b.client, b.clientHeld)
	held.dropBody(b.client)
	if b.counts != nil {
		b.counts.drop(b.client)
		b.counts = nil
	}
	b.memHeld, b.diskHeld, b.client, b.clientHeld = 0, 0, netip.Prefix{}, 0
}

// reader returns the body from its start.
func (b *Body) reader() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.size)
	}
	return bytes.NewReader(b.mem)
}

// inlineBodyLimit is the largest request body sent to a worker in the
// write that carries the request's head. A worker reads a body only as its
// app asks for it, and an app may write its whole response first (a page
// that ignores the body, WSGI's drain at the end): a write larger than the
// channel's socket buffer would then wait for the worker while the worker
// waited for Caddy to read its answer (a GET with a 250 KiB body to a
// 300 KiB page held the worker until its timeout, and a client could keep
// every worker so). A larger body is written beside the reading of the
// response (writeBodyFrames). With the pipelined requests' frames
// (pipelineMaxBytes) it stays within the buffer channelWriteBuffer asks.
const inlineBodyLimit = 64 << 10

// inline says the body goes with the request's head, in one write.
func (b *Body) inline() bool {
	return b.file == nil && b.size <= inlineBodyLimit
}
