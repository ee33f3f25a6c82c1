package python

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/netinfo"
)

// networkFindings reports the config's admin API on an address other
// machines can reach (adminListen, as Caddy reads it; adminOn: not `admin
// off`), and listening sockets on non-loopback addresses that Caddy does
// not own (databases, caches and development servers reachable from the
// network). Caddy's own sockets are its sites' (the new config's, and
// during a reload the running one's, on ports the new one may not use)
// and its dashboard's: what the config says of the admin API is what
// tells it apart. A Caddy process listening on a port of serverPorts is
// the one serving the config, when `caddy hearth check` runs beside it:
// not a finding.
func networkFindings(serverPorts []string, adminListen string, adminOn bool) []Finding {
	var out []Finding
	if where := publicAdmin(adminListen, adminOn); where != "" {
		out = append(out, Finding{ID: "HG-NET-02", Blocking: true,
			Problem: fmt.Sprintf("Caddy's admin API (which can change the whole config) listens on %s, reachable from the network", where),
			Fix:     "keep the admin endpoint on loopback: `admin localhost:2019` (the default) in the global options, or a unix socket"})
	}
	own := netinfo.OwnSocketInodes()
	for _, l := range netinfo.Listeners() {
		if l.Addr.IsLoopback() || own[l.Inode] {
			continue
		}
		if slices.Contains(serverPorts, strconv.Itoa(l.Port)) && strings.HasPrefix(l.Process, "caddy") {
			continue // the running Caddy, serving this config: `caddy hearth check` runs beside it
		}
		where := net.JoinHostPort(l.Addr.String(), strconv.Itoa(l.Port))
		who := "a process"
		if l.Process != "" {
			who = l.Process
		}
		out = append(out, Finding{ID: "HG-NET-01", Blocking: false,
			Problem: fmt.Sprintf("%s listens on %s, reachable from the network (not Caddy)", who, where),
			Fix:     fmt.Sprintf("bind it to 127.0.0.1 (or ::1) if only this machine needs it, or firewall port %d", l.Port)})
	}
	slices.SortFunc(out, func(a, b Finding) int { return strings.Compare(a.Problem, b.Problem) })
	return out
}

// publicAdmin is the admin API's address when other machines can reach it
// (TCP on a host that is not loopback: no host at all is every
// interface), or "".
func publicAdmin(listen string, on bool) string {
	if !on {
		return ""
	}
	addr, err := caddy.ParseNetworkAddress(listen)
	if err != nil || addr.IsUnixNetwork() || addr.IsFdNetwork() {
		return "" // (Caddy refuses an address it cannot parse itself)
	}
	host := strings.Trim(addr.Host, "[]")
	if ip := net.ParseIP(host); loopbackName(host) || ip != nil && ip.IsLoopback() {
		return ""
	}
	if host == "" {
		return "every interface, port " + addr.JoinHostPort(0)[1:]
	}
	return addr.JoinHostPort(0)
}

// loopbackName reports whether host is a name of this machine's loopback
// (RFC 6761's localhost and names under it, and the ones Debian's
// /etc/hosts gives ::1 and 127.0.0.1), without asking DNS.
func loopbackName(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	switch host {
	case "localhost", "ip6-localhost", "ip6-loopback", "localhost.localdomain", "localhost6", "localhost6.localdomain6":
		return true
	}
	return strings.HasSuffix(host, ".localhost")
}
