package process

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	dynamic process <program> [<args…>] {
//		name          <name>
//		dir           <path>
//		user          <user>
//		group         <group>
//		allow_root
//		env           <key> <value>
//		env_file      <path>
//		env_inherit   <name…>
//		umask         <octal>
//		socket
//		workers       <n>
//		ready_path    <path>
//		start_timeout <duration>
//		stop_signal   SIGTERM|SIGINT|SIGQUIT|SIGHUP
//		stop_timeout  <duration>
//	}
func (u *Upstreams) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "process"
	u.Command = d.RemainingArgs()
	if len(u.Command) == 0 {
		return d.Err("dynamic process needs the command to run, like `dynamic process node server.js`")
	}
	for d.NextBlock(0) {
		option := d.Val()
		args := d.RemainingArgs()
		one := func() (string, error) {
			if len(args) != 1 {
				return "", d.Errf("%s takes exactly one value, got %d", option, len(args))
			}
			return args[0], nil
		}
		var err error
		switch option {
		case "name":
			u.Name, err = one()
		case "dir":
			u.Dir, err = one()
		case "user":
			u.User, err = one()
		case "group":
			u.Group, err = one()
		case "socket":
			if len(args) != 0 {
				return d.Errf("socket takes no value")
			}
			u.Socket = true
		case "allow_root":
			if len(args) != 0 {
				return d.Errf("allow_root takes no value")
			}
			u.AllowRoot = true
		case "env_file":
			u.EnvFile, err = one()
		case "env_inherit":
			err = supervisor.UnmarshalEnvInherit(d, args, &u.EnvInherit)
		case "umask":
			if u.Umask, err = one(); err == nil {
				mask, perr := supervisor.ParseUmask(u.Umask)
				if perr != nil {
					return d.Err(perr.Error())
				}
				u.Umask = supervisor.FormatUmask(mask) // four digits in the JSON
			}
		case "ready_path":
			u.ReadyPath, err = one()
		case "stop_signal":
			u.StopSignal, err = one()
		case "env":
			err = supervisor.UnmarshalEnv(d, args, &u.Env)
		case "workers":
			var v string
			if v, err = one(); err == nil {
				if u.Workers, err = strconv.Atoi(v); err != nil {
					return d.Errf("workers must be a whole number from 1 to %d, got %q", maxWorkers, v)
				}
				if err := checkWorkers(u.Workers); err != nil {
					return d.Err(err.Error())
				}
			}
		case "start_timeout", "stop_timeout":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur <= 0 {
					return d.Errf("%s %q is not a positive duration; write it like 30s", option, v)
				}
				if option == "start_timeout" {
					u.StartTimeout = caddy.Duration(dur)
				} else {
					u.StopTimeout = caddy.Duration(dur)
				}
			}
		default:
			return d.Errf("unknown process option %q; valid ones are name, dir, user, group, allow_root, socket, env, env_file, env_inherit, umask, workers, ready_path, start_timeout, stop_signal, stop_timeout", option)
		}
		if err != nil {
			return err
		}
	}
	if _, ok := u.Env["PORT"]; ok && !u.Socket {
		return d.Err(portSetError("env PORT"))
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Upstreams)(nil)
