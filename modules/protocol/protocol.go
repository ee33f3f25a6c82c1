// Package protocol is the framed binary wire format spoken between Caddy and
// a Hearth worker process over a private stream socket (a socketpair).
//
// Every frame is a 10-byte header followed by a payload:
//
//	offset size field
//	0      4    payload length, big endian (at most MaxPayload)
//	4      1    frame type (Type)
//	5      1    flags (FlagEnd, …)
//	6      4    stream id, big endian (a request id; 0 for control frames)
//
// A request travels as one RequestHead frame (NUL-separated key/value pairs,
// latin-1) and zero or more RequestBody frames, the last flagged FlagEnd (a
// head flagged FlagEnd has no body). The worker answers with one ResponseHead
// frame ("<status line>\0name\0value\0…") and ResponseBody frames, the last
// flagged FlagEnd, or with an Abort frame when the application failed after
// the head was sent. A worker announces itself with Hello (or Fatal with a
// traceback when the application cannot be imported).
//
// The Python side of this protocol lives in modules/python/engine/runtime.
package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 10

// MaxPayload bounds one frame's payload; larger bodies are split into
// several frames. A peer announcing more is a protocol error.
const MaxPayload = 1 << 20

// Type identifies what a frame carries.
type Type uint8

// Frame types. Values are part of the wire format: never renumber.
const (
	Hello        Type = 1  // worker → Caddy: imported the app, ready for requests
	Fatal        Type = 2  // worker → Caddy: cannot start; payload is the traceback
	RequestHead  Type = 3  // Caddy → worker: request metadata as key\0value pairs
	RequestBody  Type = 4  // Caddy → worker: a chunk of the request body
	ResponseHead Type = 5  // worker → Caddy: status line and header pairs
	ResponseBody Type = 6  // worker → Caddy: a chunk of the response body
	Abort        Type = 7  // worker → Caddy: the app failed mid-response
	Fork         Type = 8  // Caddy → template: fork a worker (fds attached); template → Caddy: its pid
	Cancel       Type = 9  // Caddy → worker: the client went away (ASGI: http.disconnect)
	WSAccept     Type = 10 // worker → Caddy: the app accepts a WebSocket; payload: the subprotocol
	WSMessage    Type = 11 // both ways: a WebSocket message (FlagBinary for binary)
	WSClose      Type = 12 // both ways: a WebSocket close; payload: 2-byte code, then the reason
)

// FlagBinary marks a binary WebSocket message (text otherwise).
const FlagBinary uint8 = 2

// FlagEnd marks the last frame of a request or response body.
const FlagEnd uint8 = 1

// FlagTimedOut marks a Cancel sent because Caddy gave up on the request
// (ASGI): it ran past its timeout before its response began, or its app
// did not end it well after its client left. The worker cancels the
// request's task and ends its stream.
const FlagTimedOut uint8 = 2

// FlagRefused marks a Cancel (with FlagTimedOut) sent because Caddy
// refused the stream the app began: its app already had as many streamed
// responses and WebSockets under way as it may (ASGI max_streams). The
// worker says so where it logs the cancel.
const FlagRefused uint8 = 4

func (t Type) String() string {
	switch t {
	case Hello:
		return "hello"
	case Fatal:
		return "fatal"
	case RequestHead:
		return "request-head"
	case RequestBody:
		return "request-body"
	case ResponseHead:
		return "response-head"
	case ResponseBody:
		return "response-body"
	case Abort:
		return "abort"
	case Fork:
		return "fork"
	case Cancel:
		return "cancel"
	case WSAccept:
		return "ws-accept"
	case WSMessage:
		return "ws-message"
	case WSClose:
		return "ws-close"
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// Header is a decoded frame header.
type Header struct {
	Length uint32
	Type   Type
	Flags  uint8
	Stream uint32
}

// End reports whether the frame carries FlagEnd.
func (h Header) End() bool { return h.Flags&FlagEnd != 0 }

// ErrTooLarge is returned for a frame whose announced payload exceeds MaxPayload.
var ErrTooLarge = errors.New("frame payload exceeds protocol maximum")

// PutHeader encodes h into the first HeaderSize bytes of b.
func PutHeader(b []byte, h Header) {
	binary.BigEndian.PutUint32(b[0:4], h.Length)
	b[4] = byte(h.Type)
	b[5] = h.Flags
	binary.BigEndian.PutUint32(b[6:10], h.Stream)
}

// ParseHeader decodes a frame header from b, which must hold HeaderSize bytes,
// and validates its type and length.
func ParseHeader(b []byte) (Header, error) {
	h := Header{
		Length: binary.BigEndian.Uint32(b[0:4]),
		Type:   Type(b[4]),
		Flags:  b[5],
		Stream: binary.BigEndian.Uint32(b[6:10]),
	}
	if h.Length > MaxPayload {
		return h, fmt.Errorf("%s frame of %d bytes: %w", h.Type, h.Length, ErrTooLarge)
	}
	if h.Type < Hello || h.Type > WSClose {
		return h, fmt.Errorf("unknown frame type %d", uint8(h.Type))
	}
	return h, nil
}

// AppendFrame appends a complete frame (header and payload) to dst.
// The payload must not exceed MaxPayload.
func AppendFrame(dst []byte, t Type, flags uint8, stream uint32, payload []byte) []byte {
	var hdr [HeaderSize]byte
	PutHeader(hdr[:], Header{Length: uint32(len(payload)), Type: t, Flags: flags, Stream: stream})
	dst = append(dst, hdr[:]...)
	return append(dst, payload...)
}

// Reader reads frames from a buffered stream. Payload slices it returns
// are only valid until the next call to Next.
type Reader struct {
	r        io.Reader
	buffered interface{ Buffered() int } // r, when it says what it holds (a bufio.Reader)
	err      error                       // a read that failed in the middle of a frame
	hdr      [HeaderSize]byte
	buf      []byte
}

// readerBuffer is the payload buffer a Reader keeps; a larger frame's
// buffer is kept only while larger frames follow.
const readerBuffer = 64 << 10

// NewReader returns a Reader on r; r should be buffered.
func NewReader(r io.Reader) *Reader {
	fr := &Reader{r: r, buf: make([]byte, 0, readerBuffer)}
	fr.buffered, _ = r.(interface{ Buffered() int })
	return fr
}

// Buffered is how many bytes r has read from its source and Next has not
// returned yet: 0 means the next frame had not arrived (or that r keeps no
// buffer).
func (fr *Reader) Buffered() int {
	if fr.buffered == nil {
		return 0
	}
	return fr.buffered.Buffered()
}

// Next reads one frame. The payload is valid until the following call.
// An error at a frame's boundary (a read deadline before anything of the
// next frame came) leaves the Reader usable; one in the middle of a frame
// is returned again by every later call: what follows could not be parsed
// in step.
func (fr *Reader) Next() (Header, []byte, error) {
	if fr.err != nil {
		return Header{}, nil, fr.err
	}
	if n, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if n > 0 {
			fr.err = fmt.Errorf("a frame header cut off after %d bytes: %w", n, err)
			return Header{}, nil, fr.err
		}
		return Header{}, nil, err
	}
	h, err := ParseHeader(fr.hdr[:])
	if err != nil {
		// its payload, of a length not to be trusted, is still to come:
		// what follows cannot be read in step
		fr.err = err
		return h, nil, err
	}
	switch {
	case int(h.Length) > cap(fr.buf):
		// a large frame's size, or the usual buffer again after Shrink
		fr.buf = make([]byte, max(int(h.Length), readerBuffer))
	case h.Length <= readerBuffer && cap(fr.buf) > readerBuffer:
		// a large frame's buffer goes once the frames are small again: kept,
		// one burst of 1 MiB bodies left every channel of a pool holding
		// 1 MiB for the life of its worker
		fr.buf = make([]byte, 0, readerBuffer)
	}
	p := fr.buf[:h.Length]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		fr.err = fmt.Errorf("reading %s payload: %w", h.Type, err)
		return h, nil, fr.err
	}
	return h, p, nil
}

// Shrink lets go of a buffer grown for a large frame: Next gives it back at
// the next small frame, but a channel that goes idle after a large answer
// may see none for the life of its worker (a pool reuses the channels freed
// last), so one burst of large answers left every channel it used holding
// up to MaxPayload. The next frame gets a buffer of its size, or the usual
// one, so large answers in a row cost one allocation each, as one after a
// small frame did. The payload Next returned last stays valid.
func (fr *Reader) Shrink() {
	if cap(fr.buf) > readerBuffer {
		fr.buf = nil
	}
}

// Err is the error that put the Reader out of step (a read that failed in
// the middle of a frame), or nil: then Next may be called again after an
// error, such as a read deadline between frames.
func (fr *Reader) Err() error { return fr.err }

// AppendPair appends "key\0value\0" to dst: the encoding of request heads.
func AppendPair(dst []byte, key, value string) []byte {
	dst = append(dst, key...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	return append(dst, 0)
}

// Fields iterates over NUL-separated fields of a head payload, calling fn for
// each; a trailing NUL is optional. It stops early when fn returns false.
func Fields(p []byte, fn func(field []byte) bool) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			fn(p)
			return
		}
		if !fn(p[:i]) {
			return
		}
		p = p[i+1:]
	}
}
