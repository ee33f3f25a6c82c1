package hearth

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/service"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// AppEnvironment is a pool whose app's environment a service can run in
// (a Python app: the `app` option of a service).
type AppEnvironment interface {
	// Environment is the app's environment once it started: its
	// interpreter as Path, its directory, environment (settings
	// included), account and umask.
	Environment() (supervisor.Command, error)
}

// checkReferences refuses, before any new pool of the config starts, what
// startServices and startJobs would refuse once they had: a service named
// like an app, and a service, job or backup that runs in an app the
// config does not serve.
func (a *App) checkReferences() error {
	names := map[string]bool{}
	for _, p := range a.used {
		names[p.Name()] = true
	}
	for _, c := range a.Services {
		if names[c.Name] {
			return fmt.Errorf("service %s has the name of an app of this config; `caddy hearth restart` and the status tell them apart by name: rename the service", c.Name)
		}
		if c.App != "" {
			if _, err := a.appEnvironment("service "+c.Name, c.App); err != nil {
				return err
			}
		}
	}
	for _, c := range a.Jobs {
		if c.App != "" {
			if _, err := a.appEnvironment("job "+c.Name, c.App); err != nil {
				return err
			}
		}
	}
	for _, c := range a.Backups {
		if name := c.AppName(); name != "" {
			if _, err := a.appEnvironment("backup "+c.Name, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// startServices starts the config's services once its apps run (a
// service may run in an app's environment, settings included). Each is a
// pool kept across reloads by its spec: an unchanged service keeps its
// processes. A changed one starts beside the old; if it cannot because
// the old one holds its `ready tcp` address, the old one is stopped first
// and the new one started again (and revived if this config is refused
// after all: see reviveServices).
func (a *App) startServices() error {
	for _, c := range a.Services { // (names and apps: checkReferences, at Start's beginning)
		spec, err := a.resolveService(c)
		if err != nil {
			return err
		}
		if _, busy := restoring.Load("app " + spec.App); busy && spec.App != "" {
			// stopped for the restore of its app's database, which
			// starts it again once the copy is in
			return fmt.Errorf("service %s: a restore of app %s's database is in progress; load the config again once it has ended (GET /hearth/backups shows it)", spec.Name, spec.App)
		}
		if spec.App == "" { // in an app's environment, the app's checks (HG-ADMIN-01) judge its account
			if err := CheckAdminReach("service "+spec.Name, spec.Credential); err != nil {
				return err
			}
			WarnIfRoot(a.logger, "service "+spec.Name, spec.Credential)
		}
		g, err := a.useService(spec)
		if err != nil {
			return err
		}
		if err := g.Start(); err != nil {
			old := runningService(spec.Name, g)
			if old == nil || spec.Ready.TCP == "" || !old.Holds(spec.Ready.TCP) {
				return fmt.Errorf("service %s: %w", spec.Name, err)
			}
			a.logger.Warn("the changed service could not start beside its previous version, which holds "+spec.Ready.TCP+"; stopping that one and starting again",
				zap.String("service", spec.Name), zap.Error(err))
			old.Stop()
			a.stoppedServices = append(a.stoppedServices, old)
			a.dropService(g)
			if g, err = a.useService(spec); err != nil {
				return err
			}
			if err := g.Start(); err != nil {
				return fmt.Errorf("service %s: %w", spec.Name, err)
			}
		}
	}
	return nil
}

// resolveService resolves c, in the environment of its app if it has one.
func (a *App) resolveService(c *service.Config) (*service.Spec, error) {
	if c.App == "" {
		return c.Resolve(nil)
	}
	env, err := a.appEnvironment("service "+c.Name, c.App)
	if err != nil {
		return nil, err
	}
	cmd, err := env.Environment()
	if err != nil {
		return nil, fmt.Errorf("service %s: the environment of app %s: %w", c.Name, c.App, err)
	}
	return c.Resolve(&cmd)
}

// appEnvironment finds the Python app named app among this config's, for
// what (a service or job) that runs in its environment.
func (a *App) appEnvironment(what, app string) (AppEnvironment, error) {
	var apps []string
	for _, p := range a.used {
		env, ok := p.(AppEnvironment)
		if !ok {
			continue
		}
		if p.Name() == app {
			return env, nil
		}
		apps = append(apps, p.Name())
	}
	if len(apps) == 0 {
		return nil, fmt.Errorf("%s runs in app %s, but this config serves no Python app; add its wsgi or asgi block, or give it its own dir and env", what, app)
	}
	slices.Sort(apps)
	return nil, fmt.Errorf("%s runs in app %s, which this config does not serve; its Python apps: %s", what, app, strings.Join(apps, ", "))
}

// useService takes the service group of spec for this config (locked to
// this machine's one Caddy, like an app).
func (a *App) useService(spec *service.Spec) (*service.Group, error) {
	key := PoolKey("service", spec)
	p, err := a.UsePool(key, func() (Pool, error) { return service.New(spec, a.logger), nil })
	if err != nil {
		return nil, err
	}
	a.serviceKeys = append(a.serviceKeys, key)
	if err := lockPools([]Pool{p}, a.keys); err != nil {
		return nil, err
	}
	return p.(*service.Group), nil
}

// dropService lets go of a service group this config took but will not
// use (it failed to start).
func (a *App) dropService(g *service.Group) {
	key := a.keys[g]
	a.used = slices.DeleteFunc(a.used, func(p Pool) bool { return p == g })
	delete(a.keys, g)
	if i := slices.Index(a.serviceKeys, key); i >= 0 {
		a.serviceKeys = slices.Delete(a.serviceKeys, i, i+1)
	}
	ReleasePool(key)
	select {
	case <-g.Stopped():
	case <-time.After(time.Minute):
	}
}

// runningService is the group of another config's service of that name
// (not except), or nil.
func runningService(name string, except *service.Group) *service.Group {
	for _, p := range Pools() {
		if g, ok := p.(*service.Group); ok && g != except && g.Name() == name && g.Running() {
			return g
		}
	}
	return nil
}

// reviveServices starts again the previous versions of services this
// config stopped to start their successors, if the config that has them
// still runs: this config was refused after all (Cleanup).
func (a *App) reviveServices(released []*service.Group) {
	if len(a.stoppedServices) == 0 {
		return
	}
	for _, g := range released { // this config's versions give the addresses back first
		select {
		case <-g.Stopped():
		case <-time.After(time.Minute):
		}
	}
	for _, old := range a.stoppedServices {
		if !inPools(old) {
			continue // its config is gone too: this config ran, and was replaced since
		}
		a.logger.Warn("the config that replaced this service was refused; starting the previous version again", zap.String("service", old.Name()))
		if err := old.Revive(); err != nil {
			a.logger.Error("could not start the previous version of a service again; reload the config to start it", zap.String("service", old.Name()), zap.Error(err))
		}
	}
	a.stoppedServices = nil
}

// inPools reports whether the pool is still one a running config holds.
func inPools(p Pool) bool {
	live := false
	pools.Range(func(_, v any) bool {
		live = live || v == p
		return !live
	})
	return live
}

// releaseServices gives back what startServices took (Cleanup) and
// returns the groups that stop for it.
func (a *App) releaseServices() []*service.Group {
	var released []*service.Group
	// the last declared first, as systemd stops units: one may need those
	// before it until it has stopped (Celery, finishing its tasks, needs
	// Redis); at Caddy's exit each stop is waited for before the next
	for _, key := range slices.Backward(a.serviceKeys) {
		ReleasePool(key)
		if _, held := pools.References(key); held {
			continue // another config keeps it running
		}
		for p, k := range a.keys {
			if g, ok := p.(*service.Group); ok && k == key {
				released = append(released, g)
			}
		}
	}
	a.serviceKeys = nil
	return released
}

// Metrics of the background services, read from their groups at scrape
// time.
var (
	serviceProcessesDesc = prometheus.NewDesc("hearth_service_processes", "Processes of a background service that run.", []string{"service"}, nil)
	serviceUpDesc        = prometheus.NewDesc("hearth_service_up", "1 while a background service runs for the current config, else 0.", []string{"service"}, nil)
	serviceRestartsDesc  = prometheus.NewDesc("hearth_service_restarts_total", "Processes of a background service replaced, by reason (crash, reload).", []string{"service", "reason"}, nil)
)

// serviceCollector exposes the background services' metrics.
type serviceCollector struct{}

// Describe implements prometheus.Collector.
func (serviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- serviceProcessesDesc
	ch <- serviceUpDesc
	ch <- serviceRestartsDesc
}

// Collect implements prometheus.Collector. During a reload two groups may
// have a service's name: the running one speaks for it.
func (serviceCollector) Collect(ch chan<- prometheus.Metric) {
	type sample struct {
		processes int
		running   bool
		restarts  map[string]int
	}
	byName := map[string]sample{}
	for _, p := range Pools() {
		g, ok := p.(*service.Group)
		if !ok {
			continue
		}
		var s sample
		s.processes, s.running, s.restarts = g.Metrics()
		if prev, seen := byName[g.Name()]; seen && (prev.running || !s.running) {
			continue
		}
		byName[g.Name()] = s
	}
	for name, s := range byName {
		up := 0.0
		if s.running {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(serviceProcessesDesc, prometheus.GaugeValue, float64(s.processes), name)
		ch <- prometheus.MustNewConstMetric(serviceUpDesc, prometheus.GaugeValue, up, name)
		for reason, n := range s.restarts {
			ch <- prometheus.MustNewConstMetric(serviceRestartsDesc, prometheus.CounterValue, float64(n), name, reason)
		}
	}
}
