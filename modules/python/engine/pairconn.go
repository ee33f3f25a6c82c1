package engine

import (
	"fmt"
	"net"

	"github.com/hearth-dev/hearth/modules/internal/rawio"
)

// pairConn is Caddy's end of a worker channel's socket pair, read and
// written through rawio: a write to a worker wakes its process, which can
// keep the write in the kernel for 20–40 µs on a virtual machine, long
// enough for Go's sysmon to hand Caddy's one P (caddy_cpus auto) to
// another thread. Its other methods are the *net.UnixConn's.
type pairConn = rawio.UnixConn

// newPairConn wraps c, a socket pair's end made by net.FileConn.
func newPairConn(c net.Conn) (*pairConn, error) {
	u, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("a socket pair's end is a %T, not a Unix socket", c)
	}
	pair, err := rawio.NewUnixConn(u)
	if err != nil {
		u.Close()
		return nil, err
	}
	return pair, nil
}
