package service

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hearth-dev/hearth/modules/internal/names"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// UnmarshalCaddyfile reads a `service` block of the `hearth` global
// option, the cursor on `service`:
//
//	service <name> {
//		app          <python app>        # or: dir, env, env_file, env_inherit, umask, user, group, allow_root
//		command      <program> [<args…>]
//		ready        tcp <host:port> | command <program> [<args…>] | none
//		workers      <n>
//		start_timeout <duration>
//		stop_signal  SIGTERM|SIGINT|SIGQUIT|SIGHUP
//		stop_timeout <duration>
//	}
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("service needs a name: `service <name> { command … }`")
	}
	c.Name = d.Val()
	if err := names.Check("service", c.Name, "service <name> { … }"); err != nil {
		return d.Err(err.Error())
	}
	if d.NextArg() {
		return d.Errf("service takes one name, got also %q; put its options inside a { } block", d.Val())
	}
	one := func(dst *string) error {
		option := d.Val()
		if !d.NextArg() {
			return d.Errf("%s needs a value", option)
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.Errf("%s takes one value, got also %q", option, d.Val())
		}
		return nil
	}
	duration := func(dst *caddy.Duration) error {
		option := d.Val()
		var v string
		if err := one(&v); err != nil {
			return err
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return d.Errf("%s %q is not a positive duration like 30s", option, v)
		}
		*dst = caddy.Duration(dur)
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		switch option {
		case "app":
			if err := one(&c.App); err != nil {
				return err
			}
		case "command":
			c.Command = d.RemainingArgs()
			if len(c.Command) == 0 {
				return d.Err("command needs a program and its arguments, like `command celery -A mysite worker`")
			}
		case "ready":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "none":
				c.Ready = nil
			case len(args) == 2 && args[0] == "tcp":
				c.Ready = &Ready{TCP: args[1]}
			case len(args) >= 2 && args[0] == "command":
				c.Ready = &Ready{Command: args[1:]}
			default:
				return d.Err("ready is one of `ready tcp <host:port>`, `ready command <program> [<args…>]` or `ready none`")
			}
		case "workers":
			var v string
			if err := one(&v); err != nil {
				return err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxWorkers {
				return d.Errf("workers must be a whole number from 1 to %d, got %q", MaxWorkers, v)
			}
			c.Workers = n
		case "start_timeout":
			if err := duration(&c.StartTimeout); err != nil {
				return err
			}
		case "stop_timeout":
			if err := duration(&c.StopTimeout); err != nil {
				return err
			}
		case "stop_signal":
			if err := one(&c.StopSignal); err != nil {
				return err
			}
		default:
			if handled, err := c.Placement.UnmarshalOption(d); handled {
				if err != nil {
					return err
				}
				continue
			}
			return d.Errf("unknown service option %q; valid ones are app, command, ready, workers, start_timeout, stop_signal, stop_timeout, %s", option, supervisor.PlacementOptions)
		}
	}
	if err := c.Check(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}
