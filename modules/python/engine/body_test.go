package engine

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestReadBodyHoldsWhatArrived: the memory a body takes follows the bytes
// that arrived, not the Content-Length the client declared (a client
// declaring 256 KiB on each of many HTTP/2 streams, sending nothing, made
// Caddy hold 256 KiB for each); a body that does arrive is read whole.
func TestReadBodyHoldsWhatArrived(t *testing.T) {
	r := httptest.NewRequest("POST", "/", strings.NewReader("abc"))
	r.ContentLength = memBodyLimit
	b, err := readBody(r, 1<<30, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if string(b.mem) != "abc" || cap(b.mem) > bodyPreallocation {
		t.Errorf("a declared %d-byte body with 3 bytes sent: %q held in %d bytes", memBodyLimit, b.mem, cap(b.mem))
	}
	for _, size := range []int{bodyPreallocation - 1, bodyPreallocation + 1, memBodyLimit, memBodyLimit + 1, 3 * memBodyLimit} {
		body := strings.Repeat("x", size)
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		b, err := readBody(r, 1<<30, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		if b.file != nil {
			got, _ = io.ReadAll(b.reader())
		} else {
			got = b.mem
		}
		if string(got) != body || b.Size() != int64(size) {
			t.Errorf("a %d-byte body read as %d bytes (size %d)", size, len(got), b.Size())
		}
		b.Close()
	}
}

// firstReads is a body that records the size of each buffer it is asked to
// fill, and sends its data from the second read on: as a client that
// declared a body and took its time to send it.
type firstReads struct {
	sizes []int
	data  io.Reader
}

func (f *firstReads) Read(p []byte) (int, error) {
	f.sizes = append(f.sizes, len(p))
	if len(f.sizes) == 1 {
		return 0, nil // nothing yet
	}
	return f.data.Read(p)
}

// TestReadBodyWaitsWithASmallBuffer: until a body arrives, it is waited for
// with a buffer of firstBodyRead bytes and nothing set aside for it: a
// client that declares bodies on many HTTP/2 streams and sends none made
// Caddy hold 48 KiB for each (io.Copy's 32 KiB buffer and 16 KiB for the
// body), outside the held budget.
func TestReadBodyWaitsWithASmallBuffer(t *testing.T) {
	body := strings.Repeat("y", 100_000)
	f := &firstReads{data: strings.NewReader(body)}
	r := httptest.NewRequest("POST", "/", f)
	r.ContentLength = int64(len(body))
	b, err := readBody(r, 1<<30, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if f.sizes[0] > firstBodyRead || f.sizes[1] > firstBodyRead {
		t.Errorf("a body not yet arrived was waited for with buffers of %v bytes, want at most %d", f.sizes[:2], firstBodyRead)
	}
	// then the buffer grows with what came, up to bodyReadBuffer
	for i := 2; i < len(f.sizes); i++ {
		if want := min(firstBodyRead<<(i-1), bodyReadBuffer); f.sizes[i] != want {
			t.Errorf("read %d of a body that keeps coming: a buffer of %d bytes, want %d (%v)", i, f.sizes[i], want, f.sizes)
			break
		}
	}
	if string(b.mem) != body {
		t.Errorf("the body read as %d bytes", len(b.mem))
	}
}

// TestReadBodyGrowsWithWhatCame: a client that sends a byte of a declared
// body and then waits has Caddy hold buffers of about what came, not the
// 48 KiB the first byte used to unlock.
func TestReadBodyGrowsWithWhatCame(t *testing.T) {
	f := &firstReads{data: strings.NewReader("z")}
	r := httptest.NewRequest("POST", "/", f)
	r.ContentLength = 100_000
	b, err := readBody(r, 1<<30, "", nil)
	if err == nil {
		b.Close()
	}
	for i, size := range f.sizes {
		if size > firstBodyRead {
			t.Errorf("read %d, after a 1-byte body: a buffer of %d bytes, want at most %d", i, size, firstBodyRead)
		}
	}
	if err == nil && cap(b.mem) > firstBodyRead {
		t.Errorf("a 1-byte body of 100,000 declared has %d bytes set aside, want at most %d", cap(b.mem), firstBodyRead)
	}
}
