package guard

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// maxCodings is how many content codings, one over another, the guard
// undoes to check a body; a body with more is not checked, so replaced.
const maxCodings = 3

// zstdMaxBlock is the largest zstd block (RFC 8878): one is decoded only
// whole, so this much more of a compressed response is held back.
const zstdMaxBlock = 128 << 10

// zstdDecoders bounds the zstd-coded pages decoded at once (each sets its
// window aside, up to zstdMaxWindow: 32 MiB in all, as much as pagesHeld
// bounds the pages themselves); more wait their turn, which their own
// decoding, of a page of at most scan_limit, keeps short.
var zstdDecoders = make(chan struct{}, 4)

// zstdMaxWindow is the largest zstd window the guard decodes with: 8 MiB,
// the most a zstd content coding may use (RFC 9659), so that a frame header
// cannot make the guard allocate more.
const zstdMaxWindow = 8 << 20

// decodedBody returns body decoded from the content codings named by the
// Content-Encoding header h (in the order they were applied, so undone in
// reverse); a body without codings is returned as it is. body is the whole
// response. No more than limit decoded bytes are produced, whatever body
// expands to: a body that decodes to more is an error, as are an unknown
// coding and corrupt or truncated data. An error means the body could not
// be checked.
func decodedBody(h http.Header, body []byte, limit int) ([]byte, error) {
	var codings []string
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	if len(codings) == 0 || len(body) == 0 {
		return body, nil
	}
	if len(codings) > maxCodings {
		return nil, fmt.Errorf("%d content codings (%s), more than the %d the guard undoes", len(codings), strings.Join(codings, ", "), maxCodings)
	}
	if zstds := slices.Index(codings, "zstd"); zstds >= 0 {
		if slices.Contains(codings[zstds+1:], "zstd") {
			return nil, fmt.Errorf("zstd applied twice: no server does that")
		}
		// a zstd decoder sets aside the window its frame declares (up to
		// zstdMaxWindow), beside pagesHeld's count: an app's concurrent
		// error pages declaring 8 MiB windows made Caddy hold 8 MiB for
		// each at once
		zstdDecoders <- struct{}{}
		defer func() { <-zstdDecoders }()
	}
	var src io.Reader = bytes.NewReader(body)
	for i := len(codings) - 1; i >= 0; i-- {
		d, err := decoder(codings[i], src)
		if err != nil {
			return nil, fmt.Errorf("content coding %s: %w", codings[i], err)
		}
		defer d.Close()
		src = d
		if i > 0 {
			// what an outer coding decodes to is the next one's input: a
			// few bytes of gzip over gzip can hold gigabytes of empty
			// deflate or zstd blocks that decode to nothing, hours of
			// Caddy's CPU the final limit never sees
			src = &innerLimit{r: d, coding: codings[i], left: innerBudget(limit)}
		}
	}
	var out bytes.Buffer
	out.Grow(min(limit, 64<<10))
	if _, err := io.CopyN(&out, src, int64(limit)); err != nil && err != io.EOF {
		return nil, fmt.Errorf("content coding %s: %w", strings.Join(codings, ", "), err)
	}
	if out.Len() == limit {
		// the end of the stream must come now (reading it checks a gzip
		// member's checksum too)
		var one [1]byte
		switch _, err := io.ReadFull(src, one[:]); {
		case err == nil:
			return nil, fmt.Errorf("content coding %s: the body decodes to more than the guard's scan_limit, %d bytes", strings.Join(codings, ", "), limit)
		case err != io.EOF:
			return nil, fmt.Errorf("content coding %s: %w", strings.Join(codings, ", "), err)
		}
	}
	return out.Bytes(), nil
}

// innerBudget bounds what an outer content coding may decode to, for a
// final limit: coded data of a body of limit bytes is at most a little
// more than that (incompressible data, with its blocks' headers).
func innerBudget(limit int) int64 { return 2*int64(limit) + zstdMaxBlock }

// innerLimit fails a read once an outer coding has decoded more than its
// budget (innerBudget).
type innerLimit struct {
	r      io.Reader
	coding string
	left   int64
}

func (l *innerLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("the %s coding decodes to more than the next coding of a body within scan_limit could take", l.coding)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// decoder returns a reader that undoes one content coding. Brotli (br) is
// not among them: no brotli decoder is in Hearth's module graph.
func decoder(coding string, src io.Reader) (io.ReadCloser, error) {
	switch coding {
	case "gzip", "x-gzip":
		return gzip.NewReader(src)
	case "deflate":
		// RFC 9110's deflate is zlib (RFC 1950), but some servers send a
		// raw deflate stream (RFC 1951) instead; clients accept both.
		br := bufio.NewReader(src)
		if head, err := br.Peek(2); err == nil && isZlibHeader(head) {
			return zlib.NewReader(br)
		} else if err != nil {
			return nil, noEOF(err)
		}
		return flate.NewReader(br), nil
	case "zstd":
		d, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("no decoder for this coding")
}

// isZlibHeader reports whether b starts with a zlib header: deflate method
// and a valid header checksum.
func isZlibHeader(b []byte) bool {
	return b[0]&0x0f == 8 && b[0]>>4 <= 7 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0
}

// noEOF turns the end of a stream too short for a header into
// io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
