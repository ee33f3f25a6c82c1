// Package hearthio is the listener wrapper caddy.listeners.hearth_io: the
// connections of the listener it wraps are read and written with the
// system calls net.Conn makes, without entering Go's system-call state
// (internal/rawio says why that halves what a request costs Caddy's one P
// between bursts).
//
// It must wrap the TCP listener itself, before TLS:
//
//	{
//		servers {
//			listener_wrappers {
//				hearth_io
//				tls
//			}
//		}
//	}
//
// TCP and Unix stream connections are wrapped; any other (one a wrapper
// before it made, a TLS connection when hearth_io comes after tls) passes
// through unchanged, and a warning says once, with the fix, that it should
// come first.
//
// It also bounds the TCP connections one client holds open at once
// (max_connections_per_client): an idle connection costs Caddy ~24 KiB,
// and one address could hold tens of thousands of them, enough to exhaust
// a small board's memory. Loopback clients are not counted unless
// count_loopback is set. And it bounds the connections of all clients
// together (max_connections), by default to what an eighth of the memory
// holds.
//
// And at a reload it hands the connections the old config's server
// accepted but had read no request of to the listener now serving their
// address (handover.go), which Go's http.Server, shutting down, would
// close unanswered.
package hearthio

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/loglimit"
	"github.com/hearth-dev/hearth/modules/internal/memory"
	"github.com/hearth-dev/hearth/modules/internal/rawio"
)

func init() {
	caddy.RegisterModule(Wrapper{})
}

// FixBlock is the global option block that puts hearth_io where it
// belongs, as the logs that ask for it give it.
const FixBlock = "{\n\tservers {\n\t\tlistener_wrappers {\n\t\t\thearth_io\n\t\t\ttls\n\t\t}\n\t}\n}"

// Wrapper is the listener wrapper caddy.listeners.hearth_io.
type Wrapper struct {
	// MaxConnectionsPerClient is how many TCP connections one client (an
	// IPv4 address, an IPv6 /64) may hold open at once to this Caddy,
	// across the listeners hearth_io wraps; one more is closed as soon as
	// it is accepted. Default: DefaultMaxConnectionsPerClient, or an
	// eighth of MaxConnections when that is less (a small machine), so
	// that a few clients cannot take every connection there is.
	MaxConnectionsPerClient int `json:"max_connections_per_client,omitempty"`

	// CountLoopback bounds loopback clients (127.0.0.0/8, ::1) too. By
	// default they are not counted: a tunnel or proxy on this machine
	// (cloudflared, a local nginx) brings every visitor from loopback,
	// and a client there already runs on the machine.
	CountLoopback bool `json:"count_loopback,omitempty"`

	// MaxConnections is how many TCP connections Caddy holds open at once
	// across the listeners hearth_io wraps, from every client (loopback
	// included); one more is closed as soon as it is accepted, so that
	// connections from many addresses at once cannot take the machine's
	// memory, unless its client holds fewer than reserveFloor: those may
	// take an eighth more (reserveOf), so that the few clients that filled
	// it do not shut every other visitor out. Default (0, "auto" in the
	// Caddyfile): as many as an eighth of the memory holds
	// (autoMaxConnections), from 1024 to 65536.
	MaxConnections int `json:"max_connections,omitempty"`

	logger *zap.Logger
}

// DefaultMaxConnectionsPerClient is the default of
// max_connections_per_client: far more than a browser opens (six to a
// site over HTTP/1.1, one over HTTP/2), room for many visitors behind one
// address, and ~34 MiB of memory at most for one address (Caddy's and the
// kernel's).
const DefaultMaxConnectionsPerClient = 1024

// maxConnectionsPerClientLimit is the largest value the option takes.
const maxConnectionsPerClientLimit = 1 << 20

// CaddyModule returns the Caddy module information.
func (Wrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.hearth_io",
		New: func() caddy.Module { return new(Wrapper) },
	}
}

// Provision takes the module's logger and checks its options.
func (w *Wrapper) Provision(ctx caddy.Context) error {
	w.logger = ctx.Logger()
	for _, o := range []struct {
		name string
		n    int
	}{{"max_connections_per_client", w.MaxConnectionsPerClient}, {"max_connections", w.MaxConnections}} {
		if o.n != 0 && (o.n < 1 || o.n > maxConnectionsPerClientLimit) {
			return fmt.Errorf("hearth_io: %s must be a whole number from 1 to %d, got %d", o.name, maxConnectionsPerClientLimit, o.n)
		}
	}
	return registerMetrics(ctx.GetMetricsRegistry())
}

// UnmarshalCaddyfile reads the wrapper: its name, with no arguments, and
// optionally a block
//
//	hearth_io {
//		max_connections_per_client <n>
//		count_loopback
//		max_connections <n>|auto
//	}
func (w *Wrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // hearth_io
	if d.NextArg() {
		return d.Errf("hearth_io takes no arguments, got %q: write it on its line in listener_wrappers, before tls (options go in a block)", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "max_connections_per_client", "max_connections":
			option := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			switch {
			case option == "max_connections" && d.Val() == "auto":
				n = 0
			case err != nil || n < 1 || n > maxConnectionsPerClientLimit:
				return d.Errf("%s must be a whole number from 1 to %d, got %q", option, maxConnectionsPerClientLimit, d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			if option == "max_connections" {
				w.MaxConnections = n
			} else {
				w.MaxConnectionsPerClient = n
			}
		case "count_loopback":
			if d.NextArg() {
				return d.Errf("count_loopback takes no value, got %q", d.Val())
			}
			w.CountLoopback = true
		default:
			return d.Errf("unknown hearth_io option %q: the options are max_connections_per_client, count_loopback and max_connections", d.Val())
		}
	}
	return nil
}

// WrapListener wraps l: its TCP and Unix connections are read and written
// through rawio. A TCP socket's own listener (handsOver) has its
// connections accepted by a goroutine of its own, so that Accept also
// returns those another listener at its address hands over (handover.go).
func (w *Wrapper) WrapListener(l net.Listener) net.Listener {
	if w.logger != nil {
		w.logger.Info("clients' connections read and written without entering Go's system-call state", zap.String("address", l.Addr().String()))
	}
	maxTotal := cmp.Or(w.MaxConnections, autoMaxConnections(memory.Total()))
	wrapped := &listener{Listener: l, logger: w.logger, countLoopback: w.CountLoopback, maxTotal: maxTotal, reserve: reserveOf(maxTotal),
		maxPerClient: cmp.Or(w.MaxConnectionsPerClient, max(1, min(DefaultMaxConnectionsPerClient, maxTotal/8))),
		refusals:     [2]loglimit.Limit{{Every: time.Minute}, {Every: time.Minute}},
		key:          addressKey(l.Addr()), address: l.Addr().Network() + " " + l.Addr().String(), done: make(chan struct{})}
	if handsOver(l) {
		wrapped.accepted, wrapped.arrived = make(chan accepted), make(chan struct{}, 1)
		go wrapped.acceptLoop()
	}
	register(wrapped)
	return wrapped
}

// handsOver reports whether a reload hands over the connections of l, and
// hands it those of the listener it replaces: a TCP socket's own listener
// (Go's, or the one Caddy's core binds), whose connections no other wrapper
// has seen. One that comes after another wrapper (tls, proxy_protocol)
// takes no part: handed a raw connection, it would serve it past them.
func handsOver(l net.Listener) bool {
	t := reflect.TypeOf(l)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	_, tcp := l.Addr().(*net.TCPAddr)
	return tcp && (t.PkgPath() == "net" || t.PkgPath() == "github.com/caddyserver/caddy/v2")
}

type listener struct {
	net.Listener
	logger        *zap.Logger
	maxPerClient  int
	countLoopback bool
	maxTotal      int
	reserve       int // past maxTotal, for clients holding few (reserveOf)
	// refusals let the warnings for a connection closed past a bound
	// through once a minute, one for each bound (refusedByClient,
	// refusedByTotal): a client provokes them at will, and one must not
	// hide the other
	refusals [2]loglimit.Limit
	misplace sync.Once
	closed   sync.Once

	// key is the address it is registered by (addressKey); address its
	// own, exactly (a listener on every IPv4 address and one on every
	// IPv6 one share a key, not an address).
	key, address string
	// accepted brings Accept what acceptLoop accepted; nil where the
	// listener does not hand over (handsOver): Accept accepts then.
	accepted chan accepted
	// queue holds the connections other listeners at its address handed
	// over, for Accept; arrived tells Accept of one.
	queue struct {
		sync.Mutex
		conns  []handed
		closed bool
	}
	arrived chan struct{}
	// done is closed when the listener is.
	done chan struct{}
}

// accepted is what the listener's Accept gave.
type accepted struct {
	c   net.Conn
	err error
}

// isClosed reports whether the listener closed.
func (l *listener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Close closes the listener, as Caddy does when its config stops (a
// reload has already wrapped the new config's socket for the address).
// What other listeners handed it and Accept did not take yet goes on to
// the next one.
func (l *listener) Close() error {
	l.closed.Do(func() {
		close(l.done)
		unregister(l)
		l.queue.Lock()
		l.queue.closed = true
		queued := l.queue.conns
		l.queue.conns = nil
		l.queue.Unlock()
		for _, h := range queued {
			l.passOn(h)
		}
	})
	return l.Listener.Close()
}

// acceptLoop accepts the listener's connections and gives them to Accept,
// until the listener closes; one it accepted then is closed (and so handed
// over, if another listener serves the address).
func (l *listener) acceptLoop() {
	for {
		c, err := l.next()
		select {
		case l.accepted <- accepted{c, err}:
		case <-l.done:
			if c != nil {
				_ = c.Close()
			}
			return
		}
	}
}

// Accept returns the next connection, a TCP or Unix one wrapped, or one
// another listener at its address handed over. A TCP connection past
// max_connections or its client's max_connections_per_client is closed
// at once, and the next one taken: an error would have Caddy's server
// pause.
func (l *listener) Accept() (net.Conn, error) {
	if l.accepted == nil {
		return l.next()
	}
	for {
		if h, ok := l.takeHanded(); ok {
			return l.adopt(h), nil
		}
		select {
		case a := <-l.accepted:
			return a.c, a.err
		case <-l.arrived:
		case <-l.done:
			return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
		}
	}
}

// next accepts the listener's next connection, wrapped; those past a
// bound are closed, and the next one taken.
func (l *listener) next() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c, ok := l.wrap(c); ok {
			return c, nil
		}
	}
}

// wrap wraps c, or closes it (false) past max_connections or its client's
// max_connections_per_client (admit).
func (l *listener) wrap(c net.Conn) (net.Conn, bool) {
	switch c := c.(type) {
	case *net.TCPConn:
		client, ok := l.admit(c)
		if !ok {
			return nil, false
		}
		var o *opening
		if l.accepted != nil {
			o = &opening{l: l}
		}
		return l.wrapCounted(c, client, o), true
	case *net.UnixConn:
		if raw, err := rawio.NewUnixConn(c); err == nil {
			return raw, true
		}
		return c, true
	}
	l.misplace.Do(func() {
		if l.logger == nil {
			return
		}
		why := "a wrapper listed before it made them"
		if _, ok := c.(*tls.Conn); ok {
			why = "it comes after tls"
		}
		l.logger.Warn("listener wrapper hearth_io passes its connections through unchanged, since "+why+": list it first in listener_wrappers, before tls",
			zap.String("connection", fmt.Sprintf("%T", c)),
			zap.String("fix", FixBlock),
			zap.String("address", l.Addr().String()))
	})
	return c, true
}

// Interface guards
var (
	_ caddy.ListenerWrapper = (*Wrapper)(nil)
	_ caddy.Provisioner     = (*Wrapper)(nil)
	_ caddyfile.Unmarshaler = (*Wrapper)(nil)
)
