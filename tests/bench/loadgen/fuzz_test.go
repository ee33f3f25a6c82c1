//go:build linux

package main

import "testing"

// feed gives the parser data in pieces of the given size and returns its
// verdict, its status and how many bytes it consumed; it fails on any
// out-of-range index.
func feed(t *testing.T, data []byte, piece int) (parseResult, int, int) {
	p := respParser{buf: make([]byte, 256)}
	consumed := 0
	for len(data) > 0 {
		room := p.space()
		if len(room) == 0 {
			return prTooBig, p.status, consumed // a full buffer is reported before this
		}
		n := min(piece, len(room), len(data))
		copy(room, data[:n])
		data = data[n:]
		p.w += n
		before := p.r
		res := p.parse()
		if !(0 <= p.r && p.r <= p.w && p.w <= len(p.buf)) {
			t.Fatalf("indices out of range: r %d w %d len %d", p.r, p.w, len(p.buf))
		}
		consumed += p.r - before
		if res != prMore {
			return res, p.status, consumed
		}
	}
	return prMore, p.status, consumed
}

// FuzzParser: whatever a server sends, the parser never panics or indexes
// outside its buffer, and its verdict does not depend on how the bytes were
// split across reads.
func FuzzParser(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nbody to eof",
		"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: -1\r\n\r\n",
		"\r\n\r\n\r\n",
	} {
		f.Add([]byte(seed), uint8(1))
		f.Add([]byte(seed), uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, piece uint8) {
		whole, status, used := feed(t, data, len(data)+1)
		split, status2, used2 := feed(t, data, int(piece%32)+1)
		if whole == prTooBig || split == prTooBig {
			return // a full buffer depends on where the reads fell
		}
		if whole != split || status != status2 || used != used2 {
			t.Fatalf("%q: whole gives %d status %d after %d bytes; in pieces of %d: %d status %d after %d",
				data, whole, status, used, piece%32+1, split, status2, used2)
		}
	})
}
