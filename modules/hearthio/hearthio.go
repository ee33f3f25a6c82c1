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
package hearthio

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/rawio"
)

func init() {
	caddy.RegisterModule(Wrapper{})
}

// FixBlock is the global option block that puts hearth_io where it
// belongs, as the logs that ask for it give it.
const FixBlock = "{\n\tservers {\n\t\tlistener_wrappers {\n\t\t\thearth_io\n\t\t\ttls\n\t\t}\n\t}\n}"

// Wrapper is the listener wrapper caddy.listeners.hearth_io. It has no
// options.
type Wrapper struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Wrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.hearth_io",
		New: func() caddy.Module { return new(Wrapper) },
	}
}

// Provision takes the module's logger.
func (w *Wrapper) Provision(ctx caddy.Context) error {
	w.logger = ctx.Logger()
	return nil
}

// UnmarshalCaddyfile reads the wrapper's name, which takes no arguments
// and no block.
func (w *Wrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // hearth_io
	if d.NextArg() {
		return d.Errf("hearth_io takes no arguments, got %q: write it alone on its line in listener_wrappers, before tls", d.Val())
	}
	if d.NextBlock(0) {
		return d.Errf("hearth_io takes no options, got %q: write it alone on its line in listener_wrappers, before tls", d.Val())
	}
	return nil
}

// WrapListener wraps l: its TCP and Unix connections are read and written
// through rawio.
func (w *Wrapper) WrapListener(l net.Listener) net.Listener {
	if w.logger != nil {
		w.logger.Info("clients' connections read and written without entering Go's system-call state", zap.String("address", l.Addr().String()))
	}
	countWrapped(l.Addr(), 1)
	return &listener{Listener: l, logger: w.logger}
}

type listener struct {
	net.Listener
	logger   *zap.Logger
	misplace sync.Once
	closed   sync.Once
}

// Close closes the listener, as Caddy does when its config stops (a
// reload has already wrapped the new config's socket for the address).
func (l *listener) Close() error {
	l.closed.Do(func() { countWrapped(l.Addr(), -1) })
	return l.Listener.Close()
}

// Accept returns the next connection, a TCP or Unix one wrapped.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	switch c := c.(type) {
	case *net.TCPConn:
		if raw, err := rawio.NewTCPConn(c); err == nil {
			return raw, nil
		}
		return c, nil // its descriptor cannot be reached: served as it is
	case *net.UnixConn:
		if raw, err := rawio.NewUnixConn(c); err == nil {
			return raw, nil
		}
		return c, nil
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
	return c, nil
}

// Interface guards
var (
	_ caddy.ListenerWrapper = (*Wrapper)(nil)
	_ caddy.Provisioner     = (*Wrapper)(nil)
	_ caddyfile.Unmarshaler = (*Wrapper)(nil)
)
