// Package rawio reads and writes stream sockets (TCP, Unix SOCK_STREAM)
// with system calls Go's scheduler is not told of, through the socket's
// syscall.RawConn: the same locks, deadlines and network poller as
// net.Conn's own Read and Write, without entering the scheduler's
// system-call state.
//
// Why: every system call a goroutine makes through the syscall package
// wakes Go's sysmon thread when it sleeps because every P was idle, and
// puts it back on its shortest (20 µs) tick; on a tick, sysmon takes the P
// of a thread that has been in a system call for a while and hands it to
// another thread. A server at a moderate rate goes idle between requests,
// so each request paid for sysmon's wake-up and often for a hand-off of
// its P: on the 2-CPU VM of tests/bench, a plain net/http server on one P
// at 5,000 req/s used 50–64 µs of CPU and 2.9 context switches per
// request, and 28–30 µs and 1.0 with its connections read and written
// here. Every call is made with MSG_DONTWAIT, so it cannot wait for the
// peer whatever the descriptor's mode (EAGAIN parks the goroutine in the
// poller, as net.Conn does): the P it keeps is held while the kernel
// copies the bytes, a few microseconds unless the kernel itself must wait
// (for memory, say), as any system call may.
//
// Stream (stream.go) is how a connection uses it; TCPConn and UnixConn
// (conn.go) are the two connections, with every other method their own.
//
// The race detector does not see inside raw system calls: race.go tells
// it what syscall.Read and syscall.Write would (the bytes read and
// written, and their order).
package rawio

import (
	"net"
	"os"
	"syscall"
)

// Read reads into p from the socket of c, waiting in the poller until
// something comes (or c's read deadline passes, or c is closed). It
// returns io.EOF at the end of the stream, and a system call's failure as
// its syscall.Errno. (A Stream reads without allocating; this allocates
// the state of one call.)
func Read(c syscall.RawConn, p []byte) (int, error) {
	return newReadOp().do(c, p)
}

// Write writes all of p to the socket of c, whole: c's write lock is held
// throughout, so writes of different goroutines never interleave. It
// waits in the poller while the socket's buffer is full. A write that
// makes no progress and reports no error ends with io.ErrUnexpectedEOF.
func Write(c syscall.RawConn, p []byte) (int, error) {
	return newWriteOp().do(c, p)
}

// maxIovecs bounds the pieces of one sendmsg (the kernel's UIO_MAXIOV).
const maxIovecs = 1024

// sendFlags: never wait, whatever the descriptor's mode (a goroutine in a
// raw system call holds its P, and every stop of the world waits for it:
// a descriptor someone set blocking, through File, must not stall the
// process), and no SIGPIPE for a peer that left (EPIPE is returned).
const sendFlags = syscall.MSG_DONTWAIT | syscall.MSG_NOSIGNAL

// Writev writes every buffer of bufs in order, with Write's guarantees, in
// as few sendmsg calls as the socket takes. It consumes bufs as net.Buffers
// does: the slices it was given are resliced past what was written.
func Writev(c syscall.RawConn, bufs [][]byte) (int64, error) {
	return newWritevOp().do(c, bufs)
}

// toNetError gives err, from Read, Write or Writev on the connection between
// local and remote, the form net.Conn's own methods give it, so that code
// that inspects it (net/http's handling of read errors) reads it the same:
// a system call's failure becomes a *net.OpError of op around an
// *os.SyscallError, and the poller's own (a deadline, a closed connection,
// reported as "raw-read" or "raw-write") takes op's name. io.EOF and nil
// are returned as they are.
func toNetError(op, network string, local, remote net.Addr, err error) error {
	switch e := err.(type) {
	case syscall.Errno:
		return &net.OpError{Op: op, Net: network, Source: local, Addr: remote, Err: os.NewSyscallError(op, e)}
	case *net.OpError:
		named := *e
		named.Op = op
		return &named
	}
	return err
}
