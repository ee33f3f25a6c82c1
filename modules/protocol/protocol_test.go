package protocol

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	frames := []struct {
		typ     Type
		flags   uint8
		stream  uint32
		payload []byte
	}{
		{Hello, 0, 0, []byte("1234")},
		{RequestHead, 0, 1, AppendPair(AppendPair(nil, "REQUEST_METHOD", "GET"), "PATH_INFO", "/")},
		{RequestBody, FlagEnd, 1, []byte("body")},
		{ResponseHead, 0, 1, []byte("200 OK\x00Content-Type\x00text/plain")},
		{ResponseBody, FlagEnd, 1, nil},
		{ResponseBody, 0, 7, bytes.Repeat([]byte{0xff}, MaxPayload)},
		{Abort, 0, 0xffffffff, []byte("boom")},
		{Fatal, 0, 0, []byte("Traceback …")},
	}
	var wire []byte
	for _, f := range frames {
		wire = AppendFrame(wire, f.typ, f.flags, f.stream, f.payload)
	}
	r := NewReader(bufio.NewReader(bytes.NewReader(wire)))
	for i, f := range frames {
		h, p, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if h.Type != f.typ || h.Flags != f.flags || h.Stream != f.stream || !bytes.Equal(p, f.payload) {
			t.Fatalf("frame %d: got %+v %q", i, h, truncate(p))
		}
		if h.End() != (f.flags&FlagEnd != 0) {
			t.Fatalf("frame %d: End() = %v", i, h.End())
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func truncate(p []byte) []byte {
	if len(p) > 32 {
		return p[:32]
	}
	return p
}

func TestMalformed(t *testing.T) {
	valid := AppendFrame(nil, ResponseBody, 0, 1, []byte("abc"))
	for _, tc := range []struct {
		name string
		wire []byte
		want string
	}{
		{"truncated header", valid[:5], "unexpected EOF"},
		{"truncated payload", valid[:len(valid)-1], "reading response-body payload"},
		{"unknown type", func() []byte { b := append([]byte(nil), valid...); b[4] = 99; return b }(), "unknown frame type 99"},
		{"type zero", func() []byte { b := append([]byte(nil), valid...); b[4] = 0; return b }(), "unknown frame type 0"},
		{"oversized", func() []byte {
			var b [HeaderSize]byte
			PutHeader(b[:], Header{Length: MaxPayload + 1, Type: ResponseBody})
			return b[:]
		}(), "exceeds protocol maximum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := NewReader(bytes.NewReader(tc.wire)).Next()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	var b [HeaderSize]byte
	PutHeader(b[:], Header{Length: MaxPayload + 1, Type: ResponseBody})
	if _, err := ParseHeader(b[:]); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
}

func TestFields(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"a\x00", []string{"a"}},
		{"a\x00b", []string{"a", "b"}},
		{"a\x00\x00b\x00", []string{"a", "", "b"}},
	} {
		var got []string
		Fields([]byte(tc.in), func(f []byte) bool { got = append(got, string(f)); return true })
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("Fields(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzReader feeds arbitrary bytes to the decoder: it must return frames or
// an error, never panic, never allocate beyond MaxPayload per frame, and
// re-encoding what it decoded must give back the same bytes.
func FuzzReader(f *testing.F) {
	f.Add(AppendFrame(nil, RequestHead, 0, 1, []byte("REQUEST_METHOD\x00GET\x00")))
	f.Add(AppendFrame(AppendFrame(nil, ResponseHead, 0, 3, []byte("200 OK")), ResponseBody, FlagEnd, 3, []byte("hi")))
	f.Add([]byte{0, 0, 0, 1, 9, 0, 0, 0, 0, 0, 'x'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 5, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, wire []byte) {
		r := NewReader(bytes.NewReader(wire))
		var again []byte
		consumed := 0
		for {
			h, p, err := r.Next()
			if err != nil {
				break
			}
			if len(p) > MaxPayload || int(h.Length) != len(p) {
				t.Fatalf("payload of %d bytes for header %+v", len(p), h)
			}
			again = AppendFrame(again, h.Type, h.Flags, h.Stream, p)
			consumed += HeaderSize + len(p)
		}
		if !bytes.Equal(again, wire[:consumed]) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func TestReaderBuffered(t *testing.T) {
	var stream []byte
	stream = AppendFrame(stream, ResponseHead, 0, 1, []byte("200"))
	stream = AppendFrame(stream, ResponseBody, FlagEnd, 1, []byte("hello"))
	cases := []struct {
		name  string
		r     io.Reader
		after []int // Buffered() after each Next
	}{
		{"buffered: the body frame arrived with the head", bufio.NewReader(bytes.NewReader(stream)), []int{HeaderSize + 5, 0}},
		{"unbuffered: nothing known", bytes.NewReader(stream), []int{0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fr := NewReader(c.r)
			for i, want := range c.after {
				if _, _, err := fr.Next(); err != nil {
					t.Fatal(err)
				}
				if got := fr.Buffered(); got != want {
					t.Errorf("after frame %d: Buffered() = %d, want %d", i+1, got, want)
				}
			}
		})
	}
}

// flaky returns its data, then fails once with err, then returns more.
type flaky struct {
	data, more []byte
	err        error
}

func (f *flaky) Read(p []byte) (int, error) {
	if len(f.data) > 0 {
		n := copy(p, f.data)
		f.data = f.data[n:]
		return n, nil
	}
	if f.err != nil {
		err := f.err
		f.err = nil
		return 0, err
	}
	if len(f.more) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.more)
	f.more = f.more[n:]
	return n, nil
}

// TestReaderCutFrameStays: a read that fails at a frame's boundary (a
// deadline before the next frame) leaves the Reader usable; one that
// fails in the middle of a frame is returned again by every later Next,
// since what follows would be parsed out of step (a payload's bytes as a
// header).
func TestReaderCutFrameStays(t *testing.T) {
	frame := AppendFrame(nil, ResponseBody, FlagEnd, 7, []byte("hello"))
	cut := errors.New("deadline")
	for _, c := range []struct {
		name   string
		at     int // bytes of the frame before the failure
		resume bool
	}{
		{"between frames", 0, true},
		{"in the header", 3, false},
		{"in the payload", HeaderSize + 2, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fr := NewReader(&flaky{data: frame[:c.at], more: frame[c.at:], err: cut})
			if _, _, err := fr.Next(); !errors.Is(err, cut) {
				t.Fatalf("first Next: %v, want the read's error", err)
			}
			h, p, err := fr.Next()
			if c.resume && (err != nil || string(p) != "hello" || h.Stream != 7) {
				t.Errorf("after a failure between frames: %v %q %v, want the frame", h, p, err)
			}
			if !c.resume && !errors.Is(err, cut) {
				t.Errorf("after a frame cut off: %v %q %v, want the error again", h, p, err)
			}
			if (fr.Err() == nil) != c.resume {
				t.Errorf("Err() = %v after a failure %s", fr.Err(), c.name)
			}
		})
	}
}

// TestReaderRefusedHeaderStays: a frame header Next refuses (an unknown
// type, a length past MaxPayload) is followed by a payload of a length not
// to be trusted, so the Reader is out of step: every later Next returns
// the error, and Err says so (the fork server's channel was used again,
// reading the refused frame's payload as the next header).
func TestReaderRefusedHeaderStays(t *testing.T) {
	good := AppendFrame(nil, ResponseBody, FlagEnd, 7, []byte("hello"))
	for _, c := range []struct {
		name   string
		header []byte
	}{
		{"an unknown type", func() []byte { b := AppendFrame(nil, ResponseBody, 0, 1, []byte("xx")); b[4] = 200; return b }()},
		{"past MaxPayload", func() []byte {
			b := AppendFrame(nil, ResponseBody, 0, 1, nil)
			binary.BigEndian.PutUint32(b, MaxPayload+1)
			return b
		}()},
	} {
		t.Run(c.name, func(t *testing.T) {
			fr := NewReader(bytes.NewReader(append(append([]byte(nil), c.header...), good...)))
			_, _, first := fr.Next()
			if first == nil {
				t.Fatal("the header was taken")
			}
			if h, p, err := fr.Next(); err == nil || !errors.Is(err, first) && err.Error() != first.Error() {
				t.Errorf("the next Next: %v %q %v, want the error again", h, p, err)
			}
			if fr.Err() == nil {
				t.Error("Err() is nil after a refused header")
			}
		})
	}
}

// TestReaderGivesBackALargeBuffer: a Reader keeps a large frame's buffer
// only while large frames follow. Before, a channel that once carried a
// 1 MiB frame held 1 MiB for good: a burst of large bodies to an ASGI app
// left every one of its channels (a hundred per worker) holding it.
func TestReaderGivesBackALargeBuffer(t *testing.T) {
	var b bytes.Buffer
	for _, size := range []int{MaxPayload, MaxPayload / 2, 1, 0, readerBuffer, readerBuffer + 1, 10} {
		b.Write(AppendFrame(nil, ResponseBody, 0, 1, bytes.Repeat([]byte{'x'}, size)))
	}
	fr := NewReader(bufio.NewReader(&b))
	for i, want := range []struct{ size, maxCap int }{
		{MaxPayload, MaxPayload},
		{MaxPayload / 2, MaxPayload}, // still large: the buffer is reused
		{1, readerBuffer},            // small again: given back
		{0, readerBuffer},
		{readerBuffer, readerBuffer},
		{readerBuffer + 1, readerBuffer + 1},
		{10, readerBuffer},
	} {
		_, p, err := fr.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(p) != want.size || cap(fr.buf) > want.maxCap || bytes.Count(p, []byte{'x'}) != want.size {
			t.Fatalf("frame %d: %d bytes with a buffer of %d, want %d bytes and at most %d", i, len(p), cap(fr.buf), want.size, want.maxCap)
		}
	}
}

// TestReaderShrink: Shrink lets go of a large frame's buffer at once; the
// frames after it are read whole, small or large, and the payload Next
// returned before it stays intact.
func TestReaderShrink(t *testing.T) {
	var b bytes.Buffer
	for _, f := range []struct {
		b    byte
		size int
	}{{'x', MaxPayload}, {'y', readerBuffer + 1}, {'z', 10}} {
		b.Write(AppendFrame(nil, ResponseBody, 0, 1, bytes.Repeat([]byte{f.b}, f.size)))
	}
	fr := NewReader(bufio.NewReader(&b))
	_, x, err := fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	fr.Shrink()
	if cap(fr.buf) != 0 {
		t.Errorf("after Shrink the reader holds %d bytes, want none", cap(fr.buf))
	}
	if _, y, err := fr.Next(); err != nil || bytes.Count(y, []byte{'y'}) != readerBuffer+1 {
		t.Fatalf("a large frame after Shrink: %d bytes, %v", len(y), err)
	}
	fr.Shrink()
	if _, z, err := fr.Next(); err != nil || string(z) != "zzzzzzzzzz" || cap(fr.buf) != readerBuffer {
		t.Fatalf("a small frame after Shrink: %q %v, buffer %d; want the usual %d", z, err, cap(fr.buf), readerBuffer)
	}
	if bytes.Count(x, []byte{'x'}) != MaxPayload {
		t.Errorf("the payload returned before Shrink was overwritten")
	}
	fr.Shrink() // the usual buffer is kept
	if cap(fr.buf) != readerBuffer {
		t.Errorf("Shrink of the usual buffer: %d bytes, want %d", cap(fr.buf), readerBuffer)
	}
}
