package rawio

import (
	"net"
	"syscall"
)

// Stream is the Read and Write (and writev) of one connection through
// this package, with the errors net.Conn gives. TCPConn and UnixConn
// embed it beside the connection they stand for, one level deeper, so
// that Stream's Read and Write win over the connection's own and every
// other method of the connection (deadlines, CloseWrite, sendfile's
// ReadFrom) is promoted.
type Stream struct {
	raw           syscall.RawConn
	network       string
	local, remote net.Addr
	ops           *streamOps // the calls' state, made once: no allocation per call (ops.go)
}

// Conn is what NewStream needs of a connection: *net.TCPConn and
// *net.UnixConn have it.
type Conn interface {
	SyscallConn() (syscall.RawConn, error)
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
}

// NewStream reads and writes c, a stream socket of network ("tcp",
// "unix"), through this package.
func NewStream(c Conn, network string) (Stream, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Stream{}, err
	}
	return Stream{raw: raw, network: network, local: c.LocalAddr(), remote: c.RemoteAddr(), ops: newStreamOps()}, nil
}

// Read reads as net.Conn does.
func (s Stream) Read(p []byte) (int, error) {
	s.ops.readMu.Lock()
	defer s.ops.readMu.Unlock() // (a panic must not leave the connection's calls waiting forever)
	n, err := s.ops.read.do(s.raw, p)
	return n, s.netError("read", err)
}

// Write writes all of p as net.Conn does.
func (s Stream) Write(p []byte) (int, error) {
	s.ops.writeMu.Lock()
	defer s.ops.writeMu.Unlock() // (a panic must not leave the connection's calls waiting forever)
	n, err := s.ops.write.do(s.raw, p)
	return n, s.netError("write", err)
}

// Writev writes every buffer of bufs in order, with Write's guarantees.
func (s Stream) Writev(bufs [][]byte) (int64, error) {
	s.ops.writeMu.Lock()
	defer s.ops.writeMu.Unlock() // (a panic must not leave the connection's calls waiting forever)
	n, err := s.ops.writev.do(s.raw, bufs)
	return n, s.netError("writev", err)
}

func (s Stream) netError(op string, err error) error {
	if err == nil {
		return nil
	}
	return toNetError(op, s.network, s.local, s.remote, err)
}
