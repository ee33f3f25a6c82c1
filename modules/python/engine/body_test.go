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
	b, err := ReadBody(r, 1<<30)
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
		b, err := ReadBody(r, 1<<30)
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
