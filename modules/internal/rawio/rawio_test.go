package rawio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime/trace"
	"sync"
	"syscall"
	"testing"
	"time"

	xtrace "golang.org/x/exp/trace"
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
	const writers, records, size = 4, 16, 256 << 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			record := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range records {
				if n, err := Write(raw, record); err != nil || n != size {
					t.Errorf("Write = %d, %v", n, err)
					return
				}
			}
		}()
	}
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
	// a deadline: the poller's error, a timeout, with net.Conn's op
	_ = a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := Read(raw, make([]byte, 10))
	err = NetError("read", "unix", a.LocalAddr(), a.RemoteAddr(), err)
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
	err = NetError("write", "unix", a.LocalAddr(), a.RemoteAddr(), err)
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
}

// A read that waits for its data is woken by a close from another
// goroutine, as net.Conn's is.
func TestReadWaitingIsEndedByClose(t *testing.T) {
	a, _ := pair(t)
	raw := rawOf(t, a)
	errc := make(chan error, 1)
	go func() { _, err := Read(raw, make([]byte, 10)); errc <- err }()
	time.Sleep(20 * time.Millisecond)
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
	const rounds = 200
	exchange := func(write func([]byte) (int, error), read func([]byte) (int, error)) {
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
	var out bytes.Buffer
	if err := trace.Start(&out); err != nil {
		t.Skipf("the execution tracer is in use: %v", err)
	}
	ctx := context.Background()
	trace.WithRegion(ctx, "rawio", func() {
		exchange(func(p []byte) (int, error) { return Write(raw, p) }, func(p []byte) (int, error) { return Read(raw, p) })
	})
	trace.WithRegion(ctx, "net.Conn", func() { exchange(a.Write, a.Read) })
	trace.Stop()

	syscalls := map[string]int{}
	region := map[xtrace.GoID]string{}
	rd, err := xtrace.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := rd.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind() {
		case xtrace.EventRegionBegin:
			region[ev.Goroutine()] = ev.Region().Type
		case xtrace.EventRegionEnd:
			delete(region, ev.Goroutine())
		case xtrace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != xtrace.ResourceGoroutine {
				continue
			}
			if _, to := st.Goroutine(); to == xtrace.GoSyscall {
				if name, ok := region[st.Resource.Goroutine()]; ok {
					syscalls[name]++
				}
			}
		}
	}
	if syscalls["net.Conn"] < rounds {
		t.Fatalf("the tracer saw %d system calls of net.Conn's %d writes and reads: it cannot tell", syscalls["net.Conn"], 2*rounds)
	}
	if syscalls["rawio"] != 0 {
		t.Fatalf("%d of rawio's writes and reads entered the system-call state (net.Conn's: %d)", syscalls["rawio"], syscalls["net.Conn"])
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
