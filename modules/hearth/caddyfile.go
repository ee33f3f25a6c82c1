package hearth

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hearth-dev/hearth/modules/job"
	"github.com/hearth-dev/hearth/modules/service"
)

// UnmarshalCaddyfile sets up the app from the `hearth` global option:
//
//	{
//		hearth {
//			guard     enforce|warn|off
//			dashboard [<address>] {
//				hosts <name>...
//			}
//			caddy_cpus auto|all|<n>
//			caddy_gc_floor auto|<size>|off
//			max_processes <n>|off
//			service <name> {
//				…                   (see service.Config.UnmarshalCaddyfile)
//			}
//			job <name> {
//				…                   (see job.Config.UnmarshalCaddyfile)
//			}
//			backup <name> {
//				…                   (see job.BackupConfig.UnmarshalCaddyfile)
//			}
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
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if d.Val() != "hosts" {
					return d.Errf("unknown dashboard option %q; the one valid option is hosts", d.Val())
				}
				names := d.RemainingArgs()
				if len(names) == 0 {
					return d.Err("hosts needs one or more names the dashboard answers to, like `hosts box.lan 192.168.1.5`")
				}
				a.DashboardHosts = append(a.DashboardHosts, names...)
			}
		case "caddy_cpus":
			if err := oneValue(d, &a.CaddyCPUs, "auto, all or a number of CPUs", parseCaddyCPUs); err != nil {
				return err
			}
		case "caddy_gc_floor":
			check := func(v string) error { _, err := parseCaddyGCFloor(v); return err }
			if err := oneValue(d, &a.CaddyGCFloor, "auto, a size like 32MiB, or off", check); err != nil {
				return err
			}
		case "max_processes":
			check := func(v string) error { _, err := parseMaxProcesses(v); return err }
			if err := oneValue(d, &a.MaxProcesses, "a number of processes and threads, or off", check); err != nil {
				return err
			}
		case "service":
			var c service.Config
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			for _, other := range a.Services {
				if other.Name == c.Name {
					return d.Errf("two services are named %s; give each its own name", c.Name)
				}
			}
			a.Services = append(a.Services, &c)
		case "job":
			var c job.Config
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			for _, other := range a.Jobs {
				if other.Name == c.Name {
					return d.Errf("two jobs are named %s; give each its own name", c.Name)
				}
			}
			a.Jobs = append(a.Jobs, &c)
		case "backup":
			var c job.BackupConfig
			if err := c.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			for _, other := range a.Backups {
				if other.Name == c.Name {
					return d.Errf("two backups are named %s; give each its own name", c.Name)
				}
			}
			a.Backups = append(a.Backups, &c)
		default:
			return d.Errf("unknown hearth option %q; valid ones are guard, dashboard, caddy_cpus, caddy_gc_floor, max_processes, service, job and backup", d.Val())
		}
	}
	return nil
}

// oneValue reads the one value of the option at d's cursor into dst,
// after check accepts it; need says what the option takes.
func oneValue(d *caddyfile.Dispenser, dst *string, need string, check func(string) error) error {
	option := d.Val()
	if !d.NextArg() {
		return d.Errf("%s needs a value: %s", option, need)
	}
	if err := check(d.Val()); err != nil {
		return d.Err(err.Error())
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s takes one value, got also %q", option, d.Val())
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*App)(nil)
