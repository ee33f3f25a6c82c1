package python

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	wsgi <module:callable> {
//		name          <name>
//		dir           <path>
//		user          <user>
//		group         <group>
//		allow_root
//		python        <interpreter>
//		venv          <path>
//		env           <key> <value>
//		env_file      <path>
//		env_inherit   <name…>               # repeatable
//		umask         <octal>
//		workers       <n> [<max>]
//		min_workers   <n>
//		max_workers   <n>
//		idle_timeout  <duration>
//		threads       <n>
//		timeout       <duration>|off
//		max_requests  <n>
//		max_requests_jitter <n>
//		max_memory    <size>
//		max_lifetime  <duration>
//		preload
//		pipeline      auto|off
//		cpu_policy    batch|normal
//		watch         [<glob>…]
//		settings      auto
//		guard         enforce|warn|off {
//			allow <finding id…>
//			hosts <host…>     # and the other options of the guard directive
//		}
//		max_queue     <n>
//		max_queue_per_client <n>
//		queue_timeout <duration>
//		max_body      <size>
//		start_timeout <duration>
//		stop_timeout  <duration>
//		before_start  <command> [<args…>]   # repeatable, run in order
//	}
func (h *WSGI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	h.directive = "wsgi"
	return h.unmarshal(d, nil)
}

// unmarshal parses the directive; extra, if set, handles options of the
// handler embedding WSGI first (reporting whether it did).
func (h *WSGI) unmarshal(d *caddyfile.Dispenser, extra func(*caddyfile.Dispenser) (bool, error)) error {
	d.Next() // directive name
	if !d.NextArg() {
		return d.Errf("%s needs the app to serve, as module:callable (for example `%s mysite.%s:application`)", h.directive, h.directive, h.directive)
	}
	h.App = d.Val()
	if _, err := checkAppSpec(h.App); err != nil {
		return d.Err(err.Error())
	}
	if d.NextArg() {
		return d.Errf("%s takes one app, got also %q; put options inside a { } block", h.directive, d.Val())
	}
	for d.NextBlock(0) {
		if extra != nil {
			if handled, err := extra(d); handled || err != nil {
				if err != nil {
					return err
				}
				continue
			}
		}
		if err := h.unmarshalOption(d); err != nil {
			return err
		}
	}
	// the rules between options, with the block's file:line
	if err := h.PoolConfig.checkFields(); err != nil {
		return d.Errf("%s %s: %v", h.directive, h.App, err)
	}
	return nil
}

// wsgiOptions lists the subdirectives, for error messages.
var wsgiOptions = []string{
	"name", "dir", "user", "group", "allow_root", "python", "venv", "env", "env_file", "env_inherit", "umask", "workers", "min_workers", "max_workers",
	"idle_timeout", "threads", "timeout", "max_requests", "max_requests_jitter", "max_memory",
	"max_lifetime", "preload", "pipeline", "cpu_policy", "watch", "guard", "settings", "max_queue", "max_queue_per_client", "queue_timeout", "max_body", "start_timeout",
	"stop_timeout", "before_start",
}

func (h *WSGI) unmarshalOption(d *caddyfile.Dispenser) error {
	option := d.Val()
	switch option {
	case "name":
		return oneArg(d, &h.Name)
	case "dir":
		return oneArg(d, &h.Dir)
	case "user":
		return oneArg(d, &h.User)
	case "group":
		return oneArg(d, &h.Group)
	case "allow_root":
		if d.NextArg() {
			return d.Errf("allow_root takes no value, got %q", d.Val())
		}
		h.AllowRoot = true
		return nil
	case "python":
		return oneArg(d, &h.Python)
	case "venv":
		return oneArg(d, &h.Venv)
	case "env_file":
		return oneArg(d, &h.EnvFile)
	case "env_inherit":
		return supervisor.UnmarshalEnvInherit(d, d.RemainingArgs(), &h.EnvInherit)
	case "umask":
		if err := oneArg(d, &h.Umask); err != nil {
			return err
		}
		mask, err := supervisor.ParseUmask(h.Umask)
		if err != nil {
			return d.Err(err.Error())
		}
		h.Umask = supervisor.FormatUmask(mask) // four digits in the JSON
		return nil
	case "env":
		return supervisor.UnmarshalEnv(d, d.RemainingArgs(), &h.Env)
	case "workers":
		args := d.RemainingArgs()
		if len(args) < 1 || len(args) > 2 {
			return d.Errf("workers takes a count, or a minimum and a maximum to autoscale (`workers 2 8`); got %d values", len(args))
		}
		var err error
		if h.Workers, err = parseCount(d, "workers", args[0]); err != nil {
			return err
		}
		if len(args) == 2 {
			if h.MaxWorkers, err = parseCount(d, "workers", args[1]); err != nil {
				return err
			}
			if h.MaxWorkers < h.Workers {
				return d.Errf("workers %d %d: the maximum is below the minimum", h.Workers, h.MaxWorkers)
			}
		}
		return nil
	case "min_workers":
		return count(d, &h.Workers)
	case "max_workers":
		return count(d, &h.MaxWorkers)
	case "idle_timeout":
		return duration(d, &h.IdleTimeout)
	case "max_requests":
		return count(d, &h.MaxRequests)
	case "max_requests_jitter":
		return count(d, &h.MaxRequestsJitter)
	case "max_lifetime":
		return duration(d, &h.MaxLifetime)
	case "max_memory":
		return size(d, &h.MaxMemory)
	case "timeout":
		if d.CountRemainingArgs() == 1 && d.NextArg() {
			if d.Val() == "off" {
				h.Timeout = -1
				return nil
			}
			d.Prev()
		}
		return duration(d, &h.Timeout)
	case "guard":
		return h.unmarshalGuard(d)
	case "settings":
		if !d.NextArg() {
			return d.Err("settings needs a value: `settings overlay` (Django: production settings set over the project's own) or `settings auto` (environment variables for a settings.py that reads them)")
		}
		h.Settings = d.Val()
		switch h.Settings {
		case SettingsAuto:
		case SettingsOverlay:
			if d.NextArg() {
				h.SettingsModule = d.Val()
			}
		default:
			return d.Errf("settings %q is not known; use `settings overlay [<settings module>]` (Django) or `settings auto`", h.Settings)
		}
		if d.NextArg() {
			return d.Errf("settings %s takes no more values, got %q", h.Settings, d.Val())
		}
		return nil
	case "preload":
		if d.NextArg() {
			return d.Errf("preload takes no value, got %q", d.Val())
		}
		h.Preload = true
		return nil
	case "pipeline":
		if err := oneArg(d, &h.Pipeline); err != nil {
			return err
		}
		if h.Pipeline != "auto" && h.Pipeline != "off" {
			return d.Errf("pipeline %q is not known; use auto (the default) or off", h.Pipeline)
		}
		return nil
	case "cpu_policy":
		if err := oneArg(d, &h.CPUPolicy); err != nil {
			return err
		}
		if h.CPUPolicy != "batch" && h.CPUPolicy != "normal" {
			return d.Errf("cpu_policy %q is not known; use batch (the default: a woken worker waits for the running thread's time slice) or normal (it may preempt it)", h.CPUPolicy)
		}
		return nil
	case "watch":
		h.Watch = d.RemainingArgs()
		if len(h.Watch) == 0 {
			h.Watch = []string{"**/*.py"}
		}
		if err := checkWatch(h.Watch); err != nil {
			return d.Err(err.Error())
		}
		return nil
	case "threads":
		return count(d, &h.Threads)
	case "max_queue":
		return count(d, &h.MaxQueue)
	case "max_queue_per_client":
		return count(d, &h.MaxQueuePerClient)
	case "queue_timeout":
		return duration(d, &h.QueueTimeout)
	case "start_timeout":
		return duration(d, &h.StartTimeout)
	case "stop_timeout":
		return duration(d, &h.StopTimeout)
	case "max_body":
		return size(d, &h.MaxBody)
	case "before_start":
		command := d.RemainingArgs()
		if len(command) == 0 {
			return d.Err("before_start needs a command, like `before_start python manage.py migrate --noinput`")
		}
		h.BeforeStart = append(h.BeforeStart, command)
		return nil
	}
	valid := wsgiOptions
	if h.directive == "asgi" {
		valid = asgiOptions
	}
	hint := ""
	if s := closest(option, valid); s != "" {
		hint = "did you mean " + strconv.Quote(s) + "? "
	}
	return d.Errf("unknown %s subdirective %q; %svalid ones are: %s", h.directive, option, hint, strings.Join(valid, ", "))
}

// unmarshalGuard parses `guard enforce|warn|off [{ allow …; <guard option> … }]`.
func (h *WSGI) unmarshalGuard(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("guard needs a mode: enforce, warn or off")
	}
	if h.Guard == nil {
		h.Guard = new(GuardConfig)
	}
	h.Guard.Mode = d.Val()
	if err := (&GuardConfig{Mode: h.Guard.Mode}).checkMode(); err != nil {
		return d.Err(err.Error())
	}
	if d.NextArg() {
		return d.Errf("guard takes one mode, got also %q", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if h.Guard.Mode == GuardOff {
			return d.Errf("guard off runs no checks and no HTTP guard, so %s would do nothing: remove it, or use `guard warn` to keep the HTTP guard and only log the findings", d.Val())
		}
		if d.Val() == "allow" {
			ids := d.RemainingArgs()
			if len(ids) == 0 {
				return d.Err("allow needs finding ids, like `allow HG-HOST-01`")
			}
			for _, id := range ids {
				if !strings.HasPrefix(id, "HG-") {
					return d.Errf("allow %q is not a finding id (they look like HG-HOST-01; see the README)", id)
				}
			}
			h.Guard.Allow = append(h.Guard.Allow, ids...)
			continue
		}
		if h.Guard.HTTP == nil {
			h.Guard.HTTP = new(guard.Guard)
		}
		if err := h.Guard.HTTP.UnmarshalOption(d); err != nil {
			return err
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	option := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("%s takes exactly one value, got %d", option, len(args))
	}
	*dst = args[0]
	return nil
}

func count(d *caddyfile.Dispenser, dst *int) error {
	option := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := parseCount(d, option, s)
	*dst = n
	return err
}

func parseCount(d *caddyfile.Dispenser, option, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, d.Errf("%s must be a whole number of at least 1, got %q", option, s)
	}
	if err := checkCount(option, n); err != nil {
		return 0, d.Err(err.Error())
	}
	return n, nil
}

func size(d *caddyfile.Dispenser, dst *int64) error {
	option := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := parseSize(option, s)
	if err != nil {
		return d.Err(err.Error())
	}
	*dst = n
	return nil
}

func duration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	option := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur <= 0 {
		orOff := ""
		if option == "timeout" {
			orOff = ", or off"
		}
		return d.Errf("%s %q is not a positive duration; write it like 30s, 2m or 1h%s", option, s, orOff)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// closest returns the option nearest to a misspelling, if one is close.
func closest(word string, options []string) string {
	best, bestDist := "", 3
	for _, o := range options {
		if d := editDistance(word, o); d < bestDist {
			best, bestDist = o, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Interface guard
var _ caddyfile.Unmarshaler = (*WSGI)(nil)
