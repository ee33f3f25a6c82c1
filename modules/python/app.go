package python

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/redact"
	"github.com/hearth-dev/hearth/modules/internal/termsafe"
	"github.com/hearth-dev/hearth/modules/python/engine"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// App is one Python app as a config describes it: the engine's pool that
// serves it, and what Hearth does around the pool's start — the app's
// production settings, the pre-launch checks, before_start — with what it
// knows of the app's place in the config (its site, the config's
// storage). The hearth app keeps Apps across reloads (a hearth.Pool,
// keyed by the spec's hash), and every handler of the app serves through
// its pool.
type App struct {
	spec   *poolSpec
	pool   *engine.Pool
	logger *zap.Logger

	mu          sync.Mutex
	findings    []Finding         // from the pre-launch checks
	site        hearth.Site       // where the app is served
	overlay     *overlayReport    // what `settings overlay` set, from the last checks
	settingsEnv []string          // from `settings auto` or `settings overlay` (appEnv)
	storage     certmagic.Storage // the config's, for `settings auto`
	autoHosts   []string          // the ALLOWED_HOSTS `settings auto` gives the app
	runtimePath string            // the runtime's program, once written (the overlay is beside it)
	keyUse      keyUse            // who asks for the app's stored secret key (keyholder.go)
	// throwawayWhy: a check gave the app's code a throwaway key, not its
	// stored one, for this reason
	throwawayWhy error
	// keysOwner: a command as root handles the stored keys as this account,
	// the data directory's owner (nil: as it is; always for Caddy)
	keysOwner *dataOwner

	appHosts atomic.Pointer[guard.AppHosts] // the hosts the app allows, once known
	mounts   atomic.Pointer[[]string]       // the prefixes SCRIPT_NAME may take (Site.Mounts)
}

// newApp makes the app of spec, with a pool that starts nothing yet, for
// Caddy to run (keyForApp) or for a command beside a config.
func newApp(spec *poolSpec, logger *zap.Logger, use keyUse) *App {
	var keysOwner *dataOwner
	if use != keyForApp {
		if keysOwner = dataDirOwner(); keysOwner != nil {
			// a command as root beside another account's data directory:
			// the runtime its workers import must not be that account's
			spec.RuntimeDir = ""
		}
	}
	pool := engine.New(spec.Options, logger)
	return &App{spec: spec, pool: pool, logger: pool.Logger(), keyUse: use, keysOwner: keysOwner}
}

// Name is the app name.
func (a *App) Name() string { return a.spec.Name }

// AppDir is the app's directory (hearth.Placed): two apps of one name in
// different directories are refused.
func (a *App) AppDir() string { return a.spec.Dir }

// Start prepares the app (its settings, the pre-launch checks, the
// before_start commands), then starts its workers and waits until all are
// ready. It runs once; later calls return the first result.
func (a *App) Start() error {
	return a.pool.Start(func() ([]string, error) {
		path, err := a.pool.Runtime()
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		a.runtimePath = path
		a.mu.Unlock()
		if err := a.prepareSettings(); err != nil {
			return nil, err
		}
		if err := a.runGuardChecks(); err != nil {
			return nil, err
		}
		if err := a.runBeforeStart(); err != nil {
			return nil, err
		}
		return a.appEnv(), nil
	})
}

// Refuse fails an app that will never start (its config was refused): a
// later Start returns err, and requests waiting for it fail at once.
func (a *App) Refuse(err error) { a.pool.Refuse(err) }

// Stopped is closed once the app's pool has stopped every worker: Hearth
// holds the app's instance lock until then.
func (a *App) Stopped() <-chan struct{} { return a.pool.Stopped() }

// Destruct stops the app once no loaded config uses it. On a reload the
// old config's requests may still be running or queued: they are served
// (for up to stop_timeout) before the workers are stopped, in the
// background so the reload is not held up. When Caddy exits, its servers
// have already finished their requests and the pool stops right away.
func (a *App) Destruct() error {
	a.pool.Stop(!caddy.Exiting())
	return nil
}

// Running reports whether the app serves the current config.
func (a *App) Running() bool { return a.pool.Running() }

// Restart replaces every worker, each replacement ready before its
// predecessor stops taking requests (see engine.Pool.Restart).
func (a *App) Restart() error { return a.pool.Restart() }

// Scale sets the number of workers (see engine.Pool.Scale).
func (a *App) Scale(n int) error { return a.pool.Scale(n) }

// BusyTime is how long the app's workers have had requests or been starting (see
// engine.Pool.BusyTime): Caddy is lent a second CPU only while they are
// idle (hearth.BusyTimer).
func (a *App) BusyTime() time.Duration { return a.pool.BusyTime() }

// appStatus is one app in GET /hearth/apps: its pool's state, then the
// guard's.
type appStatus struct {
	engine.Status
	Guard    string    `json:"guard"`
	Findings []Finding `json:"findings"`
}

// Status reports the app's state for the admin API.
func (a *App) Status() any {
	st := appStatus{Status: a.pool.Status(), Guard: a.spec.GuardMode}
	a.mu.Lock()
	st.Findings = append([]Finding{}, a.findings...)
	a.mu.Unlock()
	return st
}

var _ hearth.Pool = (*App)(nil)

// runBeforeStart runs the before_start commands in the app's environment.
func (a *App) runBeforeStart() error {
	for i, argv := range a.spec.BeforeStart {
		if err := a.runCommand(i+1, argv); err != nil {
			return err
		}
	}
	return nil
}

// runCommand runs the nth before_start command, argv. Its arguments are
// never logged nor put in an error (which the admin API shows): they may
// carry a password, from the Caddyfile or a {file.…} placeholder; its
// output is, with what looks like a credential redacted.
func (a *App) runCommand(n int, argv []string) error {
	if len(argv) == 0 || strings.TrimSpace(argv[0]) == "" { // refused at provision (checkFields); never a panic here
		return fmt.Errorf("before_start has an empty command: it needs a program, like `before_start python manage.py migrate`")
	}
	program := argv[0]
	if program == "python" || program == "python3" {
		program = a.spec.Python
	}
	ctx, cancel := context.WithTimeout(a.pool.Context(), beforeStartTimeout)
	defer cancel()
	out, err := supervisor.Run(ctx, supervisor.Command{
		Path: program, Args: argv[1:], Dir: a.spec.Dir,
		Env:        a.appEnv(),
		Credential: a.spec.Credential,
		Umask:      a.spec.Umask,
	}, a.logger)
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("still running after %s", beforeStartTimeout)
	}
	what := fmt.Sprintf("before_start %d of %d (%s, with %d arguments not shown)", n, len(a.spec.BeforeStart), argv[0], len(argv)-1)
	output := redact.Text(strings.TrimRight(string(out), "\n"))
	if err != nil {
		return fmt.Errorf("%s failed (%v):\n%s", what, err, output)
	}
	a.logger.Info("before_start finished", zap.Int("command", n), zap.String("program", argv[0]), zap.String("output", termsafe.Lines(output)))
	return nil
}

// beforeStartTimeout bounds each before_start command.
const beforeStartTimeout = 10 * time.Minute

// SetSite records where the app is served (hearth.SiteAware).
func (a *App) SetSite(site hearth.Site) {
	a.mu.Lock()
	a.site = site
	a.mu.Unlock()
	mounts := slices.Clone(site.Mounts)
	a.mounts.Store(&mounts)
}

// SettingsFromSite reports whether the app made settings from its site
// when it started (hearth.SettingsFromSite): `settings auto` or `overlay`.
func (a *App) SettingsFromSite() bool {
	if a.spec.Settings != SettingsAuto && a.spec.Settings != SettingsOverlay {
		return false
	}
	// (what env or env_file set explicitly is the user's, not the site's)
	return !slices.Contains(a.spec.Explicit, "ALLOWED_HOSTS") || !slices.Contains(a.spec.Explicit, "CSRF_TRUSTED_ORIGINS")
}

// Site is where the app is served, as SetSite last recorded it.
func (a *App) Site() hearth.Site {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.site
}

// Mounts are the path prefixes the config strips before the app's
// handlers: the values SCRIPT_NAME may take.
func (a *App) Mounts() []string {
	if m := a.mounts.Load(); m != nil {
		return *m
	}
	return nil
}

// SetStorage gives the app the config's storage (hearth.StorageAware),
// where `settings auto` keeps the app's secret key.
func (a *App) SetStorage(storage certmagic.Storage) {
	a.mu.Lock()
	a.storage = storage
	a.mu.Unlock()
}

// Storage is the storage SetStorage last gave the app.
func (a *App) Storage() certmagic.Storage {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.storage
}

// AppHosts returns the hosts the app allows, once the pre-launch checks
// have read them (nil before, or when it allows any host): the HTTP guard
// of a site without `hosts` answers 421 to the others.
func (a *App) AppHosts() *guard.AppHosts { return a.appHosts.Load() }

// Environment is the app's environment for a service or job that runs in
// it (hearth.AppEnvironment): its interpreter, directory, environment
// (what `settings` sets included), account and umask. It is known once the
// app has started.
func (a *App) Environment() (supervisor.Command, error) {
	if !a.pool.Running() {
		return supervisor.Command{}, fmt.Errorf("app %s is not running", a.spec.Name)
	}
	return supervisor.Command{Path: a.spec.Python, Dir: a.spec.Dir, Env: a.appEnv(), Credential: a.spec.Credential, Umask: a.spec.Umask}, nil
}

var _ hearth.AppEnvironment = (*App)(nil)

// SettingsModule is the app's Django settings module (hearth.DjangoProject):
// the one a backup of one of its DATABASES loads when the app's environment
// does not name one.
func (a *App) SettingsModule() (string, error) { return projectSettingsModule(a.spec) }

var _ hearth.DjangoProject = (*App)(nil)

// Pause holds the app's new requests in its queue until Resume, once none
// runs (hearth.Pausable: a restore of its database).
func (a *App) Pause(ctx context.Context) error { return a.pool.Pause(ctx) }

// Starting reports whether the pool is starting (before_start included).
func (a *App) Starting() bool { return a.pool.Starting() }

// Resume ends a Pause.
func (a *App) Resume() { a.pool.Resume() }

var _ hearth.Pausable = (*App)(nil)
