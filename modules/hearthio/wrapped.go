package hearthio

import (
	"net"
	"strconv"
	"sync"
)

// wrapped counts, by address, the listeners hearth_io wraps now: a
// reload wraps the same listener again before the old config lets go of
// it, so an address counts until the last wrapper closes.
var wrapped = struct {
	sync.Mutex
	count map[string]int
}{count: map[string]int{}}

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

func countWrapped(a net.Addr, delta int) {
	key := addressKey(a)
	if key == "" {
		return
	}
	wrapped.Lock()
	defer wrapped.Unlock()
	if wrapped.count[key] += delta; wrapped.count[key] <= 0 {
		delete(wrapped.count, key)
	}
}

// Wraps reports whether the connection whose local address is local came
// from a listener hearth_io wraps now. The apps' handlers ask it of their
// first request, to say how to fix a config without it.
func Wraps(local net.Addr) bool {
	key := addressKey(local)
	if key == "" {
		return false
	}
	wrapped.Lock()
	defer wrapped.Unlock()
	if wrapped.count[key] > 0 {
		return true
	}
	if t, ok := local.(*net.TCPAddr); ok {
		return wrapped.count["tcp *:"+strconv.Itoa(t.Port)] > 0
	}
	return false
}
