package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/loglimit"
	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// Pool is a set of supervised Python worker processes serving one app.
// Requests take an idle channel (preferring the least busy worker), wait in a
// bounded queue when none is free (in turns among clients: fairqueue.go),
// and give the channel back when the worker has produced the whole response.
type Pool struct {
	opts   Options
	env    []string // the processes' environment, from Start's prepare step
	logger *zap.Logger
	// failureLogs bounds the log lines of the app's failures (Abort
	// frames: logAppFailure)
	failureLogs loglimit.Limit
	nextStream  atomic.Uint32   // request ids
	longLived   longLivedCounts // WebSockets and streamed responses holding channels (longlived.go)
	// policyWarned is set once a worker was found under another
	// scheduling policy than cpu_policy's (cpupolicy.go)
	policyWarned atomic.Bool
	queueWait    prometheus.Observer
	duration     prometheus.Observer
	// clientShareWarnings lets the warning for a client refused past its
	// share (warnClientShare) through once a minute: a client can
	// provoke it at will
	clientShareWarnings loglimit.Limit

	forkServerMu sync.Mutex  // serializes fork server (re)starts
	forkServer   *forkServer // preload mode: the process workers are forked from (guarded by mu)
	// retiredForkServers are those restarts replaced whose workers may
	// still be finishing requests (guarded by forkServerMu)
	retiredForkServers []*forkServer

	// bodies counts each client's request bodies held for the pool, up to
	// maxBodiesPerClient (ReadBody)
	bodies bodyCounts

	// entered counts the requests between Enter and Leave (their bodies
	// being read, before they reach the queue); draining is set once Stop
	// began, so that Leave wakes a drain waiting for them
	entered  atomic.Int64
	draining atomic.Bool

	startOnce sync.Once
	startErr  error
	ctx       context.Context // cancelled when the pool stops
	cancel    context.CancelFunc
	loops     sync.WaitGroup // the replicas' Keep, the monitor and the file watcher

	mu    sync.Mutex
	state supervisor.State
	// memoryTooLowSaid: max_memory was found below a fresh worker's
	// memory, and the log said so (once)
	memoryTooLowSaid bool
	workers          []*worker // in service
	retiring         []*worker // finishing their last requests
	replicas         []*supervisor.Replica[*worker]
	idle             []*channel
	waiters          []*waiter                      // in turn order (fairqueue.go)
	waiting          map[netip.Prefix]queuedClient  // each client's requests in acquire's queue (clientOf), for max_queue_per_client and the turns
	turn             uint64                         // the turn of the last request taken off the queue
	openBy           map[netip.Prefix]longLivedHeld // each client's long-lived exchanges (admit), for max_open_per_client
	queueTimer       *time.Timer                    // expires waiters past queue_timeout
	busyChannels     int
	busyTime         time.Duration // workers' busy time, of the spells that ended (BusyTime)
	busySpells       int           // spells of busy time under way: workers with requests, workers starting
	busyStarts       time.Duration // the sum of their starts, from busyClock
	pipelined        int           // requests pipelined on channels now (see dispatch.go)
	pipelinedTotal   int64         // requests ever pipelined
	meanDuration     time.Duration // moving average of request times (each at most pipelineSampleCap), for pipelining
	growing          int           // workers being added
	minWorkers       int           // autoscaling bounds (equal for a fixed-size pool)
	maxWorkers       int
	drained          chan struct{} // closed when a draining pool has nothing left to serve
	paused           bool          // requests wait in the queue; no channel is handed out (Pause)
	pauseIdle        chan struct{} // closed when a paused pool has no request in flight
	stopped          chan struct{} // closed once Destruct has stopped every worker
	restarts         map[string]int
	failures         int
	lastError        string
	backoff          time.Time
}

// errPoolStopped is returned to requests that reach a pool after it stopped.
var errPoolStopped = errors.New("the app's worker pool is not running")

// errQueueFull and errQueueTimeout become 503 responses with Retry-After.
var (
	errQueueFull = errors.New("all workers are busy and the queue is full (max_queue)")
	// errClientQueueFull becomes 429 with Retry-After: one client may
	// not take the whole queue, and every other client's place in it
	errClientQueueFull = errors.New("all workers are busy, and this client has max_queue_per_client requests waiting for one already")
	errQueueTimeout    = errors.New("no worker became free within queue_timeout")
	// errPipelineAbandoned fails a pipelined request that is not
	// idempotent when its worker broke after it may have started it.
	errPipelineAbandoned = errors.New("the worker this request was pipelined to broke, and as it may have started the request (not idempotent), it is not sent again; set `pipeline off` to keep such requests in the shared queue")
)

// New makes a pool that starts nothing until Start.
func New(opts Options, logger *zap.Logger) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{
		opts:   opts,
		env:    opts.Env,
		logger: logger.With(zap.String("app", opts.Name)),
		ctx:    ctx,
		cancel: cancel,

		failureLogs: loglimit.Limit{Every: 100 * time.Millisecond},

		queueWait: queueWaitSeconds.WithLabelValues(opts.Name),
		duration:  requestDurationSeconds.WithLabelValues(opts.Name),
		state:     supervisor.Starting,
		restarts:  map[string]int{},
		waiting:   map[netip.Prefix]queuedClient{},
		openBy:    map[netip.Prefix]longLivedHeld{},

		clientShareWarnings: loglimit.Limit{Every: time.Minute},
		stopped:             make(chan struct{}),

		minWorkers: opts.Workers,
		maxWorkers: max(opts.Workers, opts.MaxWorkers),

		bodies: bodyCounts{limit: maxBodiesPerClient(opts)},
	}
}

// maxBodiesPerClient is how many request bodies one client may have held
// at once for a pool of opts: as many as it may have requests queued
// (max_queue_per_client) and running on every channel; no bound where
// max_queue_per_client sets none (0).
func maxBodiesPerClient(opts Options) int {
	if opts.MaxQueuePerClient <= 0 {
		return math.MaxInt
	}
	return opts.MaxQueuePerClient + max(opts.Workers, opts.MaxWorkers)*max(opts.Threads, 1)
}

// Options are the pool's options.
func (p *Pool) Options() *Options { return &p.opts }

// Logger is the pool's logger (with the app's name).
func (p *Pool) Logger() *zap.Logger { return p.logger }

// Context is cancelled when the pool stops.
func (p *Pool) Context() context.Context { return p.ctx }

// Start runs prepare (the adapter's steps before launch: settings,
// checks, before_start), which returns the processes' environment, then
// launches the workers and waits until all are ready. It runs once;
// later calls return the first result. A failure fails the pool.
func (p *Pool) Start(prepare func() (env []string, err error)) error {
	p.startOnce.Do(func() {
		p.startErr = panics.Call(p.logger, "starting the pool", func() error { return p.start(prepare) })
		if p.startErr != nil {
			p.mu.Lock()
			p.state, p.lastError = supervisor.Failed, p.startErr.Error()
			p.failWaitersLocked()
			p.mu.Unlock()
		}
	})
	return p.startErr
}

// Refuse fails a pool that will never start (its config was refused):
// a later Start returns err, and requests waiting for it fail at once.
// A pool that was started is not affected.
func (p *Pool) Refuse(err error) {
	p.startOnce.Do(func() {
		p.startErr = err
		p.mu.Lock()
		p.state, p.lastError = supervisor.Failed, err.Error()
		p.failWaitersLocked()
		p.mu.Unlock()
	})
}

// Stopped is closed once the pool has stopped every worker (Destruct):
// Hearth holds the app's instance lock until then.
func (p *Pool) Stopped() <-chan struct{} { return p.stopped }

func (p *Pool) start(prepare func() ([]string, error)) error {
	env, err := prepare()
	if err != nil {
		return err
	}
	p.env = env
	if p.opts.Preload {
		if _, err := p.liveForkServer(); err != nil {
			return fmt.Errorf("starting the preload fork server: %w", err)
		}
	}
	workers := make([]*worker, p.opts.Workers)
	errs := make([]error, p.opts.Workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			workers[i], errs[i] = p.spawnWorker() // a panic in it is its error
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
	if p.state != supervisor.Starting { // stopped while starting
		p.mu.Unlock()
		for _, w := range workers {
			w.stop(time.Second)
		}
		return errPoolStopped
	}
	p.state = supervisor.Running
	for _, w := range workers {
		w.replica = p.newReplicaLocked()
		w.rss = residentBytes(w.proc.Pid())
		w.serviceRSS = w.rss
		p.addWorkerLocked(w)
	}
	p.mu.Unlock()
	for _, w := range workers {
		p.loops.Add(1)
		go p.keep(w)
	}
	p.loops.Add(1)
	go func() {
		defer p.loops.Done()
		panics.Keep(p.logger, "watching the pool (memory, idle workers)", p.ctx.Done(), p.monitor)
	}()
	if len(p.opts.Watch) > 0 {
		p.loops.Add(1)
		go func() {
			defer p.loops.Done()
			panics.Keep(p.logger, "watching the app's files", p.ctx.Done(), p.watchFiles)
		}()
	}
	p.logger.Info("worker pool ready", zap.Int("workers", len(workers)), zap.Int("threads", p.opts.Threads))
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

// Stop stops the pool: it takes no new request, serves those running or
// queued (for up to stop_timeout), then stops its workers; Stopped is
// closed then. In the background (a reload, so the switch is not held
// up), Stop returns at once.
func (p *Pool) Stop(inBackground bool) {
	p.mu.Lock()
	if p.state == supervisor.Starting || p.state == supervisor.Running {
		p.state = supervisor.Draining
	}
	p.draining.Store(true)
	p.mu.Unlock()
	if inBackground {
		panics.Go(p.logger, "stopping the pool", p.drainAndStop)
	} else {
		p.drainAndStop()
	}
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
		case <-time.After(p.opts.StopTimeout):
			p.logger.Warn("requests still in flight at stop_timeout; stopping workers anyway", zap.Duration("stop_timeout", p.opts.StopTimeout))
		}
	}
	p.cancel()
	p.loops.Wait()
	p.mu.Lock()
	p.state = supervisor.Stopped
	p.failWaitersLocked()
	workers := append(p.workers, p.retiring...)
	p.workers, p.retiring, p.idle = nil, nil, nil
	for _, w := range workers {
		if w.drainTimer != nil {
			w.drainTimer.Stop()
		}
		w.state = workerStopping // (a request it cuts off does not count it as restarted)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		panics.Go(p.logger, "stopping a worker", func() {
			defer wg.Done()
			w.stop(10 * time.Second)
		})
	}
	wg.Wait()
	p.stopForkServers()
	if len(workers) > 0 {
		p.logger.Info("worker pool stopped", zap.Int("workers", len(workers)))
	}
	close(p.stopped)
}

// idleLocked reports whether no request is running or waiting.
func (p *Pool) idleLocked() bool {
	return p.busyChannels == 0 && len(p.waiters) == 0 && p.entered.Load() == 0
}

// Enter counts a request its handler has begun for the pool (reading its
// body, which comes before the queue) until Leave: a pool a reload
// replaced drains them too (for up to stop_timeout), where an upload under
// way at the reload got 503 from the stopped pool once read.
func (p *Pool) Enter() { p.entered.Add(1) }

// Leave ends what Enter counted.
func (p *Pool) Leave() {
	if p.entered.Add(-1) == 0 && p.draining.Load() {
		p.mu.Lock()
		p.noteDrainLocked()
		p.mu.Unlock()
	}
}

// Pause holds every new request in the queue (queue_timeout still
// applies: past it a request gets 503) and returns once no request runs
// on a worker, or with ctx's error (still paused: Resume ends it). The
// workers stay up; a Restart while paused replaces them, and the new ones
// take no request either until Resume. It is how a database is restored
// with no request touching it.
func (p *Pool) Pause(ctx context.Context) error {
	p.mu.Lock()
	if !p.state.Serving() {
		p.mu.Unlock()
		return fmt.Errorf("app %s is %s, %w", p.opts.Name, p.state, supervisor.ErrNotRunning)
	}
	p.paused = true
	idle := make(chan struct{})
	if p.busyChannels == 0 {
		close(idle)
	} else {
		p.pauseIdle = idle
	}
	p.mu.Unlock()
	select {
	case <-idle:
		p.logger.Info("paused: requests wait in the queue")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("app %s: requests still running: %w", p.opts.Name, ctx.Err())
	}
}

// Resume ends a Pause: the waiting requests get the free channels, in
// their turns.
func (p *Pool) Resume() {
	p.mu.Lock()
	p.paused, p.pauseIdle = false, nil
	handOffs := p.handOutLocked()
	if len(p.waiters) > 0 {
		p.growLocked()
	}
	p.mu.Unlock()
	for _, h := range handOffs {
		p.handOff(h.channel, h.waiter, nil)
	}
	p.logger.Info("resumed", zap.Int("handed_over", len(handOffs)))
}

// noteDrainLocked wakes a draining pool once it is idle, and a pausing
// one once no request runs.
func (p *Pool) noteDrainLocked() {
	if p.pauseIdle != nil && p.busyChannels == 0 {
		close(p.pauseIdle)
		p.pauseIdle = nil
	}
	if p.drained != nil && p.idleLocked() {
		close(p.drained)
		p.drained = nil
	}
}

// restartReasons are why workers get replaced, as counted in status.
var restartReasons = []string{"crash", "timeout", "max_requests", "memory", "lifetime", "reload", "scale"}

// Status is a pool's state, for GET /hearth/apps.
type Status struct {
	Name          string         `json:"name"`
	App           string         `json:"app"`
	Dir           string         `json:"dir"`
	State         string         `json:"state"`
	Workers       []workerStatus `json:"workers"`
	Threads       int            `json:"threads"`
	MinWorkers    int            `json:"min_workers"`
	MaxWorkers    int            `json:"max_workers"`
	Queue         int            `json:"queue"`
	Pipeline      string         `json:"pipeline,omitempty"`
	Pipelined     int64          `json:"pipelined_requests"`
	WebSockets    *int64         `json:"websockets,omitempty"`     // ASGI: open or opening
	MaxWebSockets int            `json:"max_websockets,omitempty"` // ASGI: their limit (longLivedLimitLocked)
	Streams       *int64         `json:"streams,omitempty"`        // ASGI: streamed responses under way
	MaxStreams    int            `json:"max_streams,omitempty"`    // ASGI: their limit
	// MaxWebSocketsShared and MaxStreamsShared say the kind's limit
	// bounds WebSockets and streamed responses together (the default:
	// half the channels), not the kind alone
	MaxWebSocketsShared bool `json:"max_websockets_shared,omitempty"`
	MaxStreamsShared    bool `json:"max_streams_shared,omitempty"`
	// MaxWebSocketsPerClient and MaxStreamsPerClient are how many of
	// those one client may hold (openPerClientLimit)
	MaxWebSocketsPerClient int            `json:"max_websockets_per_client,omitempty"`
	MaxStreamsPerClient    int            `json:"max_streams_per_client,omitempty"`
	Restarts               map[string]int `json:"restarts"`
	ConsecutiveFailures    int            `json:"consecutive_failures"`
	BackoffUntil           *time.Time     `json:"backoff_until,omitempty"`
	LastError              string         `json:"last_error,omitempty"`
	ForkServerPid          int            `json:"fork_server_pid,omitempty"`
}

// Status reports the pool's state.
func (p *Pool) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{
		Name: p.opts.Name, App: p.opts.App, Dir: p.opts.Dir, State: string(p.state),
		Workers: []workerStatus{}, Threads: p.opts.Threads, Queue: len(p.waiters) + p.pipelined,
		MinWorkers: p.minWorkers, MaxWorkers: p.maxWorkers, Pipelined: p.pipelinedTotal,
		Restarts: map[string]int{}, ConsecutiveFailures: p.failures, LastError: p.lastError,
	}
	now := time.Now()
	for _, w := range p.workers {
		st.Workers = append(st.Workers, w.status(now))
	}
	for _, w := range p.retiring {
		st.Workers = append(st.Workers, w.status(now))
	}
	if p.forkServer != nil {
		st.ForkServerPid = p.forkServer.proc.Pid()
	}
	if !p.opts.ASGI() {
		st.Pipeline = p.opts.Pipeline
	} else {
		webSockets, streams := p.longLived[webSocket].Load(), p.longLived[streamedResponse].Load()
		st.WebSockets, st.Streams = &webSockets, &streams
		st.MaxWebSockets, st.MaxWebSocketsShared = p.longLivedLimitLocked(webSocket)
		st.MaxStreams, st.MaxStreamsShared = p.longLivedLimitLocked(streamedResponse)
		st.MaxWebSocketsPerClient = p.opts.openPerClientLimit(st.MaxWebSockets)
		st.MaxStreamsPerClient = p.opts.openPerClientLimit(st.MaxStreams)
	}
	for _, reason := range restartReasons {
		st.Restarts[reason] = p.restarts[reason]
	}
	if time.Now().Before(p.backoff) {
		b := p.backoff
		st.BackoffUntil = &b
	}
	return st
}

// Running reports whether the pool serves the current config.
func (p *Pool) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state == supervisor.Running
}

// Starting reports whether the pool is starting: before_start, the
// import, the first workers.
func (p *Pool) Starting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state == supervisor.Starting
}
