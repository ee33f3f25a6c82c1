// Package hearth is the "hearth" Caddy app: it owns every worker pool across
// config reloads and serves Hearth's routes on Caddy's admin API.
//
// Pools are shared through a caddy.UsagePool keyed by a hash of the pool's
// spec: a reload whose pool spec did not change gets the running pool back
// (same workers), a changed spec gets a new pool that the new config's Start
// launches and waits for before the old config is stopped and its pool,
// no longer referenced, drains and stops.
package hearth

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/internal/termsafe"
	"github.com/hearth-dev/hearth/modules/job"
	"github.com/hearth-dev/hearth/modules/service"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

func init() {
	caddy.RegisterModule(App{})
}

// Pool is a long-lived set of supervised processes serving one app.
type Pool interface {
	caddy.Destructor
	// Start launches the pool's processes and returns once they are ready,
	// or with an error saying why they cannot start. Starting a pool that
	// already runs does nothing.
	Start() error
	// Name is the app name shown in status and logs.
	Name() string
	// Status is a JSON-serializable snapshot of the pool.
	Status() any
	// Running reports whether the pool serves the current config's
	// requests (not starting, draining or stopped).
	Running() bool
	// Restart replaces every worker without dropping a request, loading
	// the app's code anew.
	Restart() error
	// Scale sets the number of workers.
	Scale(workers int) error
}

// pools holds every pool of every loaded config, reference-counted by the
// handlers that use them.
var pools = caddy.NewUsagePool()

// App is the "hearth" app. It starts the pools used by the current config.
// It needs no configuration: handlers that use pools load it implicitly.
type App struct {
	// Guard is the default guard mode of apps whose blocks do not set one:
	// enforce, warn or off. Default: enforce.
	Guard string `json:"guard,omitempty"`

	// Dashboard, if set, is the address of a read-only status page (every
	// service, its pools and workers, restarts, guard findings and DDNS),
	// refreshing itself, with no external assets. A bare port listens on
	// 127.0.0.1 only.
	Dashboard string `json:"dashboard,omitempty"`

	// DashboardHosts are the names, besides localhost, 127.0.0.1, [::1]
	// and the host of Dashboard's address, that the dashboard answers to
	// in a request's Host header; other names get 403 (this stops DNS
	// rebinding). Ports in a Host header are ignored.
	DashboardHosts []string `json:"dashboard_hosts,omitempty"`

	// CaddyCPUs is how many CPUs Caddy's own Go code may use at once
	// (GOMAXPROCS) while the config runs pools: "auto" leaves half of the
	// CPUs to the worker processes (Caddy uses at most half, at least one),
	// "all" lets Go use every CPU, a number sets it. On a machine that also
	// runs the Python workers, Go's scheduler otherwise keeps waking threads
	// on the CPUs the workers need. The GOMAXPROCS environment variable, if
	// set, takes precedence. Default: auto.
	CaddyCPUs string `json:"caddy_cpus,omitempty"`

	// CaddyGCFloor is how large Caddy's Go heap may grow before Go collects
	// garbage, while the config runs pools: "auto", a size, or "off" for
	// Go's default (collect when the heap has doubled since the last
	// collection). Serving a Python app, Caddy's live heap is a few
	// megabytes and each request allocates a few kilobytes, so by default
	// Go would collect dozens of times a second; the floor makes that a
	// few times, at the cost of about its size in memory. "auto" is a 128th
	// of the memory Caddy may use (its Go memory limit, which Caddy sets
	// from the container's or the machine's memory), at most 64MiB: ~14MiB
	// on a 2 GiB board, 64MiB from ~9 GiB. Above
	// the floor the heap grows as Go's default allows, and the memory
	// limit still bounds it. The GOGC environment variable, if set, takes
	// precedence. Default: auto.
	CaddyGCFloor string `json:"caddy_gc_floor,omitempty"`

	// MaxProcesses bounds what a process of an app's account may start: a
	// process, or a thread, started while that account already has this
	// many (every process and thread of the account counted, Hearth's or
	// not) fails with EAGAIN, and the app's code cannot raise it (the
	// kernel's RLIMIT_NPROC, soft and hard, set in the process once it
	// runs as the account). It holds for every process Hearth starts as an
	// account other than Caddy's own and root: the workers and the preload
	// fork server, before_start, services, jobs, a backup with app, and
	// process upstreams; a process of Caddy's own account could end Caddy
	// anyway, and its count would include Caddy's threads. So a fork bomb
	// in an app (a flaw, or an attacker in it) stops there, instead of
	// taking the machine's last process ids and Caddy's ability to start a
	// thread. Apps that share an account share the count; a process is not
	// started while its account has more than this many. A number of at
	// least 128, or "off". Processes already running keep the limit they
	// started with until they restart. Default: 1024.
	MaxProcesses string `json:"max_processes,omitempty"`

	// Services are long-running commands kept running beside the apps (a
	// Celery worker, redis-server …): see the service package. Each needs
	// a unique name, which no app of the config has.
	Services []*service.Config `json:"services,omitempty"`

	// Jobs are commands run on a schedule (see the job package); each
	// needs a unique name.
	Jobs []*job.Config `json:"jobs,omitempty"`

	// Backups are SQLite databases copied at an interval (see
	// job.BackupConfig); each needs a unique name.
	Backups []*job.BackupConfig `json:"backups,omitempty"`

	dashboard *dashboard
	services  *serviceView  // the status's view of this config's services (tellSites)
	certs     *certSource   // where the status reads this config's certificates (publishCertificates)
	replaced  *App          // the app publish replaced as the status's
	undo      []func()      // puts back what tell changed in pools the running config shares
	stopped   uint32        // 1 once Stop (or a failed Start) withdrew it (atomic)
	ddns      DDNSReporter  // the config's ddns app (nil without one), found at Start
	cpus      *cpuSetting   // applyCaddyCPUs's, which Stop undoes (nil: not applied)
	gcFloor   *floorSetting // applyCaddyGCFloor's, which Stop undoes (nil: not applied)
	gcPolling bool          // applyGCPoll counted this config: Stop releases it

	used        []Pool // provisioning of one config is sequential: no lock needed
	keys        map[Pool]string
	serviceKeys []string // the services this config took at Start (Cleanup gives them back)
	jobKeys     []string // the jobs it took
	// stoppedServices are previous versions of services this config
	// stopped to start their successors (servicegroups.go)
	stoppedServices []*service.Group
	ctx             caddy.Context
	logger          *zap.Logger

	certLog *certLog // certificate attempts (certs.go)
	// certRedact is this config's certRedactor once it has started: what
	// its events' errors are redacted with as they are recorded
	certRedact *atomic.Pointer[func(string) string]
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "hearth",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets up the app.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx, a.logger = ctx, ctx.Logger()
	switch a.Guard { // (the Caddyfile checks it where written; JSON here)
	case "", "enforce", "warn", "off":
	default:
		return fmt.Errorf("hearth: guard %q is not one of enforce, warn, off", a.Guard)
	}
	if a.Dashboard != "" { // (`caddy validate` says so too, not only a start)
		if _, _, err := dashboardAddress(a.Dashboard); err != nil {
			return err
		}
	}
	recordAdminEndpoint(ctx)
	serveFilesThroughLinkFS(ctx, a.logger)
	a.keys = map[Pool]string{}
	if err := a.watchCertificates(ctx); err != nil {
		return err
	}
	if _, err := parseCaddyGCFloor(a.CaddyGCFloor); err != nil {
		return err
	}
	if _, err := parseMaxProcesses(a.MaxProcesses); err != nil {
		return err
	}
	if err := checkNamed("services", a.Services, "an empty service; each needs a name and a command",
		(*service.Config).Check, func(c *service.Config) string { return c.Name }); err != nil {
		return err
	}
	if err := checkNamed("jobs", a.Jobs, "an empty job; each needs a name, a command and a schedule",
		(*job.Config).Check, func(c *job.Config) string { return c.Name }); err != nil {
		return err
	}
	if err := checkNamed("backups", a.Backups, "an empty backup; each needs a name, a database or path, and `to`",
		(*job.BackupConfig).Check, func(c *job.BackupConfig) string { return c.Name }); err != nil {
		return err
	}
	if err := RegisterCollector(ctx.GetMetricsRegistry(), serviceCollector{}); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	if err := RegisterCollector(ctx.GetMetricsRegistry(), jobCollector{}); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	return parseCaddyCPUs(a.CaddyCPUs)
}

// AppName is the name an app goes by in status, logs, metrics and the
// `caddy hearth` commands: its `name` if set; else, for a wsgi or asgi app
// (kind "python"), the first component of its module (mysite for
// mysite.wsgi:application); for a process upstream (kind "process"), the
// base name of its program. The one rule, used by the handlers and by the
// commands that read a config.
func AppName(name, kind, source string) string {
	if name != "" {
		return name
	}
	if kind == "process" {
		return filepath.Base(source)
	}
	name, _, _ = strings.Cut(source, ":")
	name, _, _ = strings.Cut(name, ".")
	return name
}

// PoolKey is the key a pool of kind ("python", "process") with this
// resolved spec is kept under across reloads: the same spec, the same key,
// the same running pool. spec must encode to JSON (its exported fields are
// what counts).
func PoolKey(kind string, spec any) string {
	b, err := json.Marshal(spec)
	if err != nil { // a spec that cannot be encoded is never shared
		b = fmt.Appendf(nil, "%p", spec)
	}
	sum := sha256.Sum256(b)
	return kind + ":" + hex.EncodeToString(sum[:])
}

// UsePool returns the pool registered under key, creating it with newPool
// when no loaded config uses it yet, and records it as used by this config.
// Every successful call must be paired with ReleasePool(key) at Cleanup.
func (a *App) UsePool(key string, newPool func() (Pool, error)) (Pool, error) {
	val, loaded, err := pools.LoadOrNew(key, func() (caddy.Destructor, error) { return newPool() })
	if err != nil {
		return nil, err
	}
	p := val.(Pool)
	if err := a.checkName(p); err != nil {
		_, _ = pools.Delete(key)
		return nil, err
	}
	if loaded && !slices.Contains(a.used, p) {
		// a reload that keeps the app: say so, since `caddy reload` is not
		// how changed code gets loaded
		a.logger.Info("app kept running: its block did not change, so its workers keep the code they loaded; to load changed code: caddy hearth restart "+p.Name(),
			zap.String("app", p.Name()))
	}
	a.used = append(a.used, p)
	a.keys[p] = key
	return p, nil
}

// Placed is a pool of an app that lives in a directory.
type Placed interface {
	// AppDir is the app's directory.
	AppDir() string
}

// checkName refuses a pool whose name another app of this config already
// has, unless both are the same app's (one directory, used by two blocks):
// Hearth keeps the secret key of `settings auto` per name and directory,
// but status, logs, metrics, the admin API's restart and scale and the
// `caddy hearth` commands tell apps apart by name alone.
func (a *App) checkName(p Pool) error {
	placed, isPlaced := p.(Placed)
	for _, q := range a.used {
		if q == p || q.Name() != p.Name() {
			continue
		}
		other, otherPlaced := q.(Placed)
		switch {
		case isPlaced && otherPlaced && other.AppDir() == placed.AppDir():
			continue // the same app
		case isPlaced && otherPlaced:
			return fmt.Errorf("two apps are named %q: one in %s, the other in %s; an app's name must be its own (status, logs, metrics, `caddy hearth` commands and the secret key of `settings auto` go by it): give one of them another name, with `name <another>` in its block", p.Name(), other.AppDir(), placed.AppDir())
		}
		return fmt.Errorf("two apps are named %q; an app's name must be its own (status, logs, metrics, the admin API's restart and scale and `caddy hearth` commands go by it): give one of them another name, with `name <another>` in its block (a process upstream is named after its program unless it names itself)", p.Name())
	}
	return nil
}

// ReleasePool drops one reference to the pool under key; the last release
// drains and stops it.
func ReleasePool(key string) {
	deleted, err := pools.Delete(key)
	if err != nil {
		caddy.Log().Named("hearth").Error("stopping pool", zap.Error(err))
	}
	if deleted {
		unlockPool(key) // once the pool has stopped
	}
}

// Start launches every pool this config uses that is not running yet, in
// parallel, and fails (refusing the config) if any cannot start.
func (a *App) Start() error {
	used := a.used
	// what would refuse the config once its pools started is said before
	// any starts (a new pool's before_start runs its migrations); then one
	// instance per app and machine (instancelock.go): before anything of a
	// new pool runs, before_start included
	err := a.checkReferences()
	if err == nil {
		err = lockPools(used, a.keys)
	}
	if err != nil {
		for _, p := range used {
			if r, ok := p.(interface{ Refuse(error) }); ok {
				r.Refuse(err) // requests waiting for it fail at once
			}
		}
		return err
	}
	if listen, enabled := AdminEndpoint(); adminOpenToEveryAccount(listen, enabled, supervisor.CanSwitchUsers()) != "" {
		a.logger.Warn(adminOpenToEveryAccount(listen, enabled, true),
			zap.String("fix", "put the admin API on a unix socket in a directory only Caddy's user can enter (the unit `caddy hearth systemd` writes sets CADDY_ADMIN=unix//run/caddy/admin.sock|0600 in RuntimeDirectory=caddy, mode 0700), or turn it off with `admin off`"))
	}
	a.ddns = findDDNS(a.ctx)
	a.tellSites()
	a.publishCertificates()
	a.publish()
	if a.Dashboard != "" {
		na, host, err := dashboardAddress(a.Dashboard)
		if err != nil {
			a.withdraw() // (Caddy stops only the apps that started)
			return err
		}
		var httpApp *caddyhttp.App
		if h, err := a.ctx.AppIfConfigured("http"); err == nil {
			httpApp = h.(*caddyhttp.App)
		}
		adminListen, adminOn := AdminEndpoint()
		if err := dashboardClash(na, httpApp, adminListen, adminOn); err != nil {
			a.withdraw()
			return err
		}
		d, err := startDashboard(a.ctx, na, host, a.DashboardHosts, a.logger)
		if err != nil {
			a.withdraw()
			return err
		}
		a.dashboard = d
	}
	a.applyMaxProcesses()
	err = startPools(used, a.logger)
	if err == nil {
		err = a.startServices() // after the apps: a service may run in one's environment
	}
	if err == nil {
		err = a.startJobs()
	}
	if err != nil {
		a.releaseMaxProcesses() // the running config's stays
		if a.dashboard != nil {
			a.dashboard.stop()
		}
		a.withdraw()
		return err
	}
	keepConnectionsAcrossReloads(a.logger)
	a.cpus = applyCaddyCPUs(a.CaddyCPUs, len(used), a.logger)
	a.gcFloor = applyCaddyGCFloor(a.CaddyGCFloor, len(used), a.logger)
	a.gcPolling = applyGCPoll(len(used), a.logger)
	return nil
}

// startPools starts pools in parallel and joins their errors; a panic in
// a pool's Start is that pool's error (logged with its stack): the config
// is refused, Caddy and its running config stay.
func startPools(pools []Pool, logger *zap.Logger) error {
	errs := make([]error, len(pools))
	var wg sync.WaitGroup
	for i, p := range pools {
		if _, busy := restoring.Load("app " + p.Name()); busy && !p.Running() {
			// its before_start (the migrations) would run on the database
			// being replaced; the restore refuses a pool that is starting,
			// and this a restore that has begun: one of the two waits
			errs[i] = fmt.Errorf("app %q: a restore of its database is in progress; load the config again once it has ended (GET /hearth/backups shows it)", p.Name())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := panics.Call(logger, fmt.Sprintf("starting app %q", p.Name()), p.Start); err != nil {
				errs[i] = termsafe.Error(fmt.Errorf("app %q: %w", p.Name(), err))
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// tellSites tells each pool of this config where it is served, before it
// starts (its settings and checks depend on the site's hosts).
func (a *App) tellSites() {
	httpApp, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	sites := discoverSites(httpApp.(*caddyhttp.App))
	a.buildServices(httpApp.(*caddyhttp.App))
	for _, p := range a.used {
		a.tell(p, sites[a.keys[p]], a.ctx.Storage())
	}
}

// tell gives pool p its site (nil: none found) and the config's storage.
// A pool that runs already serves the running config too (a reload keeps
// it): what it had is put back if this config is refused (withdraw).
func (a *App) tell(p Pool, site *Site, storage certmagic.Storage) {
	kept := p.Running()
	if aware, ok := p.(StorageAware); ok {
		if kept {
			before := aware.Storage()
			a.undo = append(a.undo, func() { aware.SetStorage(before) })
		}
		aware.SetStorage(storage)
	}
	if aware, ok := p.(SiteAware); ok && site != nil {
		if kept {
			before := aware.Site()
			a.undo = append(a.undo, func() { aware.SetSite(before) })
			if s, ok := p.(SettingsFromSite); ok && s.SettingsFromSite() &&
				(!sameSet(before.Hosts, site.Hosts) || !sameSet(before.Origins, site.Origins)) {
				a.logger.Warn("the app kept running with the settings it made for its site's hosts before this reload (ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS): requests for the new hosts are refused until it starts anew",
					zap.String("app", p.Name()), zap.Strings("hosts_before", before.Hosts), zap.Strings("hosts", site.Hosts),
					zap.String("fix", "change any setting of its block (so the reload starts it anew), or restart Caddy"))
			}
		}
		aware.SetSite(*site)
	}
}

// Stop closes the dashboard; pools stop when the last config using them
// is cleaned up.
func (a *App) Stop() error {
	a.undoStart()
	return nil
}

// undoStart undoes what Start did to what is shared with other configs
// (the status, the dashboard's port, GOMAXPROCS, the GC floor and poller,
// max_processes); each step once, whether Stop or Cleanup comes first.
func (a *App) undoStart() {
	a.withdraw()
	if a.dashboard != nil { // (two dashboards would share its port: SO_REUSEPORT)
		a.dashboard.stop()
		a.dashboard = nil
	}
	a.releaseMaxProcesses()
	if a.cpus != nil {
		releaseCaddyCPUs(a.cpus)
		a.cpus = nil
	}
	if a.gcFloor != nil {
		releaseCaddyGCFloor(a.gcFloor)
		a.gcFloor = nil
	}
	if a.gcPolling {
		releaseGCPoll()
		a.gcPolling = false
	}
}

// Pools returns every pool currently held, sorted by app name.
func Pools() []Pool {
	var list []Pool
	pools.Range(func(_, v any) bool {
		list = append(list, v.(Pool))
		return true
	})
	sort.SliceStable(list, func(i, j int) bool { return list[i].Name() < list[j].Name() })
	return list
}

// RegisterCollector adds a metrics collector to a config's registry,
// once (registering it again is not an error).
func RegisterCollector(registry *prometheus.Registry, c prometheus.Collector) error {
	if registry == nil {
		return nil
	}
	err := registry.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		return nil
	}
	return err
}

// Cleanup lets go of what Provision took, and of what Start did when
// Caddy refused the config after every app started (it then cleans up
// without stopping them).
func (a *App) Cleanup() error {
	a.undoStart()
	released := a.releaseServices()
	a.releaseJobs()
	a.reviveServices(released)
	if a.certLog != nil {
		_, _ = certLogs.Delete(certLogKey)
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)

// sameSet reports whether a and b hold the same strings, in any order (a
// site's hosts come from its servers, a map: their order is not theirs).
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
