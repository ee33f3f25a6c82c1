package main

import "bytes"

// An incremental HTTP/1.1 response parser. Bytes arrive in a connection's
// fixed buffer (buf[r:w] not yet consumed); parse consumes what it can and
// says whether the response is complete, needs more bytes or is malformed.
// Bodies are skipped, never stored, so the buffer only has to hold the header
// block (hence the header-size cap) or one chunk-size or trailer line.

// Parser states.
const (
	psHead      = iota // status line and headers
	psBodyLen          // body of Content-Length bytes
	psChunkSize        // chunk-size line of a chunked body
	psChunkData        // chunk data
	psChunkEnd         // CRLF after chunk data
	psTrailer          // trailer lines after the last chunk
	psBodyEOF          // body delimited by the end of the connection
)

type parseResult uint8

const (
	prMore     parseResult = iota // need more bytes
	prDone                        // response complete
	prBadProto                    // malformed response
	prTooBig                      // header block (or a line) over the buffer's size
)

// respParser is the per-connection parse state, reset for each response.
type respParser struct {
	buf        []byte // fixed; its size caps the header block
	r, w       int    // buf[r:w] is unconsumed input
	ps         uint8
	scan       int   // psHead: buf[r:r+scan] holds no "\r\n\r\n"
	remain     int64 // bytes left of the body or of the chunk
	status     int
	closeAfter bool // the server will close (Connection: close, HTTP/1.0, body to EOF)
}

var crlfcrlf = []byte("\r\n\r\n")

func (p *respParser) resetResponse() {
	p.ps = psHead
	p.scan = 0
	p.remain = 0
	p.status = 0
	p.closeAfter = false
}

// space makes room after the unconsumed input and returns it; it is empty
// only when unconsumed input fills the buffer.
func (p *respParser) space() []byte {
	if p.r == p.w {
		p.r, p.w = 0, 0
	} else if p.w == len(p.buf) && p.r > 0 {
		p.w = copy(p.buf, p.buf[p.r:p.w])
		p.r = 0
	}
	return p.buf[p.w:]
}

// full reports whether unconsumed input fills the whole buffer.
func (p *respParser) full() bool { return p.w-p.r >= len(p.buf) }

// parse consumes buf[r:w] as far as it can.
func (p *respParser) parse() parseResult {
	for {
		switch p.ps {
		case psHead:
			data := p.buf[p.r:p.w]
			i := bytes.Index(data[p.scan:], crlfcrlf)
			if i < 0 {
				if p.full() {
					return prTooBig
				}
				if p.scan = len(data) - 3; p.scan < 0 {
					p.scan = 0
				}
				return prMore
			}
			end := p.scan + i
			head := data[:end+2] // status line and header lines, each ending in CRLF
			p.r += end + 4
			p.scan = 0
			res := p.parseHead(head)
			if res != prDone {
				return res
			}
			if p.ps == psHead { // an interim 1xx response: the real one follows
				continue
			}
		case psBodyLen, psChunkData:
			n := int64(p.w - p.r)
			if n > p.remain {
				n = p.remain
			}
			p.r += int(n)
			p.remain -= n
			if p.remain > 0 {
				return prMore
			}
			if p.ps == psBodyLen {
				return prDone
			}
			p.ps = psChunkEnd
		case psChunkEnd:
			if p.w-p.r < 2 {
				return prMore
			}
			if p.buf[p.r] != '\r' || p.buf[p.r+1] != '\n' {
				return prBadProto
			}
			p.r += 2
			p.ps = psChunkSize
		case psChunkSize:
			line, res := p.line()
			if res != prDone {
				return res
			}
			size, ok := parseChunkSize(line)
			if !ok {
				return prBadProto
			}
			if size == 0 {
				p.ps = psTrailer
			} else {
				p.ps, p.remain = psChunkData, size
			}
		case psTrailer:
			line, res := p.line()
			if res != prDone {
				return res
			}
			if len(line) == 0 {
				return prDone
			}
		case psBodyEOF:
			p.r = p.w // discard; the response ends at EOF
			return prMore
		}
	}
}

// line consumes one CRLF-terminated line and returns it without the CRLF.
func (p *respParser) line() ([]byte, parseResult) {
	data := p.buf[p.r:p.w]
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		if p.full() {
			return nil, prTooBig
		}
		return nil, prMore
	}
	p.r += i + 1
	if i == 0 || data[i-1] != '\r' {
		return nil, prBadProto
	}
	return data[:i-1], prDone
}

// parseHead reads the status line and the headers that frame the body, and
// sets the state for the body. head holds the lines with their CRLFs, without
// the empty line that ends them.
func (p *respParser) parseHead(head []byte) parseResult {
	i := bytes.IndexByte(head, '\n')
	if i < 1 || head[i-1] != '\r' {
		return prBadProto
	}
	status := head[:i-1]
	// "HTTP/1.x SSS[ reason]"
	if len(status) < 12 || string(status[:7]) != "HTTP/1." || !isDigit(status[7]) ||
		status[8] != ' ' || !isDigit(status[9]) || !isDigit(status[10]) || !isDigit(status[11]) ||
		(len(status) > 12 && status[12] != ' ') {
		return prBadProto
	}
	code := int(status[9]-'0')*100 + int(status[10]-'0')*10 + int(status[11]-'0')
	if code < 100 {
		return prBadProto
	}
	http10 := status[7] == '0'
	var (
		contentLength       int64 = -1
		chunked, te         bool
		connClose, connKeep bool
	)
	rest := head[i+1:]
	for len(rest) > 0 {
		j := bytes.IndexByte(rest, '\n')
		line := rest[:j]
		rest = rest[j+1:]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue // obsolete line folding: not a framing header
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return prBadProto
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		switch {
		case equalFold(name, "content-length"):
			n, ok := parseDecimal(value)
			if !ok || (contentLength >= 0 && n != contentLength) {
				return prBadProto
			}
			contentLength = n
		case equalFold(name, "transfer-encoding"):
			te = true
			chunked = equalFold(lastToken(value), "chunked")
		case equalFold(name, "connection"):
			for v := value; len(v) > 0; {
				var tok []byte
				if k := bytes.IndexByte(v, ','); k >= 0 {
					tok, v = trimOWS(v[:k]), v[k+1:]
				} else {
					tok, v = trimOWS(v), nil
				}
				if equalFold(tok, "close") {
					connClose = true
				} else if equalFold(tok, "keep-alive") {
					connKeep = true
				}
			}
		}
	}
	if code < 200 && code != 101 { // 100 Continue, 103 Early Hints: skip
		p.ps = psHead
		return prDone
	}
	p.status = code
	p.closeAfter = connClose || (http10 && !connKeep)
	switch {
	case code == 101:
		p.closeAfter = true // switching protocols: nothing more for us on this connection
		return prDone
	case code == 204 || code == 304:
		p.ps, p.remain = psBodyLen, 0
	case chunked:
		p.ps = psChunkSize
	case te: // a transfer coding other than chunked last: the body runs to EOF
		p.ps, p.closeAfter = psBodyEOF, true
	case contentLength >= 0:
		p.ps, p.remain = psBodyLen, contentLength
	default:
		p.ps, p.closeAfter = psBodyEOF, true
	}
	return prDone
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// lastToken returns the last comma-separated element of a header value.
func lastToken(v []byte) []byte {
	if k := bytes.LastIndexByte(v, ','); k >= 0 {
		v = v[k+1:]
	}
	return trimOWS(v)
}

// equalFold compares b with the lower-case ASCII string s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseChunkSize reads the hex size at the start of a chunk-size line,
// ignoring chunk extensions (";name=value").
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	digits := 0
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		case c == ';' || c == ' ' || c == '\t':
			return n, digits > 0
		default:
			return 0, false
		}
		if digits++; digits > 15 {
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, digits > 0
}
