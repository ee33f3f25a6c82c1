// Package job runs Hearth's scheduled jobs: a command (Django's
// clearsessions, a report, a cleanup) on a cron schedule or at a fixed
// interval, in the environment of one of the config's Python apps or in
// its own, each run bounded by a timeout that ends its whole process
// group. A run still going when the next is due is skipped and counted;
// each run's start, duration, result and the tail of its output are kept
// (the last 20), per job name, across reloads.
package job

import (
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hearth-dev/hearth/modules/internal/names"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// DefaultTimeout bounds a run when the job sets no timeout.
const DefaultTimeout = time.Hour

// Config is one job, as the `hearth` global option's `job` block (JSON:
// an item of the hearth app's `jobs`) describes it.
type Config struct {
	// Name identifies the job in status, logs, metrics and
	// `caddy hearth jobs run <name>`. Required.
	Name string `json:"name"`

	// App is the Python app whose environment the job runs in (its
	// directory, interpreter for a bare "python", env, settings, user);
	// the placement options are then refused.
	App string `json:"app,omitempty"`

	// Command is the program and its arguments, such as
	// ["python", "manage.py", "clearsessions"]. Required.
	Command []string `json:"command"`

	// Schedule is a five-field cron expression in the machine's time zone
	// ("0 3 * * *": 03:00 every day) or "every <duration>" (at least 1s).
	// Required.
	Schedule string `json:"schedule"`

	// Timeout ends a run (its whole process group, with SIGKILL) that
	// runs longer. Default: 1h.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Without App: where and as whom it runs.
	supervisor.Placement
}

// Spec is a job resolved; its JSON is the job's identity across reloads.
type Spec struct {
	Name     string        `json:"name"`
	Kind     Kind          `json:"kind"`
	App      string        `json:"app"`
	Path     string        `json:"path"`
	Args     []string      `json:"args"`
	Schedule string        `json:"schedule"`
	Timeout  time.Duration `json:"timeout"`
	Dir      string        `json:"dir"`
	Env      []string      `json:"env"`
	Umask    uint32        `json:"umask"`
	User     string        `json:"user"`
	Group    string        `json:"group"`
	// Credential is in the identity: a reload that changes the account
	// (an app's `group`, a uid renumbered) makes the job anew, not the old
	// one running as before
	Credential *syscall.Credential `json:"credential,omitempty"`
	// Backup is what a backup copies (KindBackup).
	Backup   *BackupTarget `json:"backup,omitempty"`
	schedule Schedule
}

// Kind is what a job is.
type Kind string

// The kinds of jobs.
const (
	KindJob    Kind = "job"    // a `job` block: a command
	KindBackup Kind = "backup" // a `backup` block: a SQLite copy
)

// Check validates what needs no app: name, command, schedule, timeout.
func (c *Config) Check() error {
	if err := names.Check("job", c.Name, "job <name> { … }"); err != nil {
		return err
	}
	if len(c.Command) == 0 || strings.TrimSpace(c.Command[0]) == "" {
		return fmt.Errorf("job %s has no command; write `command <program> [<args…>]` in its block", c.Name)
	}
	if err := supervisor.CheckCommand("job "+c.Name+"'s command", c.Command); err != nil {
		return err
	}
	if _, err := ParseSchedule(c.Schedule); err != nil {
		return fmt.Errorf("job %s: %w", c.Name, err)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("job %s: timeout must be a positive duration", c.Name)
	}
	if c.App != "" {
		if err := c.Placement.InApp("job "+c.Name, c.App); err != nil {
			return err
		}
	}
	if err := c.Placement.Check(); err != nil {
		return fmt.Errorf("job %s: %w", c.Name, err)
	}
	return nil
}

// Resolve turns the config into a spec; app is the environment of the
// Python app named by App (nil without App).
func (c *Config) Resolve(app *supervisor.Command) (*Spec, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	sched, _ := ParseSchedule(c.Schedule)
	s := &Spec{Name: c.Name, Kind: KindJob, App: c.App, Path: c.Command[0], Args: c.Command[1:], Schedule: strings.TrimSpace(c.Schedule),
		Timeout: time.Duration(c.Timeout), User: c.User, Group: c.Group, schedule: sched}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	place := app
	if place == nil {
		own, err := c.Placement.Resolve()
		if err != nil {
			return nil, fmt.Errorf("job %s: %w", c.Name, err)
		}
		place = &own
	} else if s.Path == "python" || s.Path == "python3" {
		s.Path = app.Path
	}
	s.Dir, s.Env, s.Credential, s.Umask = place.Dir, place.Env, place.Credential, place.Umask
	return s, nil
}

// UnmarshalCaddyfile reads a `job` block of the `hearth` global option,
// the cursor on `job`:
//
//	job <name> {
//		app      <python app>           # or: dir, env, env_file, env_inherit, umask, user, group, allow_root
//		command  <program> [<args…>]
//		schedule "<cron expression>" | every <duration>
//		timeout  <duration>
//	}
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("job needs a name: `job <name> { command … schedule … }`")
	}
	c.Name = d.Val()
	if err := names.Check("job", c.Name, "job <name> { … }"); err != nil {
		return d.Err(err.Error())
	}
	if d.NextArg() {
		return d.Errf("job takes one name, got also %q; put its options inside a { } block", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		switch option {
		case "app":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return d.Err("app takes the name of one Python app of this config")
			}
			c.App = args[0]
		case "command":
			c.Command = d.RemainingArgs()
			if len(c.Command) == 0 {
				return d.Err("command needs a program and its arguments, like `command python manage.py clearsessions`")
			}
		case "schedule":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Err(`schedule needs a cron expression in quotes, like "0 3 * * *", or every <duration>`)
			}
			c.Schedule = strings.Join(args, " ")
			if _, err := ParseSchedule(c.Schedule); err != nil {
				return d.Err(err.Error())
			}
		case "timeout":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return d.Err("timeout takes one duration, like 10m")
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("timeout %q is not a positive duration like 10m", args[0])
			}
			c.Timeout = caddy.Duration(dur)
		default:
			if handled, err := c.Placement.UnmarshalOption(d); handled {
				if err != nil {
					return err
				}
				continue
			}
			return d.Errf("unknown job option %q; valid ones are app, command, schedule, timeout, %s", option, supervisor.PlacementOptions)
		}
	}
	if err := c.Check(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}
