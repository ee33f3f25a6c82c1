// Package service keeps Hearth's background services running: any
// long-running command a site needs beside its web app (a Celery or RQ
// worker, redis-server, a queue consumer), supervised like the Python
// pools (restart with backoff, readiness, stop signal and timeout, its
// own account, output into Caddy's log, nothing left behind). A service
// runs in the environment of one of the config's Python apps (`app`:
// its directory, interpreter or venv, env, settings and account) or in
// its own. The hearth app holds the services' configs (its `services`)
// and keeps each Group across reloads, like a pool: an unchanged service
// keeps its processes, a changed one is replaced.
package service

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/internal/names"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// Defaults of a service's options, documented in the README.
const (
	DefaultStartTimeout = 60 * time.Second
	DefaultStopTimeout  = 30 * time.Second
	// MaxWorkers bounds `workers`: every process starts at once.
	MaxWorkers = 64
)

// Config is one service, as the `hearth` global option's `service` block
// (JSON: an item of the hearth app's `services`) describes it.
type Config struct {
	// Name identifies the service in status, logs, metrics and
	// `caddy hearth restart <name>`. Required.
	Name string `json:"name"`

	// App is the name of a Python app of this config whose environment
	// the service runs in: its directory, its interpreter (a bare
	// "python" or "python3" in Command is it) and venv, its env, env_file
	// and settings, its user. When set, Dir, Env, EnvFile, EnvInherit,
	// User and Group are refused: the app's apply.
	App string `json:"app,omitempty"`

	// Command is the program and its arguments, such as
	// ["celery", "-A", "mysite", "worker"]. Required.
	Command []string `json:"command"`

	// Ready says when a process counts as up: nil (or "none") once it
	// started; TCP once it accepts connections on that address; Command
	// once that command exits with status 0 (tried every half second).
	// A process that is not up within start_timeout failed to start.
	Ready *Ready `json:"ready,omitempty"`

	// Workers is how many copies of the command run. Default: 1.
	Workers int `json:"workers,omitempty"`

	// StopSignal asks a process to stop: SIGTERM (default), SIGINT,
	// SIGQUIT or SIGHUP; StopTimeout is how long it has before SIGKILL.
	// Default: 30s.
	StopSignal  string         `json:"stop_signal,omitempty"`
	StopTimeout caddy.Duration `json:"stop_timeout,omitempty"`

	// StartTimeout bounds how long a process may take to be ready.
	// Default: 60s.
	StartTimeout caddy.Duration `json:"start_timeout,omitempty"`

	// Without App: where and as whom it runs (dir, env, env_file,
	// env_inherit, umask, user, group, allow_root).
	supervisor.Placement
}

// Ready is when a service's process counts as up: at most one field set.
type Ready struct {
	// TCP is a host:port the process listens on once it is up.
	TCP string `json:"tcp,omitempty"`
	// Command is a command that exits with 0 once it is up (run in the
	// service's environment), such as ["redis-cli", "ping"].
	Command []string `json:"command,omitempty"`
}

// Spec is a service resolved: what runs, where and as whom. Its JSON is
// the service's identity across reloads (the app's environment is in it,
// so a service whose app changed is replaced too).
type Spec struct {
	Name         string              `json:"name"`
	App          string              `json:"app"`
	Path         string              `json:"path"`
	Args         []string            `json:"args"`
	Dir          string              `json:"dir"`
	Env          []string            `json:"env"`
	Umask        uint32              `json:"umask"`
	User         string              `json:"user"`
	Group        string              `json:"group"`
	Credential   *syscall.Credential `json:"credential,omitempty"` // in the identity: an app's group changed makes the service anew
	Workers      int                 `json:"workers"`
	Ready        Ready               `json:"ready"`
	StartTimeout time.Duration       `json:"start_timeout"`
	StopSignal   syscall.Signal      `json:"stop_signal"`
	StopTimeout  time.Duration       `json:"stop_timeout"`
}

var stopSignals = map[string]syscall.Signal{
	"": syscall.SIGTERM, "SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT,
	"SIGQUIT": syscall.SIGQUIT, "SIGHUP": syscall.SIGHUP,
}

// Check validates what can be checked without the app's environment:
// `caddy validate` and provisioning run it.
func (c *Config) Check() error {
	if err := names.Check("service", c.Name, "service <name> { … }"); err != nil {
		return err
	}
	if len(c.Command) == 0 || strings.TrimSpace(c.Command[0]) == "" {
		return fmt.Errorf("service %s has no command; write `command <program> [<args…>]` in its block", c.Name)
	}
	if err := supervisor.CheckCommand("service "+c.Name+"'s command", c.Command); err != nil {
		return err
	}
	if c.Workers != 0 && (c.Workers < 1 || c.Workers > MaxWorkers) {
		return fmt.Errorf("service %s: workers must be a whole number from 1 to %d, got %d", c.Name, MaxWorkers, c.Workers)
	}
	if _, ok := stopSignals[strings.ToUpper(c.StopSignal)]; !ok {
		return fmt.Errorf("service %s: stop_signal %q is not one of SIGTERM, SIGINT, SIGQUIT, SIGHUP", c.Name, c.StopSignal)
	}
	if c.StopTimeout < 0 || c.StartTimeout < 0 {
		return fmt.Errorf("service %s: start_timeout and stop_timeout must be positive durations", c.Name)
	}
	if r := c.Ready; r != nil {
		if r.TCP != "" && len(r.Command) > 0 {
			return fmt.Errorf("service %s: ready is either tcp or command, not both", c.Name)
		}
		if r.TCP != "" {
			if _, port, err := net.SplitHostPort(r.TCP); err != nil || port == "" {
				return fmt.Errorf("service %s: ready tcp %q is not a host:port address like 127.0.0.1:6379", c.Name, r.TCP)
			}
		}
		if len(r.Command) > 0 && strings.TrimSpace(r.Command[0]) == "" {
			return fmt.Errorf("service %s: ready command has an empty program", c.Name)
		}
	}
	if c.App != "" {
		if err := c.Placement.InApp("service "+c.Name, c.App); err != nil {
			return err
		}
	}
	if err := c.Placement.Check(); err != nil {
		return fmt.Errorf("service %s: %w", c.Name, err)
	}
	return nil
}

// Resolve turns the config into a spec. app is the environment of the
// Python app named by App (its interpreter as Path, its directory,
// environment, account and umask), nil without App.
func (c *Config) Resolve(app *supervisor.Command) (*Spec, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	s := &Spec{Name: c.Name, App: c.App, Path: c.Command[0], Args: c.Command[1:], Workers: max(c.Workers, 1),
		StartTimeout: time.Duration(c.StartTimeout), StopTimeout: time.Duration(c.StopTimeout),
		StopSignal: stopSignals[strings.ToUpper(c.StopSignal)], User: c.User, Group: c.Group}
	if s.StartTimeout == 0 {
		s.StartTimeout = DefaultStartTimeout
	}
	if s.StopTimeout == 0 {
		s.StopTimeout = DefaultStopTimeout
	}
	if c.Ready != nil {
		s.Ready = *c.Ready
	}
	if app != nil {
		s.Dir, s.Env, s.Credential, s.Umask = app.Dir, app.Env, app.Credential, app.Umask
		if s.Path == "python" || s.Path == "python3" {
			s.Path = app.Path
		}
		if len(s.Ready.Command) > 0 && (s.Ready.Command[0] == "python" || s.Ready.Command[0] == "python3") {
			s.Ready.Command = append([]string{app.Path}, s.Ready.Command[1:]...)
		}
		return s, nil
	}
	own, err := c.Placement.Resolve()
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", c.Name, err)
	}
	s.Dir, s.Env, s.Credential, s.Umask = own.Dir, own.Env, own.Credential, own.Umask
	return s, nil
}

// command is how a process of the service is started.
func (s *Spec) command(argv []string) supervisor.Command {
	return supervisor.Command{Path: argv[0], Args: argv[1:], Dir: s.Dir, Env: s.Env, Credential: s.Credential, Umask: s.Umask}
}
