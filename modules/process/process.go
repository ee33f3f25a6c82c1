// Package process is the reverse_proxy upstream source that launches and
// supervises any command serving HTTP on the port it is given (Node.js,
// gunicorn, a FastCGI responder …): `reverse_proxy { dynamic process
// <command…> { … } }`. Caddy's own reverse_proxy (and its transports)
// proxies to the instances that are ready.
package process

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/names"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

func init() {
	caddy.RegisterModule(Upstreams{})
}

// Upstreams launches Workers copies of Command, each told a free loopback
// port (in the PORT environment variable and as {port} in the arguments),
// waits until each is ready, restarts those that exit (with backoff), and
// gives reverse_proxy the ready ones. Like the Python pools, the processes
// are shared by identical configs across reloads and a changed config
// gets new ones, ready before the old ones stop.
type Upstreams struct {
	// Command is the program and its arguments; "{port}" in an argument
	// is replaced by the instance's port.
	Command []string `json:"command"`

	// Name shown in status and logs. Default: the program's base name.
	Name string `json:"name,omitempty"`

	// Dir is the working directory. Default: Caddy's.
	Dir string `json:"dir,omitempty"`

	// Env sets environment variables (placeholders such as {env.HOME}
	// allowed); EnvFile loads a dotenv file first. Neither may set PORT
	// (unless Socket) or a name starting with HEARTH_: Hearth sets those.
	Env     map[string]string `json:"env,omitempty"`
	EnvFile string            `json:"env_file,omitempty"`

	// EnvInherit names variables passed from Caddy's environment: the
	// instances start from a clean one (PATH, LANG, LC_*, TZ, TMPDIR, HOME,
	// USER and LOGNAME of their account), then these, EnvFile and Env.
	EnvInherit []string `json:"env_inherit,omitempty"`

	// Umask is the instances' file mode creation mask, in octal ("0027").
	// Default: 0027.
	Umask string `json:"umask,omitempty"`

	// User and Group run the instances as that account (Caddy must be
	// root); root is refused unless AllowRoot.
	User      string `json:"user,omitempty"`
	Group     string `json:"group,omitempty"`
	AllowRoot bool   `json:"allow_root,omitempty"`

	// Socket gives each instance a unix socket instead of a port: its path
	// is in HEARTH_SOCKET and replaces {socket} in the arguments.
	Socket bool `json:"socket,omitempty"`

	// Workers is the number of instances. Default: 1.
	Workers int `json:"workers,omitempty"`

	// ReadyPath, if set, is requested (HTTP GET) until it answers below
	// 500; otherwise an instance is ready once its port accepts
	// connections.
	ReadyPath string `json:"ready_path,omitempty"`

	// StartTimeout bounds how long an instance may take to be ready.
	// Default: 60s.
	StartTimeout caddy.Duration `json:"start_timeout,omitempty"`

	// StopSignal asks an instance to stop: SIGTERM (default), SIGINT,
	// SIGQUIT or SIGHUP.
	StopSignal string `json:"stop_signal,omitempty"`

	// StopTimeout is how long a stopping instance has before SIGKILL, and
	// how long a replaced group waits for requests in flight. Default: 30s.
	StopTimeout caddy.Duration `json:"stop_timeout,omitempty"`

	group *Group
	key   string
}

// CaddyModule returns the Caddy module information.
func (Upstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.process",
		New: func() caddy.Module { return new(Upstreams) },
	}
}

// spec is the resolved configuration of a group; its hash keys the group
// across reloads.
type spec struct {
	Name         string        `json:"name"`
	Path         string        `json:"path"`
	Args         []string      `json:"args"`
	Dir          string        `json:"dir"`
	Env          []string      `json:"env"`
	Workers      int           `json:"workers"`
	ReadyPath    string        `json:"ready_path"`
	StartTimeout time.Duration `json:"start_timeout"`
	StopSignal   syscall.Signal
	StopTimeout  time.Duration `json:"stop_timeout"`
	User         string        `json:"user"`
	Group        string        `json:"group"`
	Socket       bool          `json:"socket"`
	Umask        uint32        `json:"umask"`
	credential   *syscall.Credential
}

var stopSignals = map[string]syscall.Signal{
	"": syscall.SIGTERM, "SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT,
	"SIGQUIT": syscall.SIGQUIT, "SIGHUP": syscall.SIGHUP,
}

// Provision validates the config and registers the group with the hearth
// app, which starts it; nothing is launched here.
func (u *Upstreams) Provision(ctx caddy.Context) error {
	s, err := u.resolve()
	if err != nil {
		// the program only: arguments may carry a password (`--requirepass`)
		what := "(no command)"
		if len(u.Command) > 0 {
			what = u.Command[0]
		}
		if u.Name != "" {
			what = u.Name + " (" + what + ")"
		}
		return fmt.Errorf("process %s: %w", what, err)
	}
	key := hearth.PoolKey("process", s)
	appModule, err := ctx.App("hearth")
	if err != nil {
		return err
	}
	// (after the hearth app's provisioning, which records the config's admin API)
	if err := hearth.CheckAdminReach("process upstream "+s.Name, s.credential); err != nil {
		return err
	}
	hearth.WarnIfRoot(ctx.Logger(), "process upstream "+s.Name, s.credential)
	pool, err := appModule.(*hearth.App).UsePool(key, func() (hearth.Pool, error) {
		return newGroup(s, ctx.Logger()), nil
	})
	if err != nil {
		return err
	}
	u.group, u.key = pool.(*Group), key
	return nil
}

// maxWorkers is the most instances a process upstream runs: they all start
// at once, each on a port of its own (the same limit as a Python pool's).
const maxWorkers = 1024

// checkWorkers is the one rule for `workers`, used by the Caddyfile parser
// and by provisioning.
func checkWorkers(n int) error {
	if n < 1 || n > maxWorkers {
		return fmt.Errorf("workers must be a whole number from 1 to %d (every instance starts at once, each on a port of its own), got %d", maxWorkers, n)
	}
	return nil
}

// portSetError is the error for a PORT the user sets (source says
// where) on a process upstream that is given a port.
func portSetError(source string) string {
	return source + ": Hearth sets PORT to each instance's own port, so the command may not get another: remove it (the command finds its port in $PORT, $HEARTH_PORT or {port}; for local development, keep PORT out of the env_file Hearth reads)"
}

func (u *Upstreams) resolve() (*spec, error) {
	if len(u.Command) == 0 {
		return nil, fmt.Errorf("no command; write `dynamic process <program> [<args…>]`")
	}
	if strings.TrimSpace(u.Command[0]) == "" {
		return nil, fmt.Errorf("the command's program is empty; write `dynamic process <program> [<args…>]`")
	}
	if err := supervisor.CheckCommand("the command", u.Command); err != nil {
		return nil, err
	}
	if u.Name != "" { // the default, the program's base name, is no path
		if err := names.Check("process", u.Name, "name <name>"); err != nil {
			return nil, err
		}
	}
	s := &spec{Name: u.Name, Path: u.Command[0], Args: u.Command[1:], Workers: u.Workers, ReadyPath: u.ReadyPath, Socket: u.Socket,
		StartTimeout: time.Duration(u.StartTimeout), StopTimeout: time.Duration(u.StopTimeout)}
	s.Name = hearth.AppName(s.Name, "process", s.Path)
	if s.Workers != 0 { // 0: the default
		if err := checkWorkers(s.Workers); err != nil {
			return nil, err
		}
	}
	s.Workers = max(s.Workers, 1)
	if s.StartTimeout < 0 || s.StopTimeout < 0 {
		return nil, fmt.Errorf("start_timeout and stop_timeout must be positive durations (0: the default), got %s and %s", s.StartTimeout, s.StopTimeout)
	}
	if s.StartTimeout == 0 {
		s.StartTimeout = 60 * time.Second
	}
	if s.StopTimeout == 0 {
		s.StopTimeout = hearth.DefaultProcessStopTimeout
	}
	sig, ok := stopSignals[strings.ToUpper(u.StopSignal)]
	if !ok {
		return nil, fmt.Errorf("stop_signal %q is not one of SIGTERM, SIGINT, SIGQUIT, SIGHUP", u.StopSignal)
	}
	s.StopSignal = sig
	cred, err := supervisor.Credential(u.User, u.Group, u.AllowRoot)
	if err != nil {
		return nil, err
	}
	s.credential, s.User, s.Group = cred, u.User, u.Group
	if s.Socket && cred != nil {
		return nil, fmt.Errorf("socket: the instances run as %s, an account other than Caddy's, which may not create a socket in Caddy's sockets directory (no account but Caddy's may put one there: it would receive the requests); remove `socket`, and each instance gets a loopback port in $PORT", hearth.AccountName(cred.Uid))
	}
	if s.ReadyPath != "" && !strings.HasPrefix(s.ReadyPath, "/") {
		return nil, fmt.Errorf("ready_path %q must start with /", s.ReadyPath)
	}
	dir, err := filepath.Abs(u.Dir)
	if err != nil {
		return nil, err
	}
	if u.Dir != "" {
		if err := supervisor.CheckDir(dir); err != nil {
			return nil, err
		}
	}
	s.Dir = dir
	envFile := u.EnvFile
	if envFile != "" && !filepath.IsAbs(envFile) {
		envFile = filepath.Join(dir, envFile)
	}
	if s.Env, err = (supervisor.Env{Inherit: u.EnvInherit, Credential: s.credential, File: envFile, Vars: u.Env}).Build(); err != nil {
		return nil, err
	}
	if !s.Socket && slices.ContainsFunc(s.Env, func(kv string) bool { return strings.HasPrefix(kv, "PORT=") }) {
		source := "env_file " + envFile
		if _, ok := u.Env["PORT"]; ok {
			source = "env PORT"
		} else if slices.Contains(supervisor.Inherited(u.EnvInherit), "PORT") {
			source = "env_inherit PORT"
		}
		return nil, errors.New(portSetError(source))
	}
	if s.Umask, err = supervisor.ParseUmask(u.Umask); err != nil {
		return nil, err
	}
	return s, nil
}

// GetUpstreams returns the instances that are ready.
func (u *Upstreams) GetUpstreams(*http.Request) ([]*reverseproxy.Upstream, error) {
	ups := u.group.ready.Load()
	if ups == nil || len(*ups) == 0 {
		return nil, fmt.Errorf("process %s: no instance is ready", u.group.spec.Name)
	}
	return *ups, nil
}

// PoolKey identifies the group (hearth.PoolHandler).
func (u *Upstreams) PoolKey() string { return u.key }

// Cleanup releases the group; the last config using it stops it.
func (u *Upstreams) Cleanup() error {
	if u.key != "" {
		hearth.ReleasePool(u.key)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Upstreams)(nil)
	_ caddy.CleanerUpper          = (*Upstreams)(nil)
	_ reverseproxy.UpstreamSource = (*Upstreams)(nil)
)
