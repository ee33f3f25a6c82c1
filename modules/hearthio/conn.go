package hearthio

import (
	"io"
	"net"

	"github.com/hearth-dev/hearth/modules/internal/rawio"
)

// tcpConn is a client's TCP connection read and written through rawio.
// Every other method is the *net.TCPConn's own: deadlines, CloseWrite,
// and ReadFrom and WriteTo, which take the usual system-call path
// (sendfile for a file served whole, splice, and otherwise the
// connection's own reads and writes: a proxied WebSocket's copy, say).
type tcpConn struct {
	rawio.Stream
	tcpSocket // one level deeper: Stream's Read and Write win
}

type tcpSocket struct{ *net.TCPConn }

// unixConn is a client's Unix socket connection (a site bound to
// unix/…, behind a proxy on the same machine) read and written through
// rawio.
type unixConn struct {
	rawio.Stream
	unixSocket
}

type unixSocket struct{ *net.UnixConn }

// newTCPConn wraps c, or returns it as it is when its descriptor cannot be
// reached.
func newTCPConn(c *net.TCPConn) net.Conn {
	s, err := rawio.NewStream(c, "tcp")
	if err != nil {
		return c
	}
	return &tcpConn{Stream: s, tcpSocket: tcpSocket{c}}
}

// newUnixConn wraps c, or returns it as it is when its descriptor cannot
// be reached.
func newUnixConn(c *net.UnixConn) net.Conn {
	s, err := rawio.NewStream(c, "unix")
	if err != nil {
		return c
	}
	return &unixConn{Stream: s, unixSocket: unixSocket{c}}
}

// NetConn is the connection wrapped (tests compare the two).
func (c *tcpConn) NetConn() net.Conn { return c.TCPConn }

// NetConn is the connection wrapped (tests compare the two).
func (c *unixConn) NetConn() net.Conn { return c.UnixConn }

// What Caddy and net/http look for on a connection stays there: ReadFrom
// (sendfile), WriteTo, half-closes (CloseWrite).
var (
	_ io.ReaderFrom                   = (*tcpConn)(nil)
	_ io.WriterTo                     = (*tcpConn)(nil)
	_ interface{ CloseWrite() error } = (*tcpConn)(nil)
	_ interface{ CloseWrite() error } = (*unixConn)(nil)
)
