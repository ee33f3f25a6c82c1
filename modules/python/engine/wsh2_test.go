package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hearth-dev/hearth/modules/protocol"
)

// clientFrame is a masked client frame (RFC 6455 §5.2).
func clientFrame(first byte, payload []byte) []byte {
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	frame := []byte{first}
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n <= 0xFFFF:
		frame = binary.BigEndian.AppendUint16(append(frame, 0x80|126), uint16(n))
	default:
		frame = binary.BigEndian.AppendUint64(append(frame, 0x80|127), uint64(n))
	}
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	return frame
}

func TestStreamPeerRead(t *testing.T) {
	join := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name       string
		in         []byte
		wantBinary bool
		wantData   string
		wantCode   int    // close code read from the client, or -1
		wantSent   []byte // what the server wrote back
		wantClose  int    // or: the code of the close frame it sent (its reason says why)
	}{
		{name: "text", in: clientFrame(0x81, []byte("héllo")), wantData: "héllo"},
		{name: "binary, 16-bit length", in: clientFrame(0x82, bytes.Repeat([]byte{7}, 300)), wantBinary: true, wantData: string(bytes.Repeat([]byte{7}, 300))},
		{name: "fragments around a ping", in: join(clientFrame(0x01, []byte("ab")), clientFrame(0x89, []byte("p")), clientFrame(0x80, []byte("c"))), wantData: "abc", wantSent: []byte{0x8A, 1, 'p'}},
		{name: "a pong is ignored", in: join(clientFrame(0x8A, nil), clientFrame(0x81, []byte("x"))), wantData: "x"},
		{name: "close with a code is answered", in: clientFrame(0x88, []byte{0x0F, 0xA2, 'b'}), wantCode: 4002, wantSent: []byte{0x88, 3, 0x0F, 0xA2, 'b'}},
		{name: "close without a code: 1005, answered empty", in: clientFrame(0x88, nil), wantCode: 1005, wantSent: []byte{0x88, 0}},
		{name: "close of one byte", in: clientFrame(0x88, []byte{0x03}), wantCode: -1, wantClose: 1002},
		{name: "close with 1006, which no peer sends", in: clientFrame(0x88, []byte{0x03, 0xEE}), wantCode: -1, wantClose: 1002},
		{name: "close with 1005", in: clientFrame(0x88, []byte{0x03, 0xED}), wantCode: -1, wantClose: 1002},
		{name: "close with 0", in: clientFrame(0x88, []byte{0, 0}), wantCode: -1, wantClose: 1002},
		{name: "close with 5000", in: clientFrame(0x88, []byte{0x13, 0x88}), wantCode: -1, wantClose: 1002},
		{name: "close with a reason that is not UTF-8", in: clientFrame(0x88, []byte{0x03, 0xE8, 0xFF}), wantCode: -1, wantClose: 1007},
		{name: "close with 1000 and a reason", in: clientFrame(0x88, []byte{0x03, 0xE8, 'o', 'k'}), wantCode: 1000, wantSent: []byte{0x88, 4, 0x03, 0xE8, 'o', 'k'}},
		{name: "unmasked", in: []byte{0x81, 1, 'u'}, wantCode: -1, wantClose: 1002},
		{name: "reserved bits", in: clientFrame(0xC1, []byte("x")), wantCode: -1, wantClose: 1002},
		{name: "continuation without a message", in: clientFrame(0x80, []byte("x")), wantCode: -1, wantClose: 1002},
		{name: "new message inside a fragmented one", in: join(clientFrame(0x01, []byte("a")), clientFrame(0x81, []byte("b"))), wantCode: -1, wantClose: 1002},
		{name: "fragmented ping", in: clientFrame(0x09, []byte("p")), wantCode: -1, wantClose: 1002},
		{name: "unknown opcode", in: clientFrame(0x83, nil), wantCode: -1, wantClose: 1002},
		{name: "invalid UTF-8", in: clientFrame(0x81, []byte{0xFF}), wantCode: -1, wantClose: 1007},
		{name: "too big", in: []byte{0x82, 0xFF, 0, 0, 0, 0, 0x10, 0, 0, 0}, wantCode: -1, wantClose: 1009},
		{name: "truncated", in: clientFrame(0x81, []byte("hello"))[:5], wantCode: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			peer := &streamPeer{body: io.NopCloser(nil), in: bufio.NewReader(bytes.NewReader(tt.in)), rc: http.NewResponseController(rec), w: rec}
			isBinary, data, code, err := peer.read(context.Background())
			if tt.wantCode != 0 {
				if err == nil || code != tt.wantCode {
					t.Fatalf("got code %d, err %v; want code %d and an error", code, err, tt.wantCode)
				}
			} else if err != nil || isBinary != tt.wantBinary || string(data) != tt.wantData {
				t.Fatalf("got %v %q %v; want %v %q", isBinary, data, err, tt.wantBinary, tt.wantData)
			}
			sent := rec.Body.Bytes()
			if tt.wantClose != 0 {
				if len(sent) < 4 || sent[0] != 0x88 || int(binary.BigEndian.Uint16(sent[2:4])) != tt.wantClose || int(sent[1]) != len(sent)-2 {
					t.Errorf("the server wrote % x, want a close frame with code %d", sent, tt.wantClose)
				}
			} else if !bytes.Equal(sent, tt.wantSent) && !(len(sent) == 0 && tt.wantSent == nil) {
				t.Errorf("the server wrote % x, want % x", sent, tt.wantSent)
			}
		})
	}
}

func TestStreamPeerWrite(t *testing.T) {
	tests := []struct {
		binary bool
		size   int
		head   []byte
	}{
		{false, 5, []byte{0x81, 5}},
		{true, 126, []byte{0x82, 126, 0, 126}},
		{true, 70000, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70}},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		peer := &streamPeer{rc: http.NewResponseController(rec), w: rec}
		payload := bytes.Repeat([]byte{'a'}, tt.size)
		if err := peer.write(context.Background(), tt.binary, payload); err != nil {
			t.Fatal(err)
		}
		if want := append(tt.head, payload...); !bytes.Equal(rec.Body.Bytes(), want) {
			t.Errorf("%d bytes: head % x, want % x", tt.size, rec.Body.Bytes()[:len(tt.head)], tt.head)
		}
		// after a close, nothing more is written
		peer.close(1000, "")
		if err := peer.write(context.Background(), false, []byte("late")); err == nil {
			t.Errorf("a write after the close frame succeeded")
		}
	}
}

func TestAcceptStream(t *testing.T) {
	r := httptest.NewRequest(http.MethodConnect, "/ws", nil)
	rec := httptest.NewRecorder()
	if _, err := acceptStream(rec, r, "chat"); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("status %d, err %v; want 200", rec.Code, err)
	}
	if rec.Header().Get("Sec-WebSocket-Protocol") != "chat" {
		t.Errorf("the chosen subprotocol is missing")
	}
}

// TestOpeningProblem: what a WebSocket opening must carry, over HTTP/1.1
// and HTTP/2, before the app is asked.
func TestOpeningProblem(t *testing.T) {
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	for _, tt := range []struct {
		name    string
		http2   bool
		version string
		keys    []string
		want    string
		change  func(r *http.Request) // after the defaults: HTTP/1.1, Connection: Upgrade, Upgrade: websocket
	}{
		{"http/1.1", false, "13", []string{key}, "", nil},
		{"http/1.1 key with spaces", false, "13", []string{" " + key + " "}, "", nil},
		{"http/2 needs no key", true, "13", nil, "", nil},
		{"http/1.1 version 8", false, "8", []string{key}, `unsupported Sec-WebSocket-Version "8"`, nil},
		{"http/2 version 8", true, "8", nil, `unsupported Sec-WebSocket-Version "8"`, nil},
		{"http/2 no version", true, "", nil, `unsupported Sec-WebSocket-Version ""`, nil},
		{"no key", false, "13", nil, "0 Sec-WebSocket-Key headers", nil},
		{"two keys", false, "13", []string{key, key}, "2 Sec-WebSocket-Key headers", nil},
		{"short key", false, "13", []string{"c2hvcnQ="}, "not 16 bytes", nil},
		{"key not base64", false, "13", []string{"not base64 at all!!"}, "not 16 bytes", nil},
		// what Go's WebSocket library refuses after the app accepted
		{"http/1.0", false, "13", []string{key}, "not over HTTP/1.0", func(r *http.Request) { r.Proto, r.ProtoMinor = "HTTP/1.0", 0 }},
		{"connection tokens", false, "13", []string{key}, "", func(r *http.Request) { r.Header.Set("Connection", "keep-alive, Upgrade") }},
		{"connection in two headers", false, "13", []string{key}, "", func(r *http.Request) {
			r.Header["Connection"] = []string{"keep-alive", "upgrade"}
		}},
		{"upgrade inside a token", false, "13", []string{key}, `"keep-alive-upgrade" does not list upgrade`, func(r *http.Request) {
			r.Header.Set("Connection", "keep-alive-upgrade")
		}},
		{"no connection", false, "13", []string{key}, `"" does not list upgrade`, func(r *http.Request) { r.Header.Del("Connection") }},
	} {
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		if tt.http2 {
			r.Method, r.ProtoMajor = http.MethodConnect, 2
			r.Header.Set(":protocol", "websocket")
		}
		if tt.version != "" {
			r.Header.Set("Sec-WebSocket-Version", tt.version)
		}
		for _, k := range tt.keys {
			r.Header.Add("Sec-WebSocket-Key", k)
		}
		if tt.change != nil {
			tt.change(r)
		}
		got := openingProblem(r)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestStreamPeerReadHoldsWhatArrived: a client frame that claims 1 MiB
// and sends 100 bytes has Caddy hold about what came, not the 1 MiB
// claimed (a client announcing 1 MiB frames on every WebSocket it may
// open, and sending nothing more, made Caddy allocate 1 MiB for each); a
// message of many frames arrives whole, unmasked.
func TestStreamPeerReadHoldsWhatArrived(t *testing.T) {
	frame := clientFrame(0x82, make([]byte, 1<<20))
	in, out := io.Pipe()
	defer out.Close()
	rec := httptest.NewRecorder()
	peer := &streamPeer{body: io.NopCloser(nil), in: bufio.NewReader(in), rc: http.NewResponseController(rec), w: rec}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	done := make(chan error, 1)
	go func() {
		_, _, _, err := peer.read(context.Background())
		done <- err
	}()
	head := len(frame) - 1<<20
	written := make(chan error, 1)
	go func() {
		_, err := out.Write(frame[:head+100])
		if err == nil {
			// this write is taken once the reader waits for the rest:
			// after it made room for what it reads
			_, err = out.Write(frame[head+100 : head+101])
		}
		written <- err
	}()
	select {
	case err := <-written:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-done:
		t.Fatalf("the read ended before the frame did: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the frame's first bytes were not read in 10 s")
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 256<<10 {
		t.Errorf("a frame claiming 1 MiB with 101 bytes sent: %d KiB allocated", grown>>10)
	}
	out.CloseWithError(io.ErrUnexpectedEOF)
	if err := <-done; err == nil {
		t.Errorf("a frame cut off read as a message")
	}

	// fragments: text in three frames, a ping between them
	message := strings.Repeat("héllo wörld ", 10000) // 130 KB
	parts := []string{message[:50000], message[50000:100001], message[100001:]}
	in2 := bytes.Join([][]byte{clientFrame(0x01, []byte(parts[0])), clientFrame(0x89, []byte("p")),
		clientFrame(0x00, []byte(parts[1])), clientFrame(0x80, []byte(parts[2]))}, nil)
	peer = &streamPeer{body: io.NopCloser(nil), in: bufio.NewReader(bytes.NewReader(in2)), rc: http.NewResponseController(rec), w: rec}
	binary, data, _, err := peer.read(context.Background())
	if err != nil || binary || string(data) != message {
		t.Errorf("a message in three frames: %v, binary %v, %d bytes equal %v", err, binary, len(data), string(data) == message)
	}
}

// FuzzStreamPeerRead: a message cut into frames anywhere (with pings
// between them) reads back whole; anything a client sends after it reads
// as a message within the limits (at most protocol.MaxPayload, text in
// UTF-8) or as an error, never a panic.
func FuzzStreamPeerRead(f *testing.F) {
	f.Add([]byte("hello"), []byte{2}, false, []byte{0x81, 0x85})
	f.Add([]byte("binary\xff"), []byte{1, 3, 0}, true, clientFrame(0x82, make([]byte, 70000)))
	f.Add([]byte(""), []byte{}, false, clientFrame(0x88, []byte{3, 232, 'b', 'y', 'e'}))
	f.Fuzz(func(t *testing.T, message, cuts []byte, isBinary bool, rest []byte) {
		if len(message) > protocol.MaxPayload {
			return // (refused, as it should be: not this property)
		}
		if !isBinary && !utf8.Valid(message) {
			isBinary = true
		}
		op := byte(0x01)
		if isBinary {
			op = 0x02
		}
		var in []byte
		left := message
		for i := 0; ; i++ {
			n := len(left)
			if i < len(cuts) && int(cuts[i]) < n {
				n = int(cuts[i])
			}
			first := op
			if i > 0 {
				first = 0x00
			}
			if n == len(left) {
				first |= 0x80
			}
			in = append(in, clientFrame(first, left[:n])...)
			left = left[n:]
			if first&0x80 != 0 {
				break
			}
			if i%2 == 1 {
				in = append(in, clientFrame(0x89, []byte("ping"))...)
			}
		}
		rec := httptest.NewRecorder()
		peer := &streamPeer{body: io.NopCloser(nil), in: bufio.NewReader(bytes.NewReader(append(in, rest...))), rc: http.NewResponseController(rec), w: rec}
		gotBinary, data, _, err := peer.read(context.Background())
		if err != nil || gotBinary != isBinary || !bytes.Equal(data, message) {
			t.Fatalf("a message of %d bytes in frames cut at %v: %v, binary %v, %d bytes", len(message), cuts, err, gotBinary, len(data))
		}
		for range 4 {
			gotBinary, data, _, err := peer.read(context.Background())
			if err != nil {
				return
			}
			if len(data) > protocol.MaxPayload || !gotBinary && !utf8.Valid(data) {
				t.Fatalf("read %d bytes, binary %v", len(data), gotBinary)
			}
		}
	})
}
