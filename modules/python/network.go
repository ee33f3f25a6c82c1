package python

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/hearth-dev/hearth/modules/netinfo"
)

// networkFindings reports listening sockets on non-loopback addresses
// that Caddy does not own (databases, caches and development servers
// reachable from the network), and Caddy's own non-loopback listeners that
// serve no site (its admin API moved off loopback). A Caddy process
// listening on a port of serverPorts is the one serving the config, when
// `caddy hearth check` runs beside it: not a finding.
func networkFindings(serverPorts []string) []Finding {
	own := netinfo.OwnSocketInodes()
	var out []Finding
	for _, l := range netinfo.Listeners() {
		if l.Addr.IsLoopback() {
			continue
		}
		if own[l.Inode] {
			if !slices.Contains(serverPorts, strconv.Itoa(l.Port)) {
				out = append(out, Finding{ID: "HG-NET-02", Blocking: true,
					Problem: fmt.Sprintf("Caddy listens on %s for something other than a site: its admin API (which can change the whole config) reachable from the network", net.JoinHostPort(l.Addr.String(), strconv.Itoa(l.Port))),
					Fix:     "keep the admin endpoint on loopback: `admin localhost:2019` (the default) in the global options"})
			}
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
