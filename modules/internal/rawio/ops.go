package rawio

import (
	"io"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The function a call hands its RawConn runs inside the socket's lock
// and reports through the call's state. As a closure over the call's
// variables it would be allocated on every call, with the variables it
// captures: a request's reads and writes on a client's connection and a
// worker's channel made ~20 small allocations, garbage that brings the
// next collection closer. So each operation's state is a struct whose
// method is taken as a func value once, when the struct is made; a
// Stream keeps one of each for its connection, behind a mutex (streamOps).

// readOp is the state of one Read.
type readOp struct {
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // o.recv, made once
}

func newReadOp() *readOp {
	o := &readOp{}
	o.fn = o.recv
	return o
}

// controlsNothing is the read of an empty buffer.
func controlsNothing(uintptr) {}

func (o *readOp) recv(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&o.p[0])), uintptr(len(o.p)), syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		o.n, o.errno = int(r), e
		return true
	}
}

func (o *readOp) do(c syscall.RawConn, p []byte) (int, error) {
	if len(p) == 0 {
		// nothing to read, but as net.Conn: a closed connection says so
		// (Control, not Read: a deadline past does not fail it, as it
		// does not net.Conn's)
		return 0, c.Control(controlsNothing)
	}
	o.p, o.n, o.errno = p, 0, 0
	err := c.Read(o.fn)
	n, errno := o.n, o.errno
	o.p = nil // keep nothing of the caller's alive
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, errno
	case n == 0:
		return 0, io.EOF
	}
	raceRead(p[:n])
	return n, nil
}

// writeOp is the state of one Write.
type writeOp struct {
	p     []byte
	n     int
	errno syscall.Errno
	stuck bool                  // no progress and no error: not a stream socket's answer
	fn    func(fd uintptr) bool // o.send, made once
}

func newWriteOp() *writeOp {
	o := &writeOp{}
	o.fn = o.send
	return o
}

func (o *writeOp) send(fd uintptr) bool {
	for o.n < len(o.p) {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&o.p[o.n])), uintptr(len(o.p)-o.n), sendFlags, 0, 0)
		switch e {
		case 0:
			if r == 0 {
				o.stuck = true
				return true
			}
			o.n += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			o.errno = e
			return true
		}
	}
	return true
}

func (o *writeOp) do(c syscall.RawConn, p []byte) (int, error) {
	raceWrite(p)
	o.p, o.n, o.errno, o.stuck = p, 0, 0, false
	err := c.Write(o.fn)
	n, errno, stuck := o.n, o.errno, o.stuck
	o.p = nil
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, errno
	case stuck:
		return n, io.ErrUnexpectedEOF
	}
	return n, nil
}

// keptIovecs is how many iovecs a writevOp keeps between calls: a
// worker's batch of pipelined requests fits, and a connection does not
// hold 16 KiB for the rare call of a thousand pieces (those allocate).
const keptIovecs = 64

// writevOp is the state of one Writev.
type writevOp struct {
	bufs  [][]byte
	total int64
	errno syscall.Errno
	stuck bool
	iov   []unix.Iovec
	msg   unix.Msghdr
	fn    func(fd uintptr) bool // o.sendmsg, made once
}

func newWritevOp() *writevOp {
	o := &writevOp{}
	o.fn = o.sendmsg
	return o
}

func (o *writevOp) sendmsg(fd uintptr) bool {
	for {
		for len(o.bufs) > 0 && len(o.bufs[0]) == 0 {
			o.bufs = o.bufs[1:]
		}
		if len(o.bufs) == 0 {
			return true
		}
		o.iov = o.iov[:0]
		for _, b := range o.bufs[:min(len(o.bufs), maxIovecs)] {
			if len(b) > 0 {
				v := unix.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				o.iov = append(o.iov, v)
			}
		}
		o.msg.Iov = &o.iov[0]
		o.msg.SetIovlen(len(o.iov))
		r, _, e := syscall.RawSyscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&o.msg)), sendFlags)
		switch e {
		case 0:
			if r == 0 {
				o.stuck = true
				return true
			}
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			o.errno = e
			return true
		}
		o.total += int64(r)
		for n := int(r); n > 0; {
			if n < len(o.bufs[0]) {
				o.bufs[0] = o.bufs[0][n:]
				break
			}
			n -= len(o.bufs[0])
			o.bufs = o.bufs[1:]
		}
	}
}

func (o *writevOp) do(c syscall.RawConn, bufs [][]byte) (int64, error) {
	for _, b := range bufs {
		raceWrite(b)
	}
	if pieces := min(len(bufs), maxIovecs); cap(o.iov) < pieces {
		o.iov = make([]unix.Iovec, 0, pieces)
	}
	o.bufs, o.total, o.errno, o.stuck = bufs, 0, 0, false
	err := c.Write(o.fn)
	total, errno, stuck := o.total, o.errno, o.stuck
	// keep nothing written alive, nor a large array
	clear(o.iov[:cap(o.iov)])
	if cap(o.iov) > keptIovecs {
		o.iov = nil
	}
	o.msg.Iov = nil
	o.bufs = nil
	switch {
	case err != nil:
		return total, err
	case errno != 0:
		return total, errno
	case stuck:
		return total, io.ErrUnexpectedEOF
	}
	return total, nil
}

// streamOps is a Stream's own state for its calls. The socket's locks
// order calls only once they hand it their function, so each state has a
// mutex of its own: concurrent Reads (or Writes) take turns, as they do
// on the socket's lock (a waiting one sees its deadline once it gets
// there).
type streamOps struct {
	readMu  sync.Mutex
	read    *readOp
	writeMu sync.Mutex // Write and Writev: the socket has one write lock
	write   *writeOp
	writev  *writevOp
}

func newStreamOps() *streamOps {
	return &streamOps{read: newReadOp(), write: newWriteOp(), writev: newWritevOp()}
}
