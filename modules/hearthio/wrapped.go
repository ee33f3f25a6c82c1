package hearthio

import (
	"net"
	"slices"
	"strconv"
	"sync"
)

// wrapped are the listeners hearth_io wraps now, by address, oldest
// first: a reload wraps the same address again before the old config lets
// go of it, so an address is wrapped until the last wrapper closes, and a
// connection the old one gives up goes to the newest (handover.go).
var wrapped = struct {
	sync.Mutex
	by map[string][]*listener
}{by: map[string][]*listener{}}

// addressKey is how a listener's address, or a connection's local one, is
// counted: a TCP listener on every address (0.0.0.0, ::) by its port
// alone, since its connections' local addresses name the address they came
// to; "" for any other kind of address.
func addressKey(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		if a.IP == nil || a.IP.IsUnspecified() {
			return "tcp *:" + strconv.Itoa(a.Port)
		}
		return "tcp " + a.String()
	case *net.UnixAddr:
		return "unix " + a.Name
	}
	return ""
}

// register adds l to the listeners wrapped now.
func register(l *listener) {
	if l.key == "" {
		return
	}
	wrapped.Lock()
	defer wrapped.Unlock()
	wrapped.by[l.key] = append(wrapped.by[l.key], l)
}

// unregister takes l out of the listeners wrapped now.
func unregister(l *listener) {
	wrapped.Lock()
	defer wrapped.Unlock()
	ls := slices.DeleteFunc(wrapped.by[l.key], func(o *listener) bool { return o == l })
	if len(ls) == 0 {
		delete(wrapped.by, l.key)
		return
	}
	wrapped.by[l.key] = ls
}

// successor is the newest listener other than l wrapped now at l's
// address, exactly, that is handed connections (handsOver): the one l's go
// to when it closes (nil: none).
func (l *listener) successor() *listener {
	wrapped.Lock()
	defer wrapped.Unlock()
	ls := wrapped.by[l.key]
	for i := len(ls) - 1; i >= 0; i-- {
		if ls[i] != l && ls[i].accepted != nil && ls[i].address == l.address {
			return ls[i]
		}
	}
	return nil
}

// keysOf are the keys a listener that accepted a connection of local
// address local may be counted by: its own address, and for TCP a
// listener on every address at its port.
func keysOf(local net.Addr) []string {
	key := addressKey(local)
	if key == "" {
		return nil
	}
	if t, ok := local.(*net.TCPAddr); ok {
		return []string{key, "tcp *:" + strconv.Itoa(t.Port)}
	}
	return []string{key}
}

// Wraps reports whether the connection whose local address is local came
// from a listener hearth_io wraps now.
func Wraps(local net.Addr) bool { return wrappedAt(keysOf(local)) }

// wrappedAt reports whether a listener hearth_io wraps now is counted by
// one of keys.
func wrappedAt(keys []string) bool {
	wrapped.Lock()
	defer wrapped.Unlock()
	for _, key := range keys {
		if len(wrapped.by[key]) > 0 {
			return true
		}
	}
	return false
}

// hinted are the addresses ShouldHint said yes for: once per process.
var hinted sync.Map

// ShouldHint reports whether an app's handler should say how to add
// hearth_io, for a request whose connection has local address local on
// a server with listeners: yes once per address in the process, when the
// connection is a TCP or Unix one that came from one of listeners, not
// wrapped. A local address that none of listeners has (proxy_protocol,
// before hearth_io, gives the one the proxy names) cannot be judged: no.
func ShouldHint(local net.Addr, listeners []net.Listener) bool {
	keys := keysOf(local)
	if keys == nil || wrappedAt(keys) {
		return false
	}
	served := slices.ContainsFunc(listeners, func(l net.Listener) bool { return slices.Contains(keys, addressKey(l.Addr())) })
	if !served {
		return false
	}
	_, already := hinted.LoadOrStore(keys[0], true)
	return !already
}
