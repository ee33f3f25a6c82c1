package hearthio

import (
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hearth-dev/hearth/modules/internal/rawio"
)

// counted is a connection counted (in the total, and among its client's)
// until its first Close, or until it is collected unclosed (cleanup): a
// count that leaked would shut its client out until Caddy restarts.
type counted struct {
	client  netip.Prefix
	closed  atomic.Bool
	cleanup runtime.Cleanup
}

func (c *counted) leave() {
	if !c.closed.Swap(true) {
		c.cleanup.Stop()
		leave(c.client)
	}
}

// handOverCount ends this connection's hold on its count without counting
// it out: the count passes to the connection handed over (false: it was
// closed already).
func (c *counted) handOverCount() bool {
	if c.closed.Swap(true) {
		return false
	}
	c.cleanup.Stop()
	return true
}

// wrapCounted wraps c, counted already for client, in its opening o:
// read and written through rawio when its descriptor can be reached, else
// as it is.
func (l *listener) wrapCounted(c *net.TCPConn, client netip.Prefix, o *opening) *conn {
	var s socket = c
	if raw, err := rawio.NewTCPConn(c); err == nil {
		s = raw
	}
	wrapped := &conn{socket: s, tcp: c}
	wrapped.client = client
	wrapped.open.Store(o)
	wrapped.cleanup = runtime.AddCleanup(wrapped, leave, client)
	return wrapped
}

// socket is what a connection is read and written through: a
// *rawio.TCPConn, or the *net.TCPConn itself when its descriptor cannot be
// reached. Both have every method of a *net.TCPConn.
type socket interface {
	net.Conn
	io.ReaderFrom
	io.WriterTo
	CloseWrite() error
	CloseRead() error
	SyscallConn() (syscall.RawConn, error)
	File() (*os.File, error)
	SetLinger(sec int) error
	SetNoDelay(noDelay bool) error
	SetKeepAlive(keepalive bool) error
	SetKeepAlivePeriod(d time.Duration) error
	SetKeepAliveConfig(config net.KeepAliveConfig) error
	MultipathTCP() (bool, error)
}

// conn is a client's TCP connection, counted, and handed over when a
// reload catches it in its opening (handover.go). Its deadlines and
// addresses are its socket's.
type conn struct {
	socket
	tcp *net.TCPConn
	entry
}

// Read reads the connection.
func (c *conn) Read(p []byte) (int, error) {
	if o := c.open.Load(); o != nil {
		return c.read(o, p, c.socket.Read)
	}
	return c.socket.Read(p)
}

// Write writes to the connection.
func (c *conn) Write(p []byte) (int, error) {
	if !c.writing() {
		return 0, errHandedOver
	}
	return c.socket.Write(p)
}

// ReadFrom writes r to the connection (sendfile for a file).
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if !c.writing() {
		return 0, errHandedOver
	}
	return c.socket.ReadFrom(r)
}

// WriteTo copies the connection to w.
func (c *conn) WriteTo(w io.Writer) (int64, error) {
	first, ok := c.readingPast()
	if !ok {
		return 0, errHandedOver
	}
	var n int
	if len(first) > 0 {
		var err error
		if n, err = w.Write(first); err != nil {
			return int64(n), err
		}
	}
	m, err := c.socket.WriteTo(w)
	return int64(n) + m, err
}

// CloseWrite shuts the connection's writing side down.
func (c *conn) CloseWrite() error {
	if !c.writing() {
		return errHandedOver
	}
	return c.socket.CloseWrite()
}

// CloseRead shuts the connection's reading side down (what the opening
// has still to give is given all the same).
func (c *conn) CloseRead() error {
	if o := c.open.Load(); o != nil {
		o.mu.Lock()
		moving := o.moving
		o.mu.Unlock()
		if moving {
			return errHandedOver
		}
	}
	return c.socket.CloseRead()
}

// Close closes the connection and counts it out of its client's, or hands
// it over (handover.go).
func (c *conn) Close() error {
	return c.closeOrHandOver(c.tcp, c.socket.Close)
}

// NetConn is the connection wrapped (tests compare the two).
func (c *conn) NetConn() net.Conn { return c.tcp }

// What Caddy and net/http look for on a connection stays there.
var _ socket = (*conn)(nil)
