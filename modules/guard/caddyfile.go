package guard

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// UnmarshalCaddyfile sets up the guard from Caddyfile tokens:
//
//	guard {
//		hosts        <host…>
//		websocket_origins <origin…>|*
//		refuse       <pattern…>
//		hsts_max_age <seconds>|off
//		scan_limit   <size>
//	}
func (g *Guard) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("guard takes no arguments, got %q; put options inside a { } block", d.Val())
	}
	for d.NextBlock(0) {
		if err := g.UnmarshalOption(d); err != nil {
			return err
		}
	}
	return nil
}

// UnmarshalOption parses one guard option at the dispenser's position; it
// is shared with the blocks that embed a guard.
func (g *Guard) UnmarshalOption(d *caddyfile.Dispenser) error {
	switch option := d.Val(); option {
	case "hosts":
		g.Hosts = append(g.Hosts, d.RemainingArgs()...)
		if len(g.Hosts) == 0 {
			return d.Err("hosts needs at least one host name, like `hosts example.net www.example.net`")
		}
	case "websocket_origins":
		origins := d.RemainingArgs()
		if len(origins) == 0 {
			return d.Err("websocket_origins needs the origins of the pages that may open WebSockets here, like `websocket_origins https://app.example.com`, or * for any site's")
		}
		if _, _, err := newOrigins(origins); err != nil {
			return d.Err(strings.TrimPrefix(err.Error(), "guard: "))
		}
		g.WebSocketOrigins = append(g.WebSocketOrigins, origins...)
	case "refuse":
		patterns := d.RemainingArgs()
		if len(patterns) == 0 {
			return d.Err("refuse needs path patterns, like `refuse *.bak /private/*`")
		}
		g.Refuse = append(g.Refuse, patterns...)
	case "hsts_max_age":
		if !d.NextArg() {
			return d.Err("hsts_max_age needs a number of seconds, or off")
		}
		if d.Val() == "off" {
			g.HSTSMaxAge = -1
			return nil
		}
		n, err := strconv.Atoi(d.Val())
		if err != nil || n < 1 {
			return d.Errf("hsts_max_age %q is not a positive number of seconds (or off)", d.Val())
		}
		g.HSTSMaxAge = n
	case "scan_limit":
		if !d.NextArg() {
			return d.Err("scan_limit needs a size, like 256KiB")
		}
		n, err := humanize.ParseBytes(d.Val())
		if err != nil || n == 0 || n > maxScanLimit {
			return d.Errf("scan_limit %q is not a size between 1 byte and 1GiB", d.Val())
		}
		g.ScanLimit = int(n)
	default:
		return d.Errf("unknown guard option %q; valid ones are hosts, websocket_origins, refuse, hsts_max_age, scan_limit", option)
	}
	if d.NextArg() {
		return d.Errf("too many values for %s", d.Val())
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Guard)(nil)
