package hearth

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the app from the `hearth` global option:
//
//	{
//		hearth {
//			guard     enforce|warn|off
//			dashboard [<address>]
//			caddy_cpus auto|all|<n>
//			caddy_gc_floor auto|<size>|off
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.Errf("hearth takes no arguments, got %q; put options inside a { } block", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "guard":
			if !d.NextArg() {
				return d.Err("guard needs a mode: enforce, warn or off")
			}
			a.Guard = d.Val()
			if a.Guard != "enforce" && a.Guard != "warn" && a.Guard != "off" {
				return d.Errf("guard mode %q is not one of enforce, warn, off", a.Guard)
			}
			if d.NextArg() {
				return d.Errf("guard takes one mode, got also %q", d.Val())
			}
		case "dashboard":
			a.Dashboard = "127.0.0.1:2020"
			if d.NextArg() {
				a.Dashboard = d.Val()
			}
			if d.NextArg() {
				return d.Errf("dashboard takes one address, got also %q", d.Val())
			}
		case "caddy_cpus":
			if !d.NextArg() {
				return d.Err("caddy_cpus needs a value: auto, all or a number of CPUs")
			}
			a.CaddyCPUs = d.Val()
			if err := parseCaddyCPUs(a.CaddyCPUs); err != nil {
				return d.Err(err.Error())
			}
			if d.NextArg() {
				return d.Errf("caddy_cpus takes one value, got also %q", d.Val())
			}
		case "caddy_gc_floor":
			if !d.NextArg() {
				return d.Err("caddy_gc_floor needs a value: auto, a size like 32MiB, or off")
			}
			a.CaddyGCFloor = d.Val()
			if _, err := parseCaddyGCFloor(a.CaddyGCFloor); err != nil {
				return d.Err(err.Error())
			}
			if d.NextArg() {
				return d.Errf("caddy_gc_floor takes one value, got also %q", d.Val())
			}
		default:
			return d.Errf("unknown hearth option %q; valid ones are guard, dashboard, caddy_cpus and caddy_gc_floor", d.Val())
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*App)(nil)
