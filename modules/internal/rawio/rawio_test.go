package rawio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/internal/rawio/rawiotest"
)

// pair returns the two ends of a Unix socket pair, non-blocking in Go's
// poller as a worker channel's and a client's connections are.
func pair(t testing.TB) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func rawOf(t testing.TB, c *net.UnixConn) syscall.RawConn {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// readAll reads n bytes from c, a little at a time and slowly at first,
// so that the writer fills the socket's buffer and waits in the poller.
func readAll(c net.Conn, n int) ([]byte, error) {
	got := make([]byte, 0, n)
	buf := make([]byte, 7000)
	for i := 0; len(got) < n; i++ {
		if i < 20 {
			time.Sleep(time.Millisecond)
		} else if i == 20 {
			buf = make([]byte, 256<<10)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, err := c.Read(buf[:min(len(buf), n-len(got))])
		got = append(got, buf[:k]...)
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

func TestWriteIsWholePastTheSocketsBuffer(t *testing.T) {
	a, b := pair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	done := make(chan []byte)
	go func() { got, _ := readAll(b, len(want)); done <- got }()
	_ = a.SetWriteDeadline(time.Now().Add(30 * time.Second))
	n, err := Write(rawOf(t, a), want)
	if err != nil || n != len(want) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
	}
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("the peer read %d bytes, not the %d written in order", len(got), len(want))
	}
}

// Writes of several goroutines at once each arrive whole, as net.Conn's
// do: a worker channel is written by the request's goroutine, a spilled
// body's and a Cancel's.
func TestWritesOfSeveralGoroutinesDoNotInterleave(t *testing.T) {
	a, b := pair(t)
	raw := rawOf(t, a)
	_ = a.SetWriteDeadline(time.Now().Add(30 * time.Second))
	const writers, records, size = 4, 16, 256 << 10
	wg := startWriters(t, writers, records, size, func(_, _ int, record []byte) (int64, error) {
		n, err := Write(raw, record)
		return int64(n), err
	})
	got, err := readAll(b, writers*records*size)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[byte]int{}
	for i := 0; i < len(got); i += size {
		rec := got[i : i+size]
		if bytes.Count(rec, rec[:1]) != size {
			t.Fatalf("record %d mixes the bytes of two writers", i/size)
		}
		counts[rec[0]]++
	}
	for w := range writers {
		if counts[byte('a'+w)] != records {
			t.Fatalf("writer %d: %d records arrived, want %d", w, counts[byte('a'+w)], records)
		}
	}
}

// startWriters starts writers goroutines, each writing records records of
// size bytes of its own letter ('a' plus its number) with write (given the
// writer's number and the record's), and returns what waits for them. A
// write that fails or comes short is reported, and ends its writer.
func startWriters(t *testing.T, writers, records, size int, write func(w, i int, record []byte) (int64, error)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			record := bytes.Repeat([]byte{byte('a' + w)}, size)
			for i := range records {
				if n, err := write(w, i, record); err != nil || n != int64(size) {
					t.Errorf("writer %d: %d, %v", w, n, err)
					return
				}
			}
		}()
	}
	return &wg
}

// writevCase writes pieces with Writev and checks what the peer read.
func writevCase(t *testing.T, pieces [][]byte) {
	t.Helper()
	a, b := pair(t)
	var want []byte
	for _, p := range pieces {
		want = append(want, p...)
	}
	done := make(chan []byte)
	go func() { got, _ := readAll(b, len(want)); done <- got }()
	_ = a.SetWriteDeadline(time.Now().Add(30 * time.Second))
	n, err := Writev(rawOf(t, a), pieces)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("Writev of %d pieces = %d, %v; want %d, nil", len(pieces), n, err, len(want))
	}
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatalf("the peer read %d bytes, not the %d of %d pieces in order", len(got), len(want), len(pieces))
	}
}

// Property: whatever the pieces (empty ones, more than one writev takes,
// more than the socket's buffer holds, cut anywhere by partial writes),
// the peer reads them all, in order, once.
func TestWritevWritesEveryPieceInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 30 {
		count := rng.IntN(2000)
		if round < 3 {
			count = []int{0, 1, maxIovecs + 1}[round]
		}
		pieces := make([][]byte, count)
		for i := range pieces {
			size := 0
			switch rng.IntN(16) {
			case 1, 2, 3, 4, 5:
				size = rng.IntN(16)
			case 6, 7, 8, 9, 10:
				size = rng.IntN(4096)
			case 11:
				size = rng.IntN(300 << 10)
			}
			p := make([]byte, size)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			pieces[i] = p
		}
		writevCase(t, pieces)
	}
}

func FuzzWritev(f *testing.F) {
	f.Add([]byte("hello, world"), []byte{0, 3, 3, 200})
	f.Add(bytes.Repeat([]byte{9}, 1<<16), []byte{255, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		var pieces [][]byte
		for _, c := range cuts {
			k := min(int(c)*int(c), len(data))
			pieces = append(pieces, data[:k])
			data = data[k:]
		}
		writevCase(t, append(pieces, data))
	})
}

func TestReadAsNetConnDoes(t *testing.T) {
	a, b := pair(t)
	raw := rawOf(t, a)
	if n, err := Read(raw, nil); n != 0 || err != nil {
		t.Fatalf("an empty read = %d, %v; want 0, nil", n, err)
	}
	// past a deadline too, as net.Conn's
	_ = a.SetReadDeadline(time.Now().Add(-time.Second))
	if n, err := Read(raw, nil); n != 0 || err != nil {
		t.Fatalf("an empty read past a deadline = %d, %v; want 0, nil", n, err)
	}
	_ = a.SetReadDeadline(time.Time{})
	// a deadline: the poller's error, a timeout, with net.Conn's op
	_ = a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := Read(raw, make([]byte, 10))
	err = toNetError("read", "unix", a.LocalAddr(), a.RemoteAddr(), err)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a read past its deadline: %v; want a timeout", err)
	}
	if oe, ok := err.(*net.OpError); !ok || oe.Op != "read" {
		t.Fatalf("a read past its deadline: %#v; want a *net.OpError of op read", err)
	}
	_ = a.SetReadDeadline(time.Time{})
	// what comes is read; the peer's close is io.EOF
	if _, err := b.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if n, err := Read(raw, buf); n != 2 || err != nil || string(buf[:2]) != "hi" {
		t.Fatalf("Read = %d %q, %v; want 2 \"hi\", nil", n, buf[:n], err)
	}
	b.Close()
	if n, err := Read(raw, buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
	// a write to a closed peer fails with the system call's error
	_, err = Write(raw, []byte("x"))
	err = toNetError("write", "unix", a.LocalAddr(), a.RemoteAddr(), err)
	if !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("a write to a closed peer: %v; want EPIPE", err)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "write" {
		t.Fatalf("a write to a closed peer: %#v; want an *os.SyscallError of write", err)
	}
	// a closed connection: net.ErrClosed
	a.Close()
	if _, err := Read(raw, buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a read of a closed connection: %v; want net.ErrClosed", err)
	}
	if _, err := Read(raw, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("an empty read of a closed connection: %v; want net.ErrClosed, as net.Conn's", err)
	}
}

// A read that waits for its data is woken by a close from another
// goroutine, as net.Conn's is.
func TestReadWaitingIsEndedByClose(t *testing.T) {
	a, _ := pair(t)
	raw := rawOf(t, a)
	errc := make(chan error, 1)
	go func() { _, err := Read(raw, make([]byte, 10)); errc <- err }()
	time.Sleep(100 * time.Millisecond) // for the read to park in the poller (it cannot be seen; sooner, it meets ErrClosed at once, as net.Conn's does)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("the waiting read ended with %v; want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting read was not ended by the close")
	}
}

// The point of the package: a goroutine reading and writing through it
// never enters Go's system-call state, where one through net.Conn does on
// every call. Go's execution tracer records each entry.
func TestReadsAndWritesEnterNoSystemCallState(t *testing.T) {
	a, b := pair(t)
	raw := rawOf(t, a)
	go func() { // the peer echoes
		buf := make([]byte, 100)
		for {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			if _, err := b.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	_ = a.SetDeadline(time.Now().Add(30 * time.Second))
	const rounds = 200
	exchange := func(write func([]byte) (int, error), read func([]byte) (int, error)) func() {
		return func() {
			buf := make([]byte, 100)
			for range rounds {
				if _, err := write([]byte("ping")); err != nil {
					t.Error(err)
					return
				}
				if _, err := io.ReadFull(readerFunc(read), buf[:4]); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}
	n := rawiotest.SystemCalls(t,
		exchange(func(p []byte) (int, error) { return Write(raw, p) }, func(p []byte) (int, error) { return Read(raw, p) }),
		exchange(a.Write, a.Read))
	if n[1] < rounds {
		t.Fatalf("the tracer saw %d system calls of net.Conn's %d writes and reads: it cannot tell", n[1], 2*rounds)
	}
	if n[0] != 0 {
		t.Fatalf("%d of rawio's writes and reads entered the system-call state (net.Conn's: %d)", n[0], n[1])
	}
}

// A descriptor someone set blocking (File does, on some systems) must not
// make a raw call wait for the peer: the goroutine would hold its P, and
// every stop of the world would wait for it. The calls do not wait
// (MSG_DONTWAIT): they park in the poller, and deadlines end them.
func TestABlockingDescriptorDoesNotStallTheProcess(t *testing.T) {
	a, _ := pair(t)
	raw := rawOf(t, a)
	if err := raw.Control(func(fd uintptr) { _ = syscall.SetNonblock(int(fd), false) }); err != nil {
		t.Fatal(err)
	}
	_ = a.SetDeadline(time.Now().Add(300 * time.Millisecond))
	done := make(chan error, 2)
	go func() { _, err := Read(raw, make([]byte, 10)); done <- err }()
	go func() { // past the socket's buffer: the peer reads nothing
		_, err := Write(raw, make([]byte, 32<<20))
		done <- err
	}()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("a call on a blocking descriptor ended with %v, want its deadline", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call on a blocking descriptor waited past its deadline: it blocked in the kernel")
		}
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// streamPair is pair's two ends read and written through Streams.
func streamPair(t testing.TB) (a, b *UnixConn) {
	t.Helper()
	x, y := pair(t)
	a, err := NewUnixConn(x)
	if err != nil {
		t.Fatal(err)
	}
	b, err = NewUnixConn(y)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// A Stream keeps the state of its calls between them (ops.go): goroutines
// that call Write and Writev, and Read, on one Stream at once still each
// get their own call: every byte written is read once, and every byte a
// Read reports is in that Read's own buffer. (Whole records are
// TestWritesOfSeveralGoroutinesDoNotInterleave's.)
func TestCallsOfSeveralGoroutinesOnOneStreamStayTheirOwn(t *testing.T) {
	a, b := streamPair(t)
	_ = a.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_ = b.SetReadDeadline(time.Now().Add(30 * time.Second))
	const writers, records, size = 4, 64, 24 << 10
	wg := startWriters(t, writers, records, size, func(w, i int, record []byte) (int64, error) {
		if (w+i)%2 == 0 {
			n, err := a.Write(record)
			return int64(n), err
		}
		return a.Writev([][]byte{record[:size/3], record[size/3:]})
	})
	const readers = 3
	got := make([][]byte, readers)
	var total sync.WaitGroup
	var mu sync.Mutex
	read := 0
	for r := range readers {
		total.Add(1)
		go func() {
			defer total.Done()
			buf := make([]byte, 5000)
			for {
				mu.Lock()
				done := read >= writers*records*size
				mu.Unlock()
				if done {
					return
				}
				clear(buf) // a byte some other call wrote here would show as a letter
				_ = b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := b.Read(buf)
				if n > 0 {
					if zero := bytes.IndexByte(buf[:n], 0); zero >= 0 {
						t.Errorf("reader %d: byte %d of the %d its Read reported was never written to its buffer", r, zero, n)
						return
					}
					got[r] = append(got[r], buf[:n]...)
					mu.Lock()
					read += n
					mu.Unlock()
				}
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("reader %d: %v", r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	total.Wait()
	counts := map[byte]int{}
	for _, g := range got {
		for _, c := range g {
			counts[c]++
		}
	}
	for w := range writers {
		if c := counts[byte('a'+w)]; c != records*size {
			t.Errorf("writer %d: %d bytes read, want %d", w, c, records*size)
		}
	}
}

// A Stream's Read, Write and Writev allocate nothing: a closure over a
// call's variables, handed to the RawConn, would be allocated on every
// call (about 20 allocations per proxied request).
func TestStreamCallsAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's annotations allocate")
	}
	a, b := streamPair(t)
	msg := []byte("a request's frames")
	buf := make([]byte, len(msg))
	bufs := make([][]byte, 3)
	for _, tc := range []struct {
		name string
		call func()
	}{
		{"Write then Read", func() {
			_, _ = a.Write(msg)
			_, _ = io.ReadFull(b, buf)
		}},
		{"Writev then Read", func() {
			bufs[0], bufs[1], bufs[2] = msg[:3], msg[3:9], msg[9:]
			_, _ = a.Writev(bufs)
			_, _ = io.ReadFull(b, buf)
		}},
	} {
		if n := testing.AllocsPerRun(200, tc.call); n != 0 {
			t.Errorf("%s: %.1f allocations per call, want 0", tc.name, n)
		}
	}
}
