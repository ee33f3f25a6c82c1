package python

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// memBodyLimit is how much of a request body is kept in memory before the
// rest is spilled to a temporary file.
const memBodyLimit = 256 << 10

// requestBody is a request body read completely before a worker is taken,
// so a slow upload never occupies a worker.
type requestBody struct {
	mem  []byte
	file *os.File
	size int64
}

// errBodyTooLarge is wrapped in a 413 error.
var errBodyTooLarge = errors.New("request body too large")

// readRequestBody buffers r's body, bounded by maxBody. It returns a 413
// error beyond that and a 400 error when the client sends a broken body.
func readRequestBody(r *http.Request, maxBody int64) (*requestBody, error) {
	b := &requestBody{}
	if r.ContentLength > maxBody {
		return nil, tooLarge(maxBody)
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return b, nil
	}
	limited := io.LimitReader(r.Body, maxBody+1)
	var mem bytes.Buffer
	if r.ContentLength > 0 {
		mem.Grow(int(min(r.ContentLength, memBodyLimit+1)))
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

func (b *requestBody) check(maxBody int64) error {
	if b.size > maxBody {
		return tooLarge(maxBody)
	}
	return nil
}

func tooLarge(maxBody int64) error {
	return caddyhttp.Error(http.StatusRequestEntityTooLarge,
		fmt.Errorf("%w: more than max_body (%d bytes)", errBodyTooLarge, maxBody))
}

func clientBodyError(err error) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
	}
	return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading request body: %w", err))
}

// Close frees the spill file, if any.
func (b *requestBody) Close() {
	if b.file != nil {
		b.file.Close()
		b.file = nil
	}
}

// reader returns the body from its start.
func (b *requestBody) reader() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.size)
	}
	return nil
}
