package service

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/netinfo"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// Group is the running processes of one service, each held by a
// supervisor.Replica: a process that exits is replaced (with backoff
// while they keep failing), a restart replaces each one after its
// successor is up. It is a hearth.Pool, kept across reloads by its spec's
// hash.
type Group struct {
	spec     *Spec
	logger   *zap.Logger
	ctx      context.Context // cancelled when the group stops
	cancel   context.CancelFunc
	loops    sync.WaitGroup // the replicas' Keep
	stopping sync.WaitGroup // processes being stopped out of service

	startOnce sync.Once
	startErr  error
	stopOnce  sync.Once
	stopped   chan struct{}

	mu         sync.Mutex
	state      supervisor.State
	destructed bool    // no config has the group any more: Revive starts nothing
	procs      []*proc // in service
	replicas   []*supervisor.Replica[*proc]
	restarts   map[string]int
	failures   int
	backoff    time.Time
	lastError  string
}

// proc is one running process of a service.
type proc struct {
	p      *supervisor.Process
	reason string // why Hearth stopped it ("reload"), "" if it exited by itself (guarded by the group's mutex)
}

// Done is closed once the process has exited (supervisor.Occupant).
func (p *proc) Done() <-chan struct{} { return p.p.Done() }

// StartedAt is when the process started (supervisor.Occupant).
func (p *proc) StartedAt() time.Time { return p.p.StartedAt() }

// New makes the group of spec; Start launches it.
func New(spec *Spec, logger *zap.Logger) *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{spec: spec, logger: logger.With(zap.String("service", spec.Name)), ctx: ctx, cancel: cancel,
		state: supervisor.Starting, restarts: map[string]int{"crash": 0, "reload": 0}, stopped: make(chan struct{})}
}

// Name is the service's name.
func (g *Group) Name() string { return g.spec.Name }

// App is the Python app whose environment the service runs in, or "".
func (g *Group) App() string { return g.spec.App }

// Running reports whether the service runs for the current config.
func (g *Group) Running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == supervisor.Running
}

// Stopped is closed once every process of the group has stopped.
func (g *Group) Stopped() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopped
}

// Start launches the processes and waits until each is up. It runs once.
func (g *Group) Start() error {
	g.startOnce.Do(func() {
		g.startErr = panics.Call(g.logger, "starting the service", g.start)
		if g.startErr != nil {
			g.mu.Lock()
			g.state, g.lastError = supervisor.Failed, g.startErr.Error()
			g.mu.Unlock()
		}
	})
	return g.startErr
}

func (g *Group) start() error {
	launched := make([]*proc, g.spec.Workers)
	errs := make([]error, g.spec.Workers)
	var wg sync.WaitGroup
	for i := range launched {
		wg.Add(1)
		go func() {
			defer wg.Done()
			launched[i], errs[i] = g.launch()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		g.stopAll(launched)
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != supervisor.Starting { // stopped while starting
		go g.stopAll(launched)
		return fmt.Errorf("service %s stopped while starting", g.spec.Name)
	}
	g.state = supervisor.Running
	g.procs = launched
	for _, p := range launched {
		r := supervisor.NewReplica[*proc]()
		g.replicas = append(g.replicas, r)
		g.loops.Add(1)
		go func() {
			defer g.loops.Done()
			r.Keep(g.ctx, g.logger, g.hooks(), p)
		}()
	}
	// the program only: arguments may carry a password (`--requirepass`),
	// and the log reaches more readers than the config
	g.logger.Info("service running", zap.Int("processes", len(launched)), zap.String("program", g.spec.Path))
	return nil
}

// stopAll stops procs at once, each within stop_timeout: one after the
// other, processes that ignore the stop signal held a failed start (and
// Caddy's config lock with it) for stop_timeout each.
func (g *Group) stopAll(procs []*proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		if p != nil {
			wg.Go(func() { p.p.Stop(g.spec.StopSignal, g.spec.StopTimeout) })
		}
	}
	wg.Wait()
}

// launch starts one process and waits until it is up.
func (g *Group) launch() (_ *proc, err error) {
	defer panics.Recover(g.logger, "starting a service process", &err)
	p, err := supervisor.Start(g.spec.command(append([]string{g.spec.Path}, g.spec.Args...)), g.logger)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", g.spec.Name, err)
	}
	if err := g.awaitReady(p); err != nil {
		p.Stop(g.spec.StopSignal, g.spec.StopTimeout)
		return nil, err
	}
	return &proc{p: p}, nil
}

// readyPoll is how often readiness is tried.
const readyPoll = 500 * time.Millisecond

// awaitReady waits until p is up (Spec.Ready), it exits, or start_timeout
// passes.
func (g *Group) awaitReady(p *supervisor.Process) error {
	deadline := time.Now().Add(g.spec.StartTimeout)
	ready := g.spec.Ready
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("service %s (pid %d) exited before it was up (%s); its output is in the log", g.spec.Name, p.Pid(), p.ExitDescription())
		case <-g.ctx.Done():
			return errors.New("stopped while starting")
		default:
		}
		up, why := g.isUp(p, ready, time.Until(deadline))
		if up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s (pid %d) was not up within start_timeout (%s): %s", g.spec.Name, p.Pid(), g.spec.StartTimeout, why)
		}
		select {
		case <-p.Done():
		case <-g.ctx.Done():
		case <-time.After(readyPoll):
		}
	}
}

// isUp tries the readiness check of p once, within at most left; why
// says what failed. A tcp address counts only when p's process group
// listens on it: a previous process still there is not p being up.
func (g *Group) isUp(p *supervisor.Process, ready Ready, left time.Duration) (bool, string) {
	switch {
	case ready.TCP != "":
		// its process group's listener is its own, whatever its account
		// (a daemon that binds as root, then drops to its user); when
		// Caddy may not read the process's descriptors (another user's),
		// the connection decides, once no other account's socket holds
		// the address (it would have taken the port first)
		listens, known := netinfo.GroupListens(p.Pid(), ready.TCP)
		if known && !listens {
			return false, fmt.Sprintf("it does not listen on %s (ready tcp)", ready.TCP)
		}
		if !known {
			if other := netinfo.ForeignListener(ready.TCP, supervisor.Command{Credential: g.spec.Credential}.UID()); other != "" {
				return false, fmt.Sprintf("%s listens on %s (ready tcp), not the service's account: if it is not the service, it took the port first", other, ready.TCP)
			}
		}
		conn, err := net.DialTimeout("tcp", ready.TCP, min(max(left, 100*time.Millisecond), 2*time.Second))
		if err != nil {
			return false, fmt.Sprintf("it listens on %s but accepts no connection", ready.TCP)
		}
		conn.Close()
		return true, ""
	case len(ready.Command) > 0:
		ctx, cancel := context.WithTimeout(g.ctx, min(max(left, time.Second), 10*time.Second))
		defer cancel()
		out, err := supervisor.Run(ctx, g.spec.command(ready.Command), g.logger)
		if err != nil {
			return false, fmt.Sprintf("its ready command failed (%v): %s", err, tail(out, 300))
		}
		return true, ""
	}
	return true, ""
}

// tail is at most the last n bytes of out, as text.
func tail(out []byte, n int) string {
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return string(out)
}

// hooks are what the group does at each step of a replica's life.
func (g *Group) hooks() *supervisor.Hooks[*proc] {
	return &supervisor.Hooks[*proc]{
		Start: g.launch,
		Adopt: g.adopt,
		Exited: func(p *proc) string {
			_ = syscall.Kill(-p.p.Pid(), syscall.SIGKILL) // what it started (Celery's pool children …) goes with it
			g.mu.Lock()
			reason := p.reason
			g.mu.Unlock()
			if reason == "" {
				reason = "crash"
				fields := []zap.Field{zap.Int("pid", p.p.Pid()), zap.String("exit", p.p.ExitDescription()),
					zap.Duration("uptime", time.Since(p.p.StartedAt()))}
				if p.p.ExitDescription() == "exit status 0" && time.Since(p.p.StartedAt()) < daemonizeWindow {
					// the way of a program that forks into the background
					fields = append(fields, zap.String("fix", "a service must run in the foreground: a program that puts itself in the background (redis-server with daemonize yes, a --daemon or -d flag) leaves Hearth's supervision, and its copy outlives the service; turn that off (redis-server --daemonize no)"))
				}
				g.logger.Error("service process exited; replacing it", fields...)
			}
			g.takeOut(p, reason)
			return reason
		},
		Leave: func(p *proc) {
			g.takeOut(p, "")
			g.stopLater(p)
		},
		Failed: func(old *proc, reason string, err error, retryIn time.Duration) {
			g.mu.Lock()
			g.lastError = err.Error()
			g.mu.Unlock()
			if old != nil {
				g.logger.Error("could not start a replacement; the old process keeps running", zap.String("reason", reason), zap.Int("pid", old.p.Pid()), zap.Error(err))
			} else {
				g.logger.Error("service process failed to start", zap.Error(err), zap.Duration("retry_in", retryIn))
			}
		},
		Waiting: func(delay time.Duration, failures int) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.failures, g.backoff = failures, time.Time{}
			if delay > 0 {
				g.backoff = time.Now().Add(delay)
			}
		},
	}
}

// adopt puts next into service (stopping old, if set, once it is out) and
// returns false (stopping next) if the group is stopping.
func (g *Group) adopt(_ *supervisor.Replica[*proc], next, old *proc, reason string) bool {
	g.mu.Lock()
	if g.state != supervisor.Running && g.state != supervisor.Draining {
		g.mu.Unlock()
		next.p.Stop(g.spec.StopSignal, g.spec.StopTimeout)
		return false
	}
	g.procs = append(g.procs, next)
	if old != nil && slices.Contains(g.procs, old) {
		g.procs = slices.DeleteFunc(g.procs, func(x *proc) bool { return x == old })
		g.restarts[reason]++
	}
	g.mu.Unlock()
	if old != nil {
		g.stopLater(old)
		g.logger.Info("service process replaced", zap.String("reason", reason), zap.Int("old_pid", old.p.Pid()), zap.Int("new_pid", next.p.Pid()))
	}
	return true
}

// daemonizeWindow: a service process that exits with status 0 this soon
// after its start has most likely put itself in the background.
const daemonizeWindow = 5 * time.Second

// stopLater stops p, out of service, in the background; the group's stop
// waits for it.
func (g *Group) stopLater(p *proc) {
	g.stopping.Add(1)
	panics.Go(g.logger, "stopping a service process", func() {
		defer g.stopping.Done()
		p.p.Stop(g.spec.StopSignal, g.spec.StopTimeout)
	})
}

// takeOut takes p out of service, counting reason (if set) once.
func (g *Group) takeOut(p *proc, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Contains(g.procs, p) {
		return
	}
	g.procs = slices.DeleteFunc(g.procs, func(x *proc) bool { return x == p })
	if reason != "" {
		g.restarts[reason]++
	}
}

// Destruct stops the service once no config has it: its processes get
// stop_signal, then SIGKILL after stop_timeout (Stopped is closed then).
// On a reload that happens in the background; when Caddy exits, before
// it does. Stopping twice is stopping once.
func (g *Group) Destruct() error {
	g.mu.Lock()
	g.destructed = true
	g.mu.Unlock()
	g.halt()
	return nil
}

// halt stops the group once (Destruct, Stop).
func (g *Group) halt() {
	g.stopOnce.Do(func() {
		g.mu.Lock()
		if g.state == supervisor.Starting || g.state == supervisor.Running {
			g.state = supervisor.Draining
		}
		g.mu.Unlock()
		if caddy.Exiting() {
			g.stop()
			return
		}
		panics.Go(g.logger, "stopping the service", g.stop)
	})
}

// Stop stops the service and waits until its processes are gone; Revive
// may start it again while a config has it.
func (g *Group) Stop() {
	g.halt()
	<-g.Stopped()
}

func (g *Group) stop() {
	g.cancel()
	g.loops.Wait()
	g.mu.Lock()
	procs, stopped := g.procs, g.stopped
	g.procs = nil
	g.state = supervisor.Stopped
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		panics.Go(g.logger, "stopping a service process", func() {
			defer wg.Done()
			p.p.Stop(g.spec.StopSignal, g.spec.StopTimeout)
		})
	}
	wg.Wait()
	g.stopping.Wait()
	if len(procs) > 0 {
		g.logger.Info("service stopped", zap.Int("processes", len(procs)))
	}
	close(stopped)
}

// Holds reports whether a process of the group listens on addr (a
// successor that cannot start beside it may need it stopped first).
func (g *Group) Holds(addr string) bool {
	g.mu.Lock()
	procs := slices.Clone(g.procs)
	g.mu.Unlock()
	for _, p := range procs {
		listens, known := netinfo.GroupListens(p.p.Pid(), addr)
		if listens {
			return true
		}
		if !known { // another user's: whatever listens there may be it
			for _, l := range netinfo.Listeners() {
				if net.JoinHostPort(l.Addr.String(), strconv.Itoa(l.Port)) == addr || l.Addr.IsUnspecified() && strings.HasSuffix(addr, ":"+strconv.Itoa(l.Port)) {
					return true
				}
			}
		}
	}
	return false
}

// Revive starts a group again that Stop ended, with fresh processes: the
// config that stopped it to start its successor was refused, and the
// config that has it serves on.
func (g *Group) Revive() error {
	<-g.Stopped()
	ctx, cancel := context.WithCancel(context.Background())
	g.mu.Lock()
	if g.destructed {
		// a reload took the service out meanwhile: starting it would
		// leave it running with no config to stop it
		g.mu.Unlock()
		cancel()
		return nil
	}
	g.ctx, g.cancel = ctx, cancel
	g.state, g.replicas, g.procs = supervisor.Starting, nil, nil
	g.stopped = make(chan struct{})
	g.stopOnce = sync.Once{}
	g.mu.Unlock()
	if err := panics.Call(g.logger, "reviving the service", g.start); err != nil {
		g.mu.Lock()
		g.state, g.lastError = supervisor.Failed, err.Error()
		g.mu.Unlock()
		return err
	}
	return nil
}

// Restart replaces every process, one at a time: it stops the process
// (stop_signal, then SIGKILL after stop_timeout) and waits until its
// replacement is up. A service's processes are not started beside their
// predecessors, as a server on a fixed address could not be. It returns
// why a replacement could not start (Hearth keeps trying, with backoff).
func (g *Group) Restart() error {
	g.mu.Lock()
	state, procs := g.state, slices.Clone(g.procs)
	g.mu.Unlock()
	if state != supervisor.Running {
		return fmt.Errorf("service %s is %s, %w", g.spec.Name, state, supervisor.ErrNotRunning)
	}
	for _, p := range procs {
		g.mu.Lock()
		p.reason, g.lastError = "reload", ""
		g.mu.Unlock()
		p.p.Stop(g.spec.StopSignal, g.spec.StopTimeout)
		if err := g.awaitReplacement(p); err != nil {
			return fmt.Errorf("restarting service %s: %w", g.spec.Name, err)
		}
	}
	g.logger.Info("service restarted", zap.Int("processes", len(procs)))
	return nil
}

// awaitReplacement waits until old's place is filled again, a start
// failed, or the group stops.
func (g *Group) awaitReplacement(old *proc) error {
	deadline := time.Now().Add(g.spec.StartTimeout + 5*time.Second)
	for time.Now().Before(deadline) {
		g.mu.Lock()
		done := !slices.Contains(g.procs, old) && len(g.procs) >= len(g.replicas)
		failed, state := g.lastError, g.state
		g.mu.Unlock()
		switch {
		case done:
			return nil
		case failed != "":
			return errors.New(failed)
		case state != supervisor.Running:
			return fmt.Errorf("the service is %s, %w", state, supervisor.ErrNotRunning)
		}
		select {
		case <-g.ctx.Done():
			return fmt.Errorf("the service stopped, %w", supervisor.ErrNotRunning)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("no replacement was up within start_timeout (%s)", g.spec.StartTimeout)
}

// Scale is refused: a service runs `workers` processes.
func (g *Group) Scale(int) error {
	return fmt.Errorf("service %s runs the `workers` its block sets; change it there and reload", g.spec.Name)
}

// Status is a service in GET /hearth/apps.
type Status struct {
	Name                string          `json:"name"`
	Kind                string          `json:"kind"` // "service"
	App                 string          `json:"app,omitempty"`
	Command             []string        `json:"command"`
	State               string          `json:"state"`
	Workers             []processStatus `json:"workers"`
	Restarts            map[string]int  `json:"restarts"`
	ConsecutiveFailures int             `json:"consecutive_failures"`
	BackoffUntil        *time.Time      `json:"backoff_until,omitempty"`
	LastError           string          `json:"last_error,omitempty"`
}

// processStatus is one process of a service.
type processStatus struct {
	Pid       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
}

// Status reports the service for the admin API.
func (g *Group) Status() any {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := Status{Name: g.spec.Name, Kind: "service", App: g.spec.App, Command: append([]string{g.spec.Path}, g.spec.Args...),
		State: string(g.state), Workers: []processStatus{}, Restarts: maps.Clone(g.restarts),
		ConsecutiveFailures: g.failures, LastError: g.lastError}
	for _, p := range g.procs {
		st.Workers = append(st.Workers, processStatus{Pid: p.p.Pid(), StartedAt: p.p.StartedAt()})
	}
	if time.Now().Before(g.backoff) {
		b := g.backoff
		st.BackoffUntil = &b
	}
	return st
}

// Metrics are the service's gauges and counters: its processes in
// service, whether it runs, and its restarts by reason.
func (g *Group) Metrics() (processes int, running bool, restarts map[string]int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.procs), g.state == supervisor.Running, maps.Clone(g.restarts)
}
