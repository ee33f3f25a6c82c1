package hearthio

import (
	"net"
	"syscall"

	"github.com/hearth-dev/hearth/modules/internal/rawio"
)

// tcpConn is a client's TCP connection read and written through rawio.
// Every other method is the *net.TCPConn's own: deadlines, CloseWrite,
// and ReadFrom and WriteTo (sendfile and splice for a file served whole,
// through the usual system-call path: those move many bytes per call).
type tcpConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

// newTCPConn wraps c, or returns it as it is when its descriptor cannot be
// reached.
func newTCPConn(c *net.TCPConn) net.Conn {
	raw, err := c.SyscallConn()
	if err != nil {
		return c
	}
	return &tcpConn{TCPConn: c, raw: raw}
}

// Read reads as net.Conn does.
func (c *tcpConn) Read(p []byte) (int, error) {
	n, err := rawio.Read(c.raw, p)
	return n, c.wrap("read", err)
}

// Write writes all of p as net.Conn does.
func (c *tcpConn) Write(p []byte) (int, error) {
	n, err := rawio.Write(c.raw, p)
	return n, c.wrap("write", err)
}

// wrap gives an error the form net.Conn gives it.
func (c *tcpConn) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return rawio.NetError(op, "tcp", c.LocalAddr(), c.RemoteAddr(), err)
}

// unixConn is a client's Unix socket connection (a site bound to
// unix/…, behind a proxy on the same machine) read and written through
// rawio.
type unixConn struct {
	*net.UnixConn
	raw syscall.RawConn
}

// newUnixConn wraps c, or returns it as it is when its descriptor cannot
// be reached.
func newUnixConn(c *net.UnixConn) net.Conn {
	raw, err := c.SyscallConn()
	if err != nil {
		return c
	}
	return &unixConn{UnixConn: c, raw: raw}
}

// Read reads as net.Conn does.
func (c *unixConn) Read(p []byte) (int, error) {
	n, err := rawio.Read(c.raw, p)
	return n, c.wrap("read", err)
}

// Write writes all of p as net.Conn does.
func (c *unixConn) Write(p []byte) (int, error) {
	n, err := rawio.Write(c.raw, p)
	return n, c.wrap("write", err)
}

// wrap gives an error the form net.Conn gives it.
func (c *unixConn) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return rawio.NetError(op, "unix", c.LocalAddr(), c.RemoteAddr(), err)
}

// NetConn is the connection wrapped (tests compare the two).
func (c *tcpConn) NetConn() net.Conn { return c.TCPConn }

// NetConn is the connection wrapped (tests compare the two).
func (c *unixConn) NetConn() net.Conn { return c.UnixConn }
