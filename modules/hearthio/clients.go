package hearthio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/clientnet"
)

// clients counts the open TCP connections of the listeners hearth_io
// wraps, in all and each client's, in the process: a connection accepted
// under a config a reload replaced counts until it closes, as it holds
// memory until then.
var clients = struct {
	sync.Mutex
	total int
	open  map[netip.Prefix]int
}{open: map[netip.Prefix]int{}}

// refusedConnections counts the connections closed past a bound, in the
// process, by reason: client (max_connections_per_client) or total
// (max_connections).
var refusedConnections = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "hearth", Name: "refused_connections_total",
	Help: "TCP connections hearth_io closed as soon as they were accepted, by reason: client (their client held max_connections_per_client already) or total (Caddy held max_connections).",
}, []string{"reason"})

// connectionCost is what an idle connection costs, Caddy's memory and the
// kernel's (measured: ~24 and ~10 KiB), for max_connections' default.
const connectionCost = 34 << 10

// autoMaxConnections is max_connections' default for memory bytes (0: not
// known; memory.Total, which in Caddy is its Go memory limit, 90% of the
// machine's or the container's): the connections an eighth of it holds,
// from 1024 to 65536.
func autoMaxConnections(memory int64) int {
	if memory <= 0 {
		return 16384
	}
	return int(min(max(memory/8/connectionCost, 1024), 65536))
}

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

// reserveFloor is how few connections a client must hold to be let into
// the reserve past max_connections: a visitor's browser starting a page
// (it opens up to six to a site over HTTP/1.1, one over HTTP/2), not
// one of the clients that filled the bound.
const reserveFloor = 4

// reserveOf is how many connections past maxTotal clients holding fewer
// than reserveFloor may open: an eighth more. Without it, the clients of
// eight addresses (each at its eighth of the total) would shut every
// other visitor out for as long as they held their connections; with it,
// filling the reserve too takes a quarter as many addresses as it has
// connections.
func reserveOf(maxTotal int) int { return max(1, maxTotal/8) }

// admit counts c among the open connections and its client's, or closes
// it (false) when Caddy holds l.maxTotal already (and, in the reserve
// past it, the client holds reserveFloor or more, or is not counted) or
// its client l.maxPerClient. A connection whose peer has no address has
// no client count, nor one from loopback unless count_loopback is set
// (the zero Prefix); it still counts in the total.
func (l *listener) admit(c *net.TCPConn) (netip.Prefix, bool) {
	var client netip.Prefix
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		client = clientnet.Of(a.AddrPort().Addr())
	}
	if client.IsValid() && client.Addr().IsLoopback() && !l.countLoopback {
		client = netip.Prefix{}
	}
	clients.Lock()
	total, open := clients.total, clients.open[client]
	switch {
	case total >= l.maxTotal+l.reserve || total >= l.maxTotal && (!client.IsValid() || open >= reserveFloor):
		clients.Unlock()
		l.refuse(c, refusedByTotal, fmt.Sprintf("Caddy already holds %d connections open, past its max_connections (%d; past it, only clients holding fewer than %d get one more, up to %d): closed another as soon as it came, from %s. Many clients are connected at once (a flood from many addresses, or a site busier than the bound): raise max_connections in hearth_io's block if the machine has the memory (an idle connection costs ~34 KiB)",
			total, l.maxTotal, reserveFloor, l.maxTotal+l.reserve, c.RemoteAddr()))
		return client, false
	case client.IsValid() && open >= l.maxPerClient:
		clients.Unlock()
		l.refuse(c, refusedByClient, fmt.Sprintf("client %s already holds %d connections open to this Caddy, its max_connections_per_client: closed another as soon as it came. If that address is a proxy, load balancer or tunnel in front of the site, raise max_connections_per_client in hearth_io's block; else one client is holding connections open, each of which costs Caddy memory",
			clientnet.Name(client), open))
		return client, false
	}
	clients.total++
	if client.IsValid() {
		clients.open[client] = open + 1
	}
	clients.Unlock()
	return client, true
}

// refusal is which bound refused a connection.
type refusal int

const (
	refusedByClient refusal = iota // max_connections_per_client
	refusedByTotal                 // max_connections
)

// reasons are the refusals' values of hearth_refused_connections_total's
// reason label.
var reasons = [...]string{refusedByClient: "client", refusedByTotal: "total"}

// refuse resets c, counts it under its reason, and logs why (at most once
// a minute per listener and bound).
func (l *listener) refuse(c *net.TCPConn, by refusal, why string) {
	_ = c.SetLinger(0) // a reset: nothing of it lingers in the kernel
	_ = c.Close()
	refusedConnections.WithLabelValues(reasons[by]).Inc()
	if ok, heldBack := l.refusals[by].Allow(); ok && l.logger != nil {
		l.logger.Warn(why, zap.String("address", l.Addr().String()), zap.Int64("like_warnings_held_back", heldBack))
	}
}

// leave counts one connection out of the total and of client's (none for
// the zero Prefix), once it closed.
func leave(client netip.Prefix) {
	clients.Lock()
	defer clients.Unlock()
	clients.total--
	if !client.IsValid() {
		return
	}
	if clients.open[client] <= 1 {
		delete(clients.open, client)
		return
	}
	clients.open[client]--
}
