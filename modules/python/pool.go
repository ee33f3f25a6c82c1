package python

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// Pool is a set of supervised Python worker processes serving one app.
// Requests take an idle slot (preferring the least busy worker), wait in a
// bounded FIFO queue when none is free, and give the slot back when the
// worker has produced the whole response.
type Pool struct {
	spec        *poolSpec
	logger      *zap.Logger
	runtimePath string

	startOnce sync.Once
	startErr  error
	ctx       context.Context // cancelled when the pool stops
	cancel    context.CancelFunc
	seats     sync.WaitGroup

	mu        sync.Mutex
	state     string // starting, running, draining, stopped, failed
	workers   []*worker
	idle      []*slot
	waiters   []chan *slot
	busySlots int
	drained   chan struct{} // closed when a draining pool has nothing left to serve
	restarts  map[string]int
	failures  int
	lastError string
	backoff   time.Time
}

// errPoolStopped is returned to requests that reach a pool after it stopped.
var errPoolStopped = errors.New("the app's worker pool is not running")

// errQueueFull and errQueueTimeout become 503 responses with Retry-After.
var (
	errQueueFull    = errors.New("all workers are busy and the queue is full (max_queue)")
	errQueueTimeout = errors.New("no worker became free within queue_timeout")
)

func newPool(spec *poolSpec, logger *zap.Logger) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{
		spec:     spec,
		logger:   logger.With(zap.String("app", spec.Name)),
		ctx:      ctx,
		cancel:   cancel,
		state:    "starting",
		restarts: map[string]int{},
	}
}

// Name is the app name.
func (p *Pool) Name() string { return p.spec.Name }

// Start runs before_start, then launches the workers and waits until all
// are ready. It runs once; later calls return the first result.
func (p *Pool) Start() error {
	p.startOnce.Do(func() {
		p.startErr = p.start()
		if p.startErr != nil {
			p.mu.Lock()
			p.state, p.lastError = "failed", p.startErr.Error()
			p.failWaitersLocked()
			p.mu.Unlock()
		}
	})
	return p.startErr
}

func (p *Pool) start() error {
	path, err := writeRuntime()
	if err != nil {
		return err
	}
	p.runtimePath = path
	if err := p.runBeforeStart(); err != nil {
		return err
	}
	workers := make([]*worker, p.spec.Workers)
	errs := make([]error, p.spec.Workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			workers[i], errs[i] = p.spawnWorker()
		}()
	}
	wg.Wait()
	if err := firstError(errs); err != nil {
		for _, w := range workers {
			if w != nil {
				w.stop(time.Second)
			}
		}
		return fmt.Errorf("starting workers: %w", err)
	}
	p.mu.Lock()
	if p.state != "starting" { // stopped while starting
		p.mu.Unlock()
		for _, w := range workers {
			w.stop(time.Second)
		}
		return errPoolStopped
	}
	p.state = "running"
	for _, w := range workers {
		p.addWorkerLocked(w)
	}
	p.mu.Unlock()
	for _, w := range workers {
		p.seats.Add(1)
		go p.keepSeat(w)
	}
	p.logger.Info("worker pool ready", zap.Int("workers", len(workers)), zap.Int("threads", p.spec.Threads))
	return nil
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// runBeforeStart runs the before_start commands in the app's environment.
func (p *Pool) runBeforeStart() error {
	for _, argv := range p.spec.BeforeStart {
		if err := p.runCommand(argv); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pool) runCommand(argv []string) error {
	program := argv[0]
	if program == "python" || program == "python3" {
		program = p.spec.Python
	}
	ctx, cancel := context.WithTimeout(p.ctx, beforeStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, program, argv[1:]...)
	cmd.Dir = p.spec.Dir
	cmd.Env = p.spec.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("still running after %s", beforeStartTimeout)
	}
	if err != nil {
		return fmt.Errorf("before_start `%s` failed (%v):\n%s", strings.Join(argv, " "), err, strings.TrimRight(string(out), "\n"))
	}
	p.logger.Info("before_start finished", zap.Strings("command", argv), zap.String("output", string(out)))
	return nil
}

// beforeStartTimeout bounds each before_start command.
const beforeStartTimeout = 10 * time.Minute

func (p *Pool) addWorkerLocked(w *worker) {
	p.workers = append(p.workers, w)
	for _, s := range w.slots {
		p.giveLocked(s)
	}
}

// keepSeat watches one worker and replaces it whenever it exits, backing
// off exponentially while replacements keep failing.
func (p *Pool) keepSeat(w *worker) {
	defer p.seats.Done()
	backoff := supervisor.DefaultBackoff()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-w.proc.Done():
		}
		lived := time.Since(w.proc.StartedAt())
		p.retire(w, "crash")
		p.logger.Error("worker exited; replacing it",
			zap.Int("pid", w.proc.Pid()), zap.String("exit", w.proc.ExitDescription()), zap.Duration("uptime", lived))
		delay := backoff.Failed(lived)
		for {
			if !p.sleepBackoff(delay, backoff.Failures()) {
				return
			}
			next, err := p.spawnWorker()
			if err == nil {
				w = next
				break
			}
			p.logger.Error("replacement worker failed to start", zap.Error(err), zap.Int("consecutive_failures", backoff.Failures()))
			p.mu.Lock()
			p.lastError = err.Error()
			p.mu.Unlock()
			delay = backoff.Failed(0)
		}
		p.mu.Lock()
		if p.state != "running" && p.state != "draining" {
			p.mu.Unlock()
			w.stop(time.Second)
			return
		}
		p.failures, p.backoff = 0, time.Time{}
		p.addWorkerLocked(w)
		p.mu.Unlock()
	}
}

// sleepBackoff waits delay, reporting it in status; false if the pool stops.
func (p *Pool) sleepBackoff(delay time.Duration, failures int) bool {
	p.mu.Lock()
	p.failures, p.backoff = failures, time.Now().Add(delay)
	p.mu.Unlock()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.ctx.Done():
		return false
	}
}

// retire removes w from service: its idle slots leave the idle list, busy
// ones are dropped when released.
func (p *Pool) retire(w *worker, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.retired {
		return
	}
	w.retired = true
	p.restarts[reason]++
	kept := p.idle[:0]
	for _, s := range p.idle {
		if s.worker != w {
			kept = append(kept, s)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	for i, x := range p.workers {
		if x == w {
			p.workers = append(p.workers[:i], p.workers[i+1:]...)
			break
		}
	}
	w.close()
}

// acquire takes a free slot, waiting in the queue up to queue_timeout.
func (p *Pool) acquire(ctx context.Context) (*slot, error) {
	p.mu.Lock()
	if s := p.takeIdleLocked(); s != nil {
		p.mu.Unlock()
		return s, nil
	}
	switch p.state {
	case "starting", "running", "draining":
	default:
		p.mu.Unlock()
		return nil, errPoolStopped
	}
	if len(p.waiters) >= p.spec.MaxQueue {
		p.mu.Unlock()
		return nil, errQueueFull
	}
	ch := make(chan *slot, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()

	timer := time.NewTimer(p.spec.QueueTimeout)
	defer timer.Stop()
	var err error
	select {
	case s := <-ch:
		if s == nil {
			return nil, errPoolStopped
		}
		return s, nil
	case <-timer.C:
		err = errQueueTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.mu.Lock()
	for i, c := range p.waiters {
		if c == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.noteDrainLocked()
			p.mu.Unlock()
			return nil, err
		}
	}
	p.mu.Unlock()
	// a slot was handed to us as we gave up: pass it on
	if s := <-ch; s != nil {
		p.release(s)
	}
	return nil, err
}

// takeIdleLocked pops the idle slot of the least busy worker.
func (p *Pool) takeIdleLocked() *slot {
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	best := n - 1 // most recently used: warm caches
	if p.spec.Threads > 1 {
		for i := n - 2; i >= 0; i-- {
			if p.idle[i].worker.busy < p.idle[best].worker.busy {
				best = i
			}
		}
	}
	s := p.idle[best]
	p.idle[best] = p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	s.worker.busy++
	p.busySlots++
	return s
}

// release gives a slot back after a complete exchange.
func (p *Pool) release(s *slot) {
	p.mu.Lock()
	s.worker.busy--
	s.worker.served++
	p.busySlots--
	if !s.worker.retired {
		p.giveLocked(s)
	}
	p.noteDrainLocked()
	p.mu.Unlock()
}

// giveLocked hands a free slot to the longest-waiting request, or idles it.
func (p *Pool) giveLocked(s *slot) {
	if len(p.waiters) > 0 && (p.state == "running" || p.state == "draining") {
		ch := p.waiters[0]
		p.waiters[0] = nil
		p.waiters = p.waiters[1:]
		s.worker.busy++
		p.busySlots++
		ch <- s
		return
	}
	p.idle = append(p.idle, s)
}

// fail takes a slot whose worker broke mid-exchange out of service and
// kills the worker; its seat starts a replacement.
func (p *Pool) fail(s *slot, err error) {
	p.logger.Error("worker channel broken; killing the worker", zap.Int("pid", s.worker.proc.Pid()), zap.Error(err))
	p.retire(s.worker, "crash")
	p.mu.Lock()
	s.worker.busy--
	p.busySlots--
	p.noteDrainLocked()
	p.mu.Unlock()
	_ = s.worker.proc.Signal(syscall.SIGKILL)
}

func (p *Pool) failWaitersLocked() {
	for _, ch := range p.waiters {
		ch <- nil
	}
	p.waiters = nil
}

// Destruct stops the pool once no loaded config uses it. On a reload the
// old config's requests may still be running or queued here: they are
// served (for up to stop_timeout) before the workers are stopped, in the
// background so the reload is not held up. When Caddy exits, its servers
// have already finished their requests and the pool stops right away.
func (p *Pool) Destruct() error {
	p.mu.Lock()
	if p.state == "starting" || p.state == "running" {
		p.state = "draining"
	}
	p.mu.Unlock()
	if caddy.Exiting() {
		p.drainAndStop()
	} else {
		go p.drainAndStop()
	}
	return nil
}

func (p *Pool) drainAndStop() {
	p.mu.Lock()
	var drained chan struct{}
	if !p.idleLocked() {
		drained = make(chan struct{})
		p.drained = drained
	}
	p.mu.Unlock()
	if drained != nil {
		select {
		case <-drained:
		case <-time.After(p.spec.StopTimeout):
			p.logger.Warn("requests still in flight at stop_timeout; stopping workers anyway", zap.Duration("stop_timeout", p.spec.StopTimeout))
		}
	}
	p.cancel()
	p.seats.Wait()
	p.mu.Lock()
	p.state = "stopped"
	p.failWaitersLocked()
	workers := p.workers
	p.workers, p.idle = nil, nil
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.stop(10 * time.Second)
		}()
	}
	wg.Wait()
	if len(workers) > 0 {
		p.logger.Info("worker pool stopped", zap.Int("workers", len(workers)))
	}
}

// idleLocked reports whether no request is running or waiting.
func (p *Pool) idleLocked() bool {
	return p.busySlots == 0 && len(p.waiters) == 0
}

// noteDrainLocked wakes a draining pool once it is idle.
func (p *Pool) noteDrainLocked() {
	if p.drained != nil && p.idleLocked() {
		close(p.drained)
		p.drained = nil
	}
}

// poolStatus is one app in GET /hearth/apps.
type poolStatus struct {
	Name                string         `json:"name"`
	App                 string         `json:"app"`
	Dir                 string         `json:"dir"`
	State               string         `json:"state"`
	Workers             []workerStatus `json:"workers"`
	Threads             int            `json:"threads"`
	Queue               int            `json:"queue"`
	Restarts            map[string]int `json:"restarts"`
	ConsecutiveFailures int            `json:"consecutive_failures"`
	BackoffUntil        *time.Time     `json:"backoff_until,omitempty"`
	LastError           string         `json:"last_error,omitempty"`
}

// Status reports the pool's state for the admin API.
func (p *Pool) Status() any {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := poolStatus{
		Name: p.spec.Name, App: p.spec.App, Dir: p.spec.Dir, State: p.state,
		Workers: []workerStatus{}, Threads: p.spec.Threads, Queue: len(p.waiters),
		Restarts: map[string]int{}, ConsecutiveFailures: p.failures, LastError: p.lastError,
	}
	for _, w := range p.workers {
		st.Workers = append(st.Workers, w.status())
	}
	for k, v := range p.restarts {
		st.Restarts[k] = v
	}
	if time.Now().Before(p.backoff) {
		b := p.backoff
		st.BackoffUntil = &b
	}
	return st
}

var _ hearth.Pool = (*Pool)(nil)
