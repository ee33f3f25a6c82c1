package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
	}{
		{"http/1.1", false, "13", []string{key}, ""},
		{"http/1.1 key with spaces", false, "13", []string{" " + key + " "}, ""},
		{"http/2 needs no key", true, "13", nil, ""},
		{"http/1.1 version 8", false, "8", []string{key}, `unsupported Sec-WebSocket-Version "8"`},
		{"http/2 version 8", true, "8", nil, `unsupported Sec-WebSocket-Version "8"`},
		{"http/2 no version", true, "", nil, `unsupported Sec-WebSocket-Version ""`},
		{"no key", false, "13", nil, "0 Sec-WebSocket-Key headers"},
		{"two keys", false, "13", []string{key, key}, "2 Sec-WebSocket-Key headers"},
		{"short key", false, "13", []string{"c2hvcnQ="}, "not 16 bytes"},
		{"key not base64", false, "13", []string{"not base64 at all!!"}, "not 16 bytes"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
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
		got := openingProblem(r)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
