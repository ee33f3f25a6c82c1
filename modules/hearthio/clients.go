package hearthio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/clientnet"
	"github.com/hearth-dev/hearth/modules/internal/rawio"
)

// clients counts each client's open TCP connections across the listeners
// hearth_io wraps, in the process: a connection accepted under a config a
// reload replaced counts until it closes, as it holds Caddy's memory until
// then.
var clients = struct {
	sync.Mutex
	open map[netip.Prefix]int
}{open: map[netip.Prefix]int{}}

// refusedConnections counts the connections closed past their client's
// bound, in the process.
var refusedConnections = prometheus.NewCounter(prometheus.CounterOpts{
	Namespace: "hearth", Name: "refused_connections_total",
	Help: "TCP connections hearth_io closed as soon as they were accepted, their client holding max_connections_per_client already.",
})

// registerMetrics adds hearth_io's counter to a config's registry, once
// (registering it again is not an error).
func registerMetrics(registry *prometheus.Registry) error {
	if registry == nil {
		return nil
	}
	err := registry.Register(refusedConnections)
	if errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		return nil
	}
	return err
}

// admit counts c among its client's connections, or closes it (false)
// when the client holds l.maxPerClient already. A connection whose peer
// has no address is not counted, nor one from loopback unless
// count_loopback is set (the zero Prefix).
func (l *listener) admit(c *net.TCPConn) (netip.Prefix, bool) {
	var client netip.Prefix
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		client = clientnet.Of(a.AddrPort().Addr())
	}
	if !client.IsValid() || (client.Addr().IsLoopback() && !l.countLoopback) {
		return netip.Prefix{}, true
	}
	clients.Lock()
	open := clients.open[client]
	if open >= l.maxPerClient {
		clients.Unlock()
		_ = c.SetLinger(0) // a reset: nothing of it lingers in the kernel
		_ = c.Close()
		refusedConnections.Inc()
		if ok, heldBack := l.refusals.Allow(); ok && l.logger != nil {
			l.logger.Warn(fmt.Sprintf("client %s already holds %d connections open to this Caddy, its max_connections_per_client: closed another as soon as it came. If that address is a proxy, load balancer or tunnel in front of the site, raise max_connections_per_client in hearth_io's block; else one client is holding connections open, each of which costs Caddy memory",
				clientnet.Name(client), open),
				zap.String("address", l.Addr().String()),
				zap.Int64("like_warnings_held_back", heldBack))
		}
		return client, false
	}
	clients.open[client] = open + 1
	clients.Unlock()
	return client, true
}

// leave counts one of client's connections out, once it closed.
func leave(client netip.Prefix) {
	if !client.IsValid() {
		return
	}
	clients.Lock()
	defer clients.Unlock()
	if clients.open[client] <= 1 {
		delete(clients.open, client)
		return
	}
	clients.open[client]--
}

// counted is a connection counted among its client's until its first
// Close, or until it is collected unclosed (cleanup): a count that leaked
// would shut its client out until Caddy restarts.
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

// rawConn is a client's TCP connection read and written through rawio,
// counted (every other method is rawio.TCPConn's: ReadFrom, WriteTo,
// CloseWrite).
type rawConn struct {
	*rawio.TCPConn
	counted
}

func newRawConn(c *rawio.TCPConn, client netip.Prefix) *rawConn {
	conn := &rawConn{TCPConn: c, counted: counted{client: client}}
	if client.IsValid() {
		conn.cleanup = runtime.AddCleanup(conn, leave, client)
	}
	return conn
}

// Close closes the connection and counts it out of its client's.
func (c *rawConn) Close() error {
	c.leave()
	return c.TCPConn.Close()
}

// tcpConn is a client's TCP connection served as it is, counted.
type tcpConn struct {
	*net.TCPConn
	counted
}

func newTCPConn(c *net.TCPConn, client netip.Prefix) *tcpConn {
	conn := &tcpConn{TCPConn: c, counted: counted{client: client}}
	if client.IsValid() {
		conn.cleanup = runtime.AddCleanup(conn, leave, client)
	}
	return conn
}

// Close closes the connection and counts it out of its client's.
func (c *tcpConn) Close() error {
	c.leave()
	return c.TCPConn.Close()
}
