package rawio

import (
	"io"
	"net"
)

// TCPConn is a TCP connection read and written through Stream. Every other
// method is the *net.TCPConn's own: deadlines, CloseWrite, and ReadFrom
// and WriteTo, which take the usual system-call path (sendfile for a file
// served whole, splice, and otherwise the connection's own reads and
// writes: a proxied WebSocket's copy, say).
type TCPConn struct {
	Stream
	tcpSocket // one level deeper: Stream's Read and Write win
}

type tcpSocket struct{ *net.TCPConn }

// UnixConn is a Unix stream socket's connection read and written through
// Stream; every other method is the *net.UnixConn's own.
type UnixConn struct {
	Stream
	unixSocket // one level deeper: Stream's Read and Write win
}

type unixSocket struct{ *net.UnixConn }

// NewTCPConn reads and writes c through Stream.
func NewTCPConn(c *net.TCPConn) (*TCPConn, error) {
	s, err := NewStream(c, "tcp")
	if err != nil {
		return nil, err
	}
	return &TCPConn{Stream: s, tcpSocket: tcpSocket{c}}, nil
}

// NewUnixConn reads and writes c through Stream.
func NewUnixConn(c *net.UnixConn) (*UnixConn, error) {
	s, err := NewStream(c, "unix")
	if err != nil {
		return nil, err
	}
	return &UnixConn{Stream: s, unixSocket: unixSocket{c}}, nil
}

// NetConn is the connection wrapped (tests compare the two).
func (c *TCPConn) NetConn() net.Conn { return c.TCPConn }

// NetConn is the connection wrapped (tests compare the two).
func (c *UnixConn) NetConn() net.Conn { return c.UnixConn }

// What Caddy and net/http look for on a connection stays there: ReadFrom
// (sendfile), WriteTo, half-closes (CloseWrite).
var (
	_ net.Conn                        = (*TCPConn)(nil)
	_ net.Conn                        = (*UnixConn)(nil)
	_ io.ReaderFrom                   = (*TCPConn)(nil)
	_ io.WriterTo                     = (*TCPConn)(nil)
	_ interface{ CloseWrite() error } = (*TCPConn)(nil)
	_ interface{ CloseWrite() error } = (*UnixConn)(nil)
)
