package engine

import (
	"fmt"
	"net"
	"syscall"

	"github.com/hearth-dev/hearth/modules/internal/rawio"
)

// pairConn is Caddy's end of a worker channel's socket pair, read and
// written through rawio: a write to a worker wakes its process, which can
// keep the write in the kernel for 20–40 µs on a virtual machine, long
// enough for Go's sysmon to hand Caddy's one P (caddy_cpus auto) to
// another thread.
type pairConn struct {
	*net.UnixConn
	raw syscall.RawConn
}

// newPairConn wraps c, a socket pair's end made by net.FileConn.
func newPairConn(c net.Conn) (*pairConn, error) {
	u, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("a socket pair's end is a %T, not a Unix socket", c)
	}
	raw, err := u.SyscallConn()
	if err != nil {
		u.Close()
		return nil, err
	}
	return &pairConn{UnixConn: u, raw: raw}, nil
}

// Read reads what the worker sent, as net.Conn does (deadlines included).
func (c *pairConn) Read(p []byte) (int, error) {
	n, err := rawio.Read(c.raw, p)
	return n, c.wrap("read", err)
}

// Write writes all of p, as net.Conn does: whole, never interleaved with
// another goroutine's write.
func (c *pairConn) Write(p []byte) (int, error) {
	n, err := rawio.Write(c.raw, p)
	return n, c.wrap("write", err)
}

// writeBuffers writes every buffer of bufs in order (writev), with
// Write's guarantees.
func (c *pairConn) writeBuffers(bufs net.Buffers) (int64, error) {
	n, err := rawio.Writev(c.raw, bufs)
	return n, c.wrap("writev", err)
}

// wrap gives an error the form net.Conn gives it.
func (c *pairConn) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return rawio.NetError(op, "unix", c.LocalAddr(), c.RemoteAddr(), err)
}
