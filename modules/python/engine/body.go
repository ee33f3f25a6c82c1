package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
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
}

// bodyPreallocation is the most ReadBody sets aside for a body before any
// of it arrived.
const bodyPreallocation = 16 << 10

// noBody stands for a request without a body (Request.Body nil); it is
// only read.
var noBody Body

// errBodyTooLarge is the error of a BodyTooLarge failure.
var errBodyTooLarge = errors.New("request body too large")

// ReadBody buffers r's body, bounded by maxBody. Beyond that it fails
// with BodyTooLarge, and with BodyUnreadable when the client sends a
// broken body. Close frees what it holds.
func ReadBody(r *http.Request, maxBody int64) (*Body, error) {
	b := &Body{}
	if r.ContentLength > maxBody {
		return nil, tooLarge(maxBody)
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return b, nil
	}
	limited := io.LimitReader(r.Body, maxBody+1)
	var mem bytes.Buffer
	if r.ContentLength > 0 {
		// what the client says it sends is not yet sent: room for more
		// comes as the body does (a client declaring 256 KiB on each of an
		// HTTP/2 connection's streams, and sending nothing, made Caddy
		// hold 64 MiB for it)
		mem.Grow(int(min(r.ContentLength, bodyPreallocation)))
	}
	n, err := io.CopyN(&mem, limited, memBodyLimit+1)
	if err == io.EOF {
		b.mem, b.size = mem.Bytes(), n
		return b, b.check(maxBody)
	}
	if err != nil {
		return nil, clientBodyError(err)
	}
	buf := mem.Bytes()
	f, err := os.CreateTemp("", "hearth-request-*")
	if err != nil {
		return nil, fmt.Errorf("buffering request body: %w", err)
	}
	_ = os.Remove(f.Name()) // unlinked: freed when closed
	b.file = f
	if _, err := f.Write(buf); err != nil {
		b.Close()
		return nil, fmt.Errorf("buffering request body: %w", err)
	}
	rest, err := io.Copy(f, limited)
	if err != nil {
		b.Close()
		return nil, clientBodyError(err)
	}
	b.size = int64(len(buf)) + rest
	if err := b.check(maxBody); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
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

// Close frees the spill file, if any.
func (b *Body) Close() {
	if b != nil && b.file != nil {
		b.file.Close()
		b.file = nil
	}
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
