package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Placement is where and as whom a command of its own runs (a service or
// a job without an app), as a config gives it. Its fields are inlined in
// the config of what embeds it.
type Placement struct {
	// Dir is the working directory. Default: Caddy's.
	Dir string `json:"dir,omitempty"`
	// Env sets environment variables (global placeholders such as
	// {env.HOME} allowed); EnvFile loads a dotenv file first (relative to
	// Dir); EnvInherit names variables passed from Caddy's environment.
	// The command starts from a clean environment (see Env).
	Env        map[string]string `json:"env,omitempty"`
	EnvFile    string            `json:"env_file,omitempty"`
	EnvInherit []string          `json:"env_inherit,omitempty"`
	// Umask is the file mode creation mask, in octal. Default: 0027.
	Umask string `json:"umask,omitempty"`
	// User and Group run the command as that account (Caddy must be
	// root); root itself only with AllowRoot. Default: Caddy's own.
	User      string `json:"user,omitempty"`
	Group     string `json:"group,omitempty"`
	AllowRoot bool   `json:"allow_root,omitempty"`
}

// Options are the Caddyfile options of a Placement, for error messages.
const PlacementOptions = "dir, env, env_file, env_inherit, umask, user, group, allow_root"

// SetOptions names the options that are set, in a fixed order.
func (p *Placement) SetOptions() []string {
	var set []string
	for _, o := range []struct {
		name string
		set  bool
	}{{"dir", p.Dir != ""}, {"env", len(p.Env) > 0}, {"env_file", p.EnvFile != ""}, {"env_inherit", len(p.EnvInherit) > 0},
		{"umask", p.Umask != ""}, {"user", p.User != ""}, {"group", p.Group != ""}, {"allow_root", p.AllowRoot}} {
		if o.set {
			set = append(set, o.name)
		}
	}
	return set
}

// Check validates what needs no lookup: variable names and the umask.
func (p *Placement) Check() error {
	if err := CheckEnvNames("env_inherit", p.EnvInherit); err != nil {
		return err
	}
	_, err := ParseUmask(p.Umask)
	return err
}

// Resolve turns the placement into a command template: Dir absolute, the
// account's credential, the environment built, the umask parsed (Path
// and Args are the caller's).
func (p *Placement) Resolve() (Command, error) {
	var c Command
	var err error
	if c.Dir, err = filepath.Abs(p.Dir); err != nil {
		return c, err
	}
	if p.Dir != "" {
		if err := CheckDir(c.Dir); err != nil {
			return c, err
		}
	}
	if c.Credential, err = Credential(p.User, p.Group, p.AllowRoot); err != nil {
		return c, err
	}
	envFile := p.EnvFile
	if envFile != "" && !filepath.IsAbs(envFile) {
		envFile = filepath.Join(c.Dir, envFile)
	}
	if c.Env, err = (Env{Inherit: p.EnvInherit, Credential: c.Credential, File: envFile, Vars: p.Env}).Build(); err != nil {
		return c, err
	}
	c.Umask, err = ParseUmask(p.Umask)
	return c, err
}

// CheckDir refuses a `dir` (absolute) that is not there, or not a
// directory: the keeper's chdir into it would fail as if the program were
// missing. One Caddy's account may not enter is left to the account the
// command runs as (the keeper changes directory as that account).
func CheckDir(dir string) error {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("dir %s does not exist; set `dir` to the directory the command runs in", dir)
	case err == nil && !info.IsDir():
		return fmt.Errorf("dir %s is not a directory; set `dir` to the directory the command runs in", dir)
	}
	return nil
}

// UnmarshalOption reads the placement option at d's cursor, if it is one;
// handled reports whether it was.
func (p *Placement) UnmarshalOption(d *caddyfile.Dispenser) (handled bool, err error) {
	option := d.Val()
	one := func(dst *string) error {
		if !d.NextArg() {
			return d.Errf("%s needs a value", option)
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.Errf("%s takes one value, got also %q", option, d.Val())
		}
		return nil
	}
	switch option {
	case "dir":
		return true, one(&p.Dir)
	case "env_file":
		return true, one(&p.EnvFile)
	case "umask":
		return true, one(&p.Umask)
	case "user":
		return true, one(&p.User)
	case "group":
		return true, one(&p.Group)
	case "allow_root":
		if d.NextArg() {
			return true, d.Errf("allow_root takes no value, got %q", d.Val())
		}
		p.AllowRoot = true
		return true, nil
	case "env_inherit":
		return true, UnmarshalEnvInherit(d, d.RemainingArgs(), &p.EnvInherit)
	case "env":
		return true, UnmarshalEnv(d, d.RemainingArgs(), &p.Env)
	}
	return false, nil
}

// InApp is the error for placement options given beside `app`.
func (p *Placement) InApp(what, app string) error {
	if set := p.SetOptions(); len(set) > 0 {
		return fmt.Errorf("%s runs in app %s's environment: %s is the app's; set it in the app's block, or drop `app` to give it its own", what, app, set[0])
	}
	return nil
}

// UnmarshalEnv sets the variable of an `env NAME value` option, args
// being its arguments, in *env (made when nil): the one parser of env for
// workers, services, jobs and process upstreams. d makes the errors.
func UnmarshalEnv(d *caddyfile.Dispenser, args []string, env *map[string]string) error {
	if len(args) != 2 {
		return d.Errf("env takes a name and a value, like `env DJANGO_SETTINGS_MODULE mysite.settings`; got %d arguments", len(args))
	}
	if err := CheckEnvNames("env", args[:1]); err != nil {
		return d.Err(err.Error())
	}
	if *env == nil {
		*env = map[string]string{}
	}
	(*env)[args[0]] = args[1]
	return nil
}

// UnmarshalEnvInherit adds the names of an `env_inherit NAME…` option,
// args being its arguments, to *names: the one parser of env_inherit.
func UnmarshalEnvInherit(d *caddyfile.Dispenser, args []string, names *[]string) error {
	if len(args) == 0 {
		return d.Err("env_inherit needs the names of variables to pass from Caddy's environment, like `env_inherit SSL_CERT_FILE HTTPS_PROXY`")
	}
	if err := CheckEnvNames("env_inherit", args); err != nil {
		return d.Err(err.Error())
	}
	*names = append(*names, args...)
	return nil
}
