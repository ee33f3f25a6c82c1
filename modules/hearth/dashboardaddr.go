package hearth

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// dashboardAddress is where the dashboard listens for the `dashboard`
// option's address: port 2020 unless given, loopback unless a host is.
func dashboardAddress(address string) (caddy.NetworkAddress, string, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = address, ""
	}
	if port == "" {
		port = "2020"
	}
	if host == "" {
		host = "127.0.0.1" // this machine only, unless asked
	}
	na, err := caddy.ParseNetworkAddress(net.JoinHostPort(host, port))
	if err != nil {
		return caddy.NetworkAddress{}, "", fmt.Errorf("dashboard address %q: %w", address, err)
	}
	return na, host, nil
}

// dashboardClash refuses a dashboard address that an HTTP server of the
// config, or the admin API, listens on too: Caddy opens every TCP socket
// with SO_REUSEPORT, so the two would share the port and the kernel would
// split their connections between them (a site's visitors given the
// dashboard, or the dashboard given the admin API's requests), with no
// "address in use" to say so.
func dashboardClash(dash caddy.NetworkAddress, httpApp *caddyhttp.App, adminListen string, adminOn bool) error {
	var others []string
	if httpApp != nil {
		names := make([]string, 0, len(httpApp.Servers))
		for name := range httpApp.Servers {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			for _, listen := range httpApp.Servers[name].Listen {
				if na, err := caddy.ParseNetworkAddress(listen); err == nil && overlaps(dash, na) {
					others = append(others, fmt.Sprintf("the HTTP server %s (%s)", name, listen))
				}
			}
		}
	}
	if adminOn {
		listen, _, _ := strings.Cut(adminListen, "|") // unix//path|mode
		if na, err := caddy.ParseNetworkAddress(listen); err == nil && overlaps(dash, na) {
			others = append(others, "the admin API ("+adminListen+")")
		}
	}
	if len(others) == 0 {
		return nil
	}
	return fmt.Errorf("dashboard %s: %s listens there too; the two would share the port and split its connections between them (no \"address in use\" error: Caddy's sockets allow sharing); give the dashboard a port of its own, e.g. `dashboard 127.0.0.1:2020`",
		dash, strings.Join(others, " and "))
}

// overlaps reports whether two listen addresses can take the same
// connections: the same unix socket, or TCP ports in common on a family
// of addresses both take (IPv4, IPv6), on the same address or where
// either listens on every address of it.
func overlaps(a, b caddy.NetworkAddress) bool {
	if a.IsUnixNetwork() || b.IsUnixNetwork() {
		return a.IsUnixNetwork() && b.IsUnixNetwork() && a.Host == b.Host
	}
	if !isTCP(a.Network) || !isTCP(b.Network) {
		return false // UDP (HTTP/3) takes no TCP connection
	}
	if a.EndPort < b.StartPort || b.EndPort < a.StartPort {
		return false
	}
	fa, ha := listenScope(a)
	fb, hb := listenScope(b)
	return fa&fb != 0 && (ha == "" || hb == "" || ha == hb)
}

func isTCP(network string) bool { return network == "tcp" || network == "tcp4" || network == "tcp6" }

// Address families a listener takes.
const (
	ipv4 = 1 << iota
	ipv6
)

// listenScope is what a TCP listen address takes: its address families,
// and its address ("" for every address of those families; a host name
// as written, but localhost as 127.0.0.1, where Go listens for it).
func listenScope(na caddy.NetworkAddress) (families int, host string) {
	families = ipv4 | ipv6
	switch na.Network {
	case "tcp4":
		families = ipv4
	case "tcp6":
		families = ipv6
	}
	host = strings.ToLower(strings.Trim(na.Host, "[]"))
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "":
		return families, ""
	case err != nil:
		return families, host // a name
	case ip.Unmap().Is4():
		if ip.Unmap().IsUnspecified() {
			return families & ipv4, ""
		}
		return families & ipv4, ip.Unmap().String()
	case ip.IsUnspecified():
		return families, "" // [::]: both families, as Go listens there
	}
	return families & ipv6, ip.String()
}
