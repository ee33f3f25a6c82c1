package python

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/dustin/go-humanize"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/names"
	"github.com/hearth-dev/hearth/modules/python/engine"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// Defaults of the pool options, documented in the README.
const (
	DefaultMaxQueue     = 1024
	DefaultQueueTimeout = 30 * time.Second
	DefaultStartTimeout = 60 * time.Second
	DefaultStopTimeout  = 30 * time.Second
	DefaultIdleTimeout  = 60 * time.Second
	DefaultTimeout      = 30 * time.Second
	DefaultMaxBody      = 100 << 20
	DefaultPython       = "python3"
)

// PoolConfig configures a pool of Python worker processes. It is shared by
// every handler that serves Python apps.
type PoolConfig struct {
	// Name of the app, shown in logs and status. Default: the top-level
	// package of the app's module ("engwrite" for "engwrite.wsgi:application").
	Name string `json:"name,omitempty"`

	// Dir is the app's working directory, put first on sys.path.
	// Default: Caddy's working directory.
	Dir string `json:"dir,omitempty"`

	// Python is the interpreter to run. Default: "python3" from PATH, or the
	// venv's interpreter when Venv is set.
	Python string `json:"python,omitempty"`

	// Venv is a virtual environment directory: its bin/python runs the
	// workers, with VIRTUAL_ENV and PATH set as `activate` would.
	Venv string `json:"venv,omitempty"`

	// Env sets environment variables of the workers (and of before_start).
	// Values may use global placeholders such as {env.HOME}.
	Env map[string]string `json:"env,omitempty"`

	// EnvFile is a dotenv file (KEY=value lines, # comments, optional
	// quotes and `export`) loaded into the environment; Env wins on conflict.
	EnvFile string `json:"env_file,omitempty"`

	// EnvInherit names variables passed from Caddy's environment. The
	// workers (and before_start, and the pre-launch check) start from a
	// clean environment: PATH, LANG, LC_*, TZ, TMPDIR, HOME, USER and
	// LOGNAME of their account, then these, then EnvFile and Env.
	EnvInherit []string `json:"env_inherit,omitempty"`

	// Umask is the workers' (and before_start's) file mode creation mask,
	// in octal ("0027"). Default: 0027.
	Umask string `json:"umask,omitempty"`

	// User runs the workers (and before_start) as this user when Caddy
	// runs as root; Group overrides the user's primary group. Root is
	// refused unless AllowRoot. Default: Caddy's own user.
	User      string `json:"user,omitempty"`
	Group     string `json:"group,omitempty"`
	AllowRoot bool   `json:"allow_root,omitempty"`

	// Workers is the number of worker processes, or the minimum when
	// MaxWorkers is set. Default: the number of CPUs.
	Workers int `json:"workers,omitempty"`

	// MaxWorkers turns on autoscaling: a worker is added (one at a time, up
	// to MaxWorkers) while requests wait in the queue, and a worker idle for
	// IdleTimeout is retired, never going below Workers. Default: 0 (a
	// fixed number of workers).
	MaxWorkers int `json:"max_workers,omitempty"`

	// IdleTimeout is how long an extra worker of an autoscaled pool may
	// stay idle before it is retired. Default: 60s.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// MaxRequests recycles a worker after it has served this many requests
	// (a replacement is started first and the old worker retires once the
	// replacement is ready). Default: 0 (never).
	MaxRequests int `json:"max_requests,omitempty"`

	// MaxRequestsJitter adds a random 0…N to each worker's MaxRequests, so
	// workers do not recycle all at once. Default: 0.
	MaxRequestsJitter int `json:"max_requests_jitter,omitempty"`

	// MaxMemory recycles a worker whose resident memory exceeds this many
	// bytes, after its current request (sampled every second).
	// Default: 0 (no limit).
	MaxMemory int64 `json:"max_memory,omitempty"`

	// MaxLifetime recycles a worker after it has run this long (plus up to
	// 10% jitter). Default: 0 (never).
	MaxLifetime caddy.Duration `json:"max_lifetime,omitempty"`

	// Preload imports the app once in a fork server process and forks the
	// workers from it: they share its memory copy-on-write and start fast
	// (scale-up, recycling). The trade-off: whatever the app did at import
	// time is shared by every worker (a database connection or a thread
	// opened at import breaks under fork), and recycled workers run the
	// code the fork server loaded; a restart loads a new fork server.
	// Default: off.
	Preload bool `json:"preload,omitempty"`

	// Pipeline, when requests queue for busy workers, writes the next
	// waiting requests to a worker right behind the one it is running, so
	// the worker starts on the next the moment it answers instead of
	// waiting for Caddy to hand it one (a large gain for short requests).
	// "auto" pipelines at most 2ms of the app's mean request time behind a
	// running request (up to 8 requests; none once requests average 2ms),
	// and only requests under 16 KiB; a request pipelined behind one that
	// turns out slow waits for it even if another worker frees up first,
	// and leaves the queue (queue_timeout no longer applies to it). "off"
	// keeps every waiting request in the shared queue until a worker is
	// free: choose it for apps that mix fast requests with slow ones. WSGI
	// only. Default: auto.
	Pipeline string `json:"pipeline,omitempty"`

	// CPUPolicy is the Linux scheduling policy the workers run under.
	// "batch" (SCHED_BATCH) keeps a worker that Caddy wakes with a request
	// from preempting the thread that is running on that CPU (most often
	// Caddy's own, which has more requests to pass on); the worker runs
	// once that thread's time slice ends or it waits, so Caddy serves the
	// workers in batches. Its share of the CPU (its nice value) is
	// unchanged. Measured on hello world with two workers on 2 CPUs: ASGI
	// about 7% more requests/s, a shorter p99 at a quarter of the peak
	// rate, a longer p99.9 at half of it (tests/bench/analysis.md).
	// "normal" (SCHED_OTHER, Linux's default) lets a woken worker preempt
	// what runs when the kernel finds it fair: choose it when other busy
	// programs share the machine and the app's latency matters more than
	// theirs. Workers of a Caddy under SCHED_IDLE stay there. Default:
	// batch.
	CPUPolicy string `json:"cpu_policy,omitempty"`

	// Watch, for development, restarts the workers (each replacement ready
	// before its predecessor retires) when a file under Dir matching one of
	// these globs changes; "**/" matches any depth. Checked every second.
	// An empty list in the Caddyfile (`watch` alone) means ["**/*.py"].
	Watch []string `json:"watch,omitempty"`

	kind, lifespan string // set by the ASGI handler
	maxWebSockets  int    // set by the ASGI handler
	maxStreams     int    // set by the ASGI handler
	// maxOpenPerClient is set by the ASGI handler
	maxOpenPerClient int
	// forCommand defers reading env_file to reresolveAs: a command beside
	// the config (check, manage, exec) learns the account it runs as only
	// after resolve, and must read the file as that account alone
	forCommand bool

	// Threads is the number of requests one worker handles at once, each
	// in its own thread. Default: 1.
	Threads int `json:"threads,omitempty"`

	// MaxQueue is how many requests may wait for a free worker; more get
	// 503 with Retry-After. Default: 1024.
	MaxQueue int `json:"max_queue,omitempty"`

	// MaxQueuePerClient is how many of those places one client may take:
	// its next request gets 429 with Retry-After, and the other clients
	// keep the rest of the queue. A client is its address as Caddy
	// determines it (behind a proxy in trusted_proxies, the address the
	// proxy names), an IPv6 client its /64. Default: a quarter of
	// max_queue (256), at least 1.
	MaxQueuePerClient int `json:"max_queue_per_client,omitempty"`

	// QueueTimeout is how long a request may wait for a free worker before
	// it gets 503 with Retry-After. Default: 30s.
	QueueTimeout caddy.Duration `json:"queue_timeout,omitempty"`

	// StartTimeout bounds how long a worker may take to import the app and
	// become ready. Default: 60s.
	StartTimeout caddy.Duration `json:"start_timeout,omitempty"`

	// StopTimeout bounds how long a stopping pool waits for requests in
	// flight before it terminates its workers. Default: 30s.
	StopTimeout caddy.Duration `json:"stop_timeout,omitempty"`

	// Settings gives the app its production settings. "auto": SECRET_KEY
	// (generated once with a CSPRNG, kept in Caddy's storage, stable
	// across restarts, never logged), DEBUG=False, and ALLOWED_HOSTS and
	// CSRF_TRUSTED_ORIGINS (comma-separated) from the addresses of the
	// sites serving it, as environment variables, for a settings.py that
	// reads them. "overlay" (Django): the same values, plus STATIC_ROOT
	// (<dir>/staticfiles) when the project has none and, on HTTPS sites,
	// SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE and SECURE_HSTS_SECONDS,
	// set over the project's own settings module with no edit to it.
	// Either way env and env_file win. Default: "" (none).
	Settings string `json:"settings,omitempty"`

	// SettingsModule is the project's Django settings module that
	// `settings overlay` loads. Default: DJANGO_SETTINGS_MODULE of env or
	// env_file, else the default the app's module sets (as startproject's
	// wsgi.py does), else <package>.settings.
	SettingsModule string `json:"settings_module,omitempty"`

	// Guard configures the pre-launch checks (run in the app's own
	// environment before it starts) and the HTTP guard around the app.
	// Default: enforce.
	Guard *GuardConfig `json:"guard,omitempty"`

	// BeforeStart lists commands (each a program and its arguments) run
	// once, in order, in the app's directory and environment, before the
	// workers start, such as [["python", "manage.py", "migrate", "--noinput"]].
	// A bare "python" runs the app's interpreter. If one fails, the config
	// is refused with its output.
	BeforeStart [][]string `json:"before_start,omitempty"`
}

// poolSpec is the resolved, immutable description of an app: the engine's
// options and what Hearth does around its start. Its hash keys the app
// across config reloads: same spec, same running workers.
type poolSpec struct {
	engine.Options
	BeforeStart    [][]string `json:"before_start"`
	EnvFile        string     `json:"env_file"`
	GuardMode      string     `json:"guard_mode"`
	Settings       string     `json:"settings"`
	SettingsModule string     `json:"settings_module"`
	HSTSMaxAge     int        `json:"hsts_max_age"` // the HTTP guard's (0: none)
	User           string     `json:"user"`
	Group          string     `json:"group"`
	Explicit       []string   `json:"explicit"`
	GuardAllow     []string   `json:"guard_allow"`
}

// key is the identity of the spec across reloads.
func (s *poolSpec) key() string { return hearth.PoolKey("python", s) }

// checkAppSpec validates "module:callable" and returns the module.
func checkAppSpec(appSpec string) (string, error) {
	module, callable, _ := strings.Cut(appSpec, ":")
	if module == "" || strings.ContainsAny(appSpec, " \t/\\") || strings.HasSuffix(appSpec, ":") || strings.Contains(callable, ":") {
		return "", fmt.Errorf("app %q is not of the form module:callable (for example mysite.wsgi:application); the module is a dotted Python import path relative to `dir`", appSpec)
	}
	return module, nil
}

// resolve validates the config, applies defaults and reads env_file.
// appSpec is "module:callable".
func (c PoolConfig) resolve(appSpec string) (*poolSpec, error) {
	module, err := checkAppSpec(appSpec)
	if err != nil {
		return nil, err
	}
	threads := c.Threads
	if c.kind == "asgi" {
		threads = 0 // max_concurrency, checked by the asgi handler
	}
	check := c
	check.Threads = threads
	if err := check.checkFields(); err != nil {
		return nil, err
	}
	s := &poolSpec{Options: engine.Options{
		App:               appSpec,
		Name:              c.Name,
		Workers:           c.Workers,
		MaxWorkers:        c.MaxWorkers,
		IdleTimeout:       time.Duration(c.IdleTimeout),
		MaxRequests:       c.MaxRequests,
		MaxRequestsJitter: c.MaxRequestsJitter,
		MaxMemory:         c.MaxMemory,
		MaxLifetime:       time.Duration(c.MaxLifetime),
		Watch:             c.Watch,
		Preload:           c.Preload,
		Pipeline:          c.Pipeline,
		CPUPolicy:         c.CPUPolicy,
		Threads:           c.Threads,
		MaxQueue:          c.MaxQueue,
		MaxQueuePerClient: c.MaxQueuePerClient,
		QueueTimeout:      time.Duration(c.QueueTimeout),
		StartTimeout:      time.Duration(c.StartTimeout),
		StopTimeout:       time.Duration(c.StopTimeout),
		RuntimeDir:        filepath.Join(caddy.AppDataDir(), "hearth", "runtime"),
	}}
	s.Name = hearth.AppName(s.Name, "python", module)
	if err := names.Check("app", s.Name, "name <name>"); err != nil { // the admin API's routes, logs and metrics go by it
		if c.Name == "" {
			err = fmt.Errorf("%w: it comes from the module %s; give the app one with `name <name>` in its block", err, module)
		}
		return nil, err
	}
	if err := s.applyCounts(); err != nil {
		return nil, err
	}
	if err := choose("pipeline", &s.Pipeline, "auto", "off"); err != nil {
		return nil, err
	}
	if err := choose("cpu_policy", &s.CPUPolicy, "batch", "normal"); err != nil {
		return nil, err
	}
	if err := s.checkRecycling(); err != nil {
		return nil, err
	}
	dir, err := absDir(c.Dir)
	if err != nil {
		return nil, err
	}
	s.Dir = dir
	// the account first: the environment has its HOME, USER and LOGNAME
	if s.Credential, err = supervisor.Credential(c.User, c.Group, c.AllowRoot); err != nil {
		return nil, err
	}
	envConfig := c
	if c.forCommand {
		envConfig.EnvFile = "" // read by reresolveAs, as the command's account
	}
	env, err := envConfig.environment(dir, s.Credential)
	if err != nil {
		return nil, err
	}
	if s.Python, err = c.interpreter(dir, env); err != nil {
		return nil, err
	}
	s.Env = env
	if s.Umask, err = supervisor.ParseUmask(c.Umask); err != nil {
		return nil, err
	}
	s.BeforeStart = c.BeforeStart
	if c.EnvFile != "" {
		s.EnvFile = c.EnvFile
		if !filepath.IsAbs(s.EnvFile) {
			s.EnvFile = filepath.Join(dir, s.EnvFile)
		}
	}
	var g GuardConfig
	if c.Guard != nil {
		g = *c.Guard
	}
	if err := g.checkMode(); err != nil {
		return nil, err
	}
	s.GuardMode, s.GuardAllow = g.Mode, g.Allow
	s.User, s.Group = c.User, c.Group
	s.Kind, s.Lifespan, s.MaxWebSockets, s.MaxStreams, s.MaxOpenPerClient = c.kind, c.lifespan, c.maxWebSockets, c.maxStreams, c.maxOpenPerClient
	switch c.Settings {
	case "", SettingsAuto, SettingsOverlay:
		s.Settings = c.Settings
	default:
		return nil, fmt.Errorf("settings %q is not known; it is auto (environment variables) or overlay (Django: set over the project's settings module)", c.Settings)
	}
	if c.SettingsModule != "" {
		if c.Settings != SettingsOverlay {
			return nil, fmt.Errorf("settings_module %q is only used with `settings overlay`", c.SettingsModule)
		}
		if !pythonModule.MatchString(c.SettingsModule) {
			return nil, fmt.Errorf("settings_module %q is not a Python module name, like mysite.settings", c.SettingsModule)
		}
		s.SettingsModule = c.SettingsModule
	}
	if g.Mode != GuardOff {
		s.HSTSMaxAge = guard.DefaultHSTSMaxAge
		if g.HTTP != nil && g.HTTP.HSTSMaxAge != 0 {
			s.HSTSMaxAge = max(g.HTTP.HSTSMaxAge, 0)
		}
	}
	if s.Explicit, err = envConfig.explicitNames(dir, s.Credential); err != nil {
		return nil, err
	}
	return s, nil
}

// choose checks that *value, the JSON value of option, is one of choices;
// an empty value becomes the first, the default.
func choose(option string, value *string, choices ...string) error {
	switch {
	case *value == "":
		*value = choices[0]
	case !slices.Contains(choices, *value):
		return fmt.Errorf("%s %q is not one of %s", option, *value, strings.Join(choices, ", "))
	}
	return nil
}

// countLimits are the largest values count options take: a pool starts
// all its workers at once, and every thread or event-loop channel holds a
// channel and its buffers. workers follows the admin API's scale route.
var countLimits = map[string]int{
	"workers": 1024, "min_workers": 1024, "max_workers": 1024,
	"threads": 1024, "max_concurrency": engine.MaxChannels, "max_queue": 1 << 20, "max_queue_per_client": 1 << 20, "max_websockets": 1 << 24, "max_streams": 1 << 24, "max_open_per_client": 1 << 24,
}

// maxRequestsLimit bounds max_requests and max_requests_jitter: a
// trillion requests, far past any worker's life.
const maxRequestsLimit int64 = 1_000_000_000_000

// checkCount is the one rule for a count option set to n (0 means "the
// default" in JSON and is not passed here): a whole number from 1 to its
// limit. The Caddyfile parser and JSON provisioning both use it.
func checkCount(option string, n int) error {
	if n < 1 {
		return fmt.Errorf("%s must be a whole number of at least 1, got %d", option, n)
	}
	if limit, ok := countLimits[option]; ok && n > limit {
		hint := "every worker starts at once; a few per CPU core is usual"
		switch option {
		case "threads":
			hint = "each thread holds a channel to Caddy; use more workers instead"
		case "max_concurrency":
			hint = "each request or WebSocket a worker runs at once holds a channel to Caddy; use more workers instead"
		case "max_queue":
			hint = "requests beyond it get 503 with Retry-After"
		case "max_queue_per_client":
			hint = "it may be at most max_queue"
		}
		return fmt.Errorf("%s %d is more than the %d allowed (%s)", option, n, limit, hint)
	}
	return nil
}

// parseSize reads a size such as 512MiB, 1.5GB or 100000 as a whole
// number of bytes: the Caddyfile parser's one rule for sizes. A value
// that is not a whole number of bytes (1.5, or 0.3KB) is refused rather
// than rounded.
func parseSize(option, v string) (int64, error) {
	i := strings.IndexFunc(v, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	number, unit := v, "B"
	if i >= 0 {
		number, unit = v[:i], strings.TrimSpace(v[i:])
	}
	f, ferr := strconv.ParseFloat(number, 64)
	mult, uerr := humanize.ParseBytes("1" + unit)
	if number == "" || ferr != nil || uerr != nil || f <= 0 {
		return 0, fmt.Errorf("%s %q is not a size; write it like 10MB, 512KiB or 1GB", option, v)
	}
	n := f * float64(mult)
	if n != math.Trunc(n) || n > math.MaxInt64/2 {
		return 0, fmt.Errorf("%s %q is not a whole number of bytes; write a size like 512MiB or 1.5GiB", option, v)
	}
	return int64(n), nil
}

// checkFields holds the rules between fields that need no file system:
// the Caddyfile parser runs it at the end of the block (so its errors
// carry file:line) and resolve runs it for JSON configs.
func (c PoolConfig) checkFields() error {
	for _, f := range []struct {
		name string
		n    int
	}{{"workers", c.Workers}, {"max_workers", c.MaxWorkers}, {"threads", c.Threads}, {"max_queue", c.MaxQueue}, {"max_queue_per_client", c.MaxQueuePerClient}} {
		if f.n != 0 {
			if err := checkCount(f.name, f.n); err != nil {
				return err
			}
		}
	}
	switch {
	case c.MaxQueuePerClient > cmp.Or(c.MaxQueue, DefaultMaxQueue):
		return fmt.Errorf("max_queue_per_client (%d) is above max_queue (%d): one client may take at most the whole queue; raise max_queue or lower max_queue_per_client", c.MaxQueuePerClient, cmp.Or(c.MaxQueue, DefaultMaxQueue))
	case c.MaxWorkers > 0 && c.MaxWorkers < c.Workers:
		return fmt.Errorf("max_workers (%d) is below workers (%d); write `workers MIN MAX` with MIN ≤ MAX", c.MaxWorkers, c.Workers)
	case c.MaxRequests < 0 || c.MaxRequestsJitter < 0:
		return fmt.Errorf("max_requests and max_requests_jitter must be positive")
	case int64(c.MaxRequests) > maxRequestsLimit || int64(c.MaxRequestsJitter) > maxRequestsLimit:
		// (past it the limit plus its jitter overflows: a worker recycled
		// at once, or a panic drawing the jitter)
		return fmt.Errorf("max_requests and max_requests_jitter may be at most %d", maxRequestsLimit)
	case c.MaxRequestsJitter > 0 && c.MaxRequests == 0:
		return fmt.Errorf("max_requests_jitter needs max_requests")
	case c.MaxMemory < 0:
		return fmt.Errorf("max_memory must be positive")
	case c.MaxMemory > 0 && c.MaxMemory < 1<<20:
		return fmt.Errorf("max_memory %d is in bytes, and a Python worker holds tens of MiB: write it with a unit, like 512MiB", c.MaxMemory)
	case c.Python != "" && c.Venv != "":
		return fmt.Errorf("python and venv are both set; use venv alone (it runs the venv's bin/python)")
	}
	for i, cmd := range c.BeforeStart {
		if len(cmd) == 0 || strings.TrimSpace(cmd[0]) == "" {
			return fmt.Errorf("before_start command %d is empty: it needs a program, like `before_start python manage.py migrate`", i+1)
		}
		if err := supervisor.CheckCommand(fmt.Sprintf("before_start command %d", i+1), cmd); err != nil {
			return err
		}
	}
	return nil
}

func (s *poolSpec) applyCounts() error {
	for _, f := range []struct {
		name  string
		value *int
		def   int
	}{
		{"workers", &s.Workers, runtime.NumCPU()},
		{"threads", &s.Threads, 1},
		{"max_queue", &s.MaxQueue, DefaultMaxQueue},
		{"max_queue_per_client", &s.MaxQueuePerClient, 0}, // (below: from max_queue)
	} {
		if *f.value < 0 {
			return fmt.Errorf("%s must be a positive number, got %d", f.name, *f.value)
		}
		if *f.value == 0 {
			*f.value = f.def
		}
	}
	if s.MaxQueuePerClient == 0 {
		s.MaxQueuePerClient = max(1, s.MaxQueue/4)
	}
	for _, f := range []struct {
		name  string
		value *time.Duration
		def   time.Duration
	}{
		{"queue_timeout", &s.QueueTimeout, DefaultQueueTimeout},
		{"start_timeout", &s.StartTimeout, DefaultStartTimeout},
		{"stop_timeout", &s.StopTimeout, DefaultStopTimeout},
		{"idle_timeout", &s.IdleTimeout, DefaultIdleTimeout},
	} {
		if *f.value < 0 {
			return fmt.Errorf("%s must be a positive duration, got %s", f.name, *f.value)
		}
		if *f.value == 0 {
			*f.value = f.def
		}
	}
	return nil
}

// checkRecycling validates what checkFields cannot: max_workers against
// the defaulted workers (the number of CPUs when unset), and max_lifetime.
func (s *poolSpec) checkRecycling() error {
	switch {
	case s.MaxWorkers > 0 && s.MaxWorkers < s.Workers:
		return fmt.Errorf("max_workers (%d) is below workers (%d); write `workers MIN MAX` with MIN ≤ MAX", s.MaxWorkers, s.Workers)
	case s.MaxLifetime < 0:
		return fmt.Errorf("max_lifetime must be a positive duration")
	}
	if most := max(s.Workers, s.MaxWorkers); most*max(s.Threads, 1) > engine.MaxChannels {
		workers, per := "workers", "threads"
		if s.MaxWorkers > s.Workers {
			workers = "max_workers"
		}
		if s.ASGI() {
			per = "max_concurrency"
		}
		return fmt.Errorf("%s × %s is %d × %d = %d channels, more than the %d a pool may have (each is a socket pair Caddy holds open, made when its worker starts); lower one of them", workers, per, most, s.Threads, most*s.Threads, engine.MaxChannels)
	}
	if s.Watch != nil && len(s.Watch) == 0 {
		s.Watch = []string{"**/*.py"}
	}
	if err := checkWatch(s.Watch); err != nil {
		return err
	}
	return nil
}

func absDir(dir string) (string, error) {
	if dir == "" {
		dir = "."
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("dir %q: %w", dir, err)
	}
	info, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("dir %q: %w; set `dir` to the directory holding your app", dir, err)
	}
	if !info.IsDir() {
		return "", fmt.Errorf("dir %q is not a directory", dir)
	}
	return abs, nil
}

// environment builds the workers' environment (supervisor.Env): the clean
// base and env_inherit, then the venv's activation variables, then
// env_file, then env.
func (c PoolConfig) environment(dir string, cred *syscall.Credential) ([]string, error) {
	envFile := c.EnvFile
	if envFile != "" && !filepath.IsAbs(envFile) {
		envFile = filepath.Join(dir, envFile)
	}
	env, err := supervisor.Env{Inherit: c.EnvInherit, Credential: cred, File: envFile, Vars: c.Env, Adjust: func(vars map[string]string) {
		if c.Venv != "" {
			venv := c.Venv
			if !filepath.IsAbs(venv) {
				venv = filepath.Join(dir, venv)
			}
			vars["VIRTUAL_ENV"] = venv
			vars["PATH"] = filepath.Join(venv, "bin") + string(os.PathListSeparator) + vars["PATH"]
			delete(vars, "PYTHONHOME")
		}
		if c.Watch != nil {
			// Python trusts a cached .pyc whose source has the same size
			// and modification second: an edit within the second of the
			// last would restart the workers into the old code
			vars["PYTHONDONTWRITEBYTECODE"] = "1"
		}
	}}.Build()
	if err != nil {
		return nil, err
	}
	return append(env, "PYTHONUNBUFFERED=1"), nil
}

// reresolveAs rebuilds what resolve derived from the account (the
// environment, env_file read with the account's rights, and the names it
// sets) for spec.Credential, the account a command beside the config runs
// as (nil: this process's own), which may differ from the block's.
func (c PoolConfig) reresolveAs(s *poolSpec) error {
	env, err := c.environment(s.Dir, s.Credential)
	if err != nil {
		return err
	}
	explicit, err := c.explicitNames(s.Dir, s.Credential)
	if err != nil {
		return err
	}
	s.Env, s.Explicit = env, explicit
	return nil
}

// explicitNames lists the variables env, env_file and env_inherit set;
// the env_file is read as cred, the account the workers run as.
func (c PoolConfig) explicitNames(dir string, cred *syscall.Credential) ([]string, error) {
	names := supervisor.Inherited(c.EnvInherit)
	for k := range c.Env {
		names = append(names, k)
	}
	if c.EnvFile != "" {
		path := c.EnvFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		vars, err := supervisor.ReadEnvFile(path, cred)
		if err != nil {
			return nil, err
		}
		for k := range vars {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return names, nil
}

// interpreter resolves the Python executable to an absolute path.
func (c PoolConfig) interpreter(dir string, env []string) (string, error) {
	python := c.Python
	switch {
	case python != "" && c.Venv != "":
		return "", fmt.Errorf("python and venv are both set; use venv alone (it runs the venv's bin/python)")
	case c.Venv != "":
		venv := c.Venv
		if !filepath.IsAbs(venv) {
			venv = filepath.Join(dir, venv)
		}
		python = filepath.Join(venv, "bin", "python")
		if _, err := os.Stat(python); err != nil {
			return "", fmt.Errorf("venv %q has no bin/python (%v); create it with `python3 -m venv %s`", c.Venv, err, c.Venv)
		}
		return python, nil
	case python == "":
		python = DefaultPython
	}
	if strings.ContainsRune(python, '/') {
		if !filepath.IsAbs(python) {
			python = filepath.Join(dir, python)
		}
		if _, err := os.Stat(python); err != nil {
			return "", fmt.Errorf("python interpreter %q: %w", c.Python, err)
		}
		return python, nil
	}
	path, err := exec.LookPath(python)
	if err != nil {
		return "", fmt.Errorf("python interpreter %q not found in PATH; install it (apt-get install python3) or set `python /path/to/python3`", python)
	}
	return path, nil
}

// checkWatch refuses a watch glob that is malformed (it would never
// match, silently): the Caddyfile parser and JSON configs both use it.
func checkWatch(globs []string) error {
	for _, g := range globs {
		if _, err := filepath.Match(strings.TrimPrefix(g, "**/"), "x"); err != nil {
			return fmt.Errorf("watch glob %q is malformed: %v", g, err)
		}
	}
	return nil
}
