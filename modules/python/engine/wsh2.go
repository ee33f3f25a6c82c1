package engine

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/hearth-dev/hearth/modules/internal/textcut"
	"github.com/hearth-dev/hearth/modules/protocol"
)

// wsPeer is the client side of a WebSocket as the pool sees it: an
// HTTP/1.1 upgrade (coder/websocket) or an HTTP/2 extended CONNECT
// stream (RFC 8441, framed here).
type wsPeer interface {
	// read returns the next message, or an error and the close code the
	// client sent (-1 when it left without a close frame).
	read(ctx context.Context) (binary bool, data []byte, closeCode int, err error)
	write(ctx context.Context, binary bool, data []byte) error
	// close starts the closing handshake with code and reason.
	close(code int, reason string)
	// closeNow drops the connection, unblocking read.
	closeNow()
}

// upgradedPeer is a WebSocket over an HTTP/1.1 upgrade.
type upgradedPeer struct{ conn *websocket.Conn }

func (u upgradedPeer) read(ctx context.Context) (bool, []byte, int, error) {
	typ, data, err := u.conn.Read(ctx)
	if err != nil {
		return false, nil, int(websocket.CloseStatus(err)), err
	}
	if typ == websocket.MessageText && !utf8.Valid(data) {
		// as over HTTP/2 (the library does not check it): the app would
		// get the bytes replaced, and a client its message taken
		_ = u.conn.Close(websocket.StatusInvalidFramePayloadData, "text message is not UTF-8")
		return false, nil, -1, errors.New("WebSocket protocol error from the client: text message is not UTF-8")
	}
	return typ == websocket.MessageBinary, data, 0, nil
}

func (u upgradedPeer) write(ctx context.Context, binary bool, data []byte) error {
	typ := websocket.MessageText
	if binary {
		typ = websocket.MessageBinary
	}
	return u.conn.Write(ctx, typ, data)
}

func (u upgradedPeer) close(code int, reason string) {
	code, reason = sendableClose(code, reason)
	if code == 0 { // a close frame without a code (the library would drop the connection instead)
		_ = u.conn.Close(websocket.StatusNoStatusRcvd, "")
		return
	}
	_ = u.conn.Close(websocket.StatusCode(code), reason)
}

func (u upgradedPeer) closeNow() { _ = u.conn.CloseNow() }

// isExtendedConnect reports a WebSocket bootstrapped over HTTP/2 (RFC
// 8441). Go's HTTP/2 server (and so Caddy) accepts these only when Caddy
// runs with GODEBUG=http2xconnect=1.
func isExtendedConnect(r *http.Request) bool {
	return r.ProtoMajor == 2 && r.Method == http.MethodConnect && r.Header.Get(":protocol") == "websocket"
}

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// streamPeer is a WebSocket carried by an HTTP/2 stream: the request body
// brings the client's (masked) frames, the response carries ours.
type streamPeer struct {
	body io.ReadCloser
	in   *bufio.Reader
	rc   *http.ResponseController
	w    http.ResponseWriter

	mu         sync.Mutex // one frame written at a time (pongs come from the reader)
	closeSent  bool
	writeError error
}

// acceptStream answers an extended CONNECT with 200 and the chosen
// subprotocol; the stream is then the WebSocket. openingProblem has
// checked the request.
func acceptStream(w http.ResponseWriter, r *http.Request, subprotocol string) (*streamPeer, error) {
	if subprotocol != "" {
		w.Header().Set("Sec-WebSocket-Protocol", subprotocol)
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return nil, fmt.Errorf("answering the extended CONNECT: %w", err)
	}
	return &streamPeer{body: r.Body, in: bufio.NewReader(r.Body), rc: rc, w: w}, nil
}

func (s *streamPeer) read(ctx context.Context) (bool, []byte, int, error) {
	var message []byte
	messageOp := -1
	for {
		fin, op, size, mask, err := s.readFrameHead()
		if err != nil {
			return false, nil, -1, err
		}
		if op >= opClose { // a control frame: whole, and at most 125 bytes
			payload, err := s.appendPayload(nil, size, mask)
			if err != nil {
				return false, nil, -1, err
			}
			switch op {
			case opPing:
				_ = s.writeFrame(opPong, payload)
				continue
			case opPong:
				continue
			case opClose:
				code, reason := parseClose(payload)
				switch {
				case len(payload) == 0:
					code = 1005 // no status received
				case len(payload) == 1:
					return false, nil, -1, s.fail(1002, "a close frame of one byte")
				case !sendableCloseCode(code):
					// (1005 and 1006 are never sent: a client that did
					// would pass as another cause to the app)
					return false, nil, -1, s.fail(1002, fmt.Sprintf("close code %d is not one a peer sends", code))
				case !utf8.ValidString(reason):
					return false, nil, -1, s.fail(1007, "close reason is not UTF-8")
				}
				s.close(code, reason)
				return false, nil, code, fmt.Errorf("closed by the client (%d)", code)
			}
			return false, nil, -1, s.fail(1002, fmt.Sprintf("unknown opcode %d", op))
		}
		switch op {
		case opText, opBinary:
			if messageOp >= 0 {
				return false, nil, -1, s.fail(1002, "a new message inside a fragmented one")
			}
			messageOp = op
		case opContinuation:
			if messageOp < 0 {
				return false, nil, -1, s.fail(1002, "a continuation frame without a message")
			}
		default:
			return false, nil, -1, s.fail(1002, fmt.Sprintf("unknown opcode %d", op))
		}
		if uint64(len(message))+size > protocol.MaxPayload {
			return false, nil, -1, s.fail(1009, "message too big")
		}
		if message, err = s.appendPayload(message, size, mask); err != nil {
			return false, nil, -1, err
		}
		if fin {
			if messageOp == opText && !utf8.Valid(message) {
				return false, nil, -1, s.fail(1007, "text message is not UTF-8")
			}
			return messageOp == opBinary, message, 0, nil
		}
	}
}

// readFrameHead reads one client frame's head: whether it ends its
// message, its opcode, its payload's size and its mask.
func (s *streamPeer) readFrameHead() (fin bool, op int, size uint64, mask [4]byte, err error) {
	var head [2]byte
	if _, err := io.ReadFull(s.in, head[:]); err != nil {
		return false, 0, 0, mask, err
	}
	fin, op = head[0]&0x80 != 0, int(head[0]&0x0F)
	if head[0]&0x70 != 0 {
		return false, 0, 0, mask, s.fail(1002, "reserved bits set (no extension was negotiated)")
	}
	if head[1]&0x80 == 0 {
		return false, 0, 0, mask, s.fail(1002, "client frames must be masked")
	}
	size = uint64(head[1] & 0x7F)
	switch size {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(s.in, ext[:]); err != nil {
			return false, 0, 0, mask, err
		}
		size = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(s.in, ext[:]); err != nil {
			return false, 0, 0, mask, err
		}
		size = binary.BigEndian.Uint64(ext[:])
	}
	if op >= opClose && (size > 125 || !fin) {
		return false, 0, 0, mask, s.fail(1002, "control frames must be whole and at most 125 bytes")
	}
	if size > protocol.MaxPayload {
		return false, 0, 0, mask, s.fail(1009, "frame too big")
	}
	if _, err := io.ReadFull(s.in, mask[:]); err != nil {
		return false, 0, 0, mask, err
	}
	return fin, op, size, mask, nil
}

// payloadStep is how much of a frame's payload is read at a time.
const payloadStep = 32 << 10

// appendPayload reads a frame's payload of size bytes (at most
// protocol.MaxPayload), unmasks it and appends it to dst. The buffer grows
// as the bytes arrive, not from the size the frame claims: a client that
// announced 1 MiB frames on many WebSockets and sent nothing more had
// Caddy allocate 1 MiB for each (and a message of several frames was
// copied from each frame into the message).
func (s *streamPeer) appendPayload(dst []byte, size uint64, mask [4]byte) ([]byte, error) {
	for read := 0; read < int(size); {
		n := min(int(size)-read, payloadStep)
		if cap(dst)-len(dst) < n {
			// twice the room each time (one step at least), up to what
			// the frame has left: a few copies for a 1 MiB message
			dst = slices.Grow(dst, min(int(size)-read, max(n, cap(dst))))
		}
		part := dst[len(dst) : len(dst)+n]
		if _, err := io.ReadFull(s.in, part); err != nil {
			return dst, err
		}
		for i := range part {
			part[i] ^= mask[(read+i)%4]
		}
		dst, read = dst[:len(dst)+n], read+n
	}
	return dst, nil
}

// fail closes with a protocol error and returns it.
func (s *streamPeer) fail(code int, reason string) error {
	s.close(code, reason)
	return fmt.Errorf("WebSocket protocol error from the client: %s", reason)
}

func (s *streamPeer) write(_ context.Context, binary bool, data []byte) error {
	op := opText
	if binary {
		op = opBinary
	}
	return s.writeFrame(op, data)
}

// writeFrame writes one unmasked, final frame and flushes it.
func (s *streamPeer) writeFrame(op int, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeError != nil {
		return s.writeError
	}
	if s.closeSent {
		return errors.New("the WebSocket is closing")
	}
	// the head, then the payload as it is: a copy of a message held for
	// a client that reads nothing doubled what each stalled one cost
	var head [10]byte
	frame := append(head[:0], 0x80|byte(op))
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, byte(n))
	case n <= 0xFFFF:
		frame = binary.BigEndian.AppendUint16(append(frame, 126), uint16(n))
	default:
		frame = binary.BigEndian.AppendUint64(append(frame, 127), uint64(n))
	}
	for _, part := range [][]byte{frame, payload} {
		if _, err := s.w.Write(part); err != nil {
			s.writeError = err
			return err
		}
	}
	if err := s.rc.Flush(); err != nil {
		s.writeError = err
		return err
	}
	if op == opClose {
		s.closeSent = true
	}
	return nil
}

func (s *streamPeer) close(code int, reason string) {
	_ = s.writeFrame(opClose, closePayload(code, reason))
}

// closePayload is a close frame's body. The code is the app's: one a
// close frame may not carry (RFC 6455 §7.4: below 1000, the codes that
// only report — 1005 none given, 1006 gone, 1015 TLS — and the reserved
// ones) is sent as no code at all, which a client reads as 1005. The
// reason is cut to the 123 bytes a close frame has room for, at a
// character's boundary, and must be UTF-8, as the client checks.
func closePayload(code int, reason string) []byte {
	if code, reason = sendableClose(code, reason); code == 0 {
		return nil
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// sendableClose is what of the app's close a close frame carries: its code
// when one may be sent (else 0: none, and no reason), and its reason as
// valid UTF-8 within the frame's 123 bytes.
func sendableClose(code int, reason string) (int, string) {
	if !sendableCloseCode(code) {
		return 0, ""
	}
	return code, textcut.Prefix(strings.ToValidUTF8(reason, ""), 123)
}

// sendableCloseCode reports whether a close frame may carry code: the
// defined codes an endpoint may send, and those for libraries (3000–3999)
// and applications (4000–4999).
func sendableCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

func (s *streamPeer) closeNow() { _ = s.body.Close() }
