package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

const sigKill = syscall.SIGKILL

// A pool's workers are held by replicas (supervisor.Replica): a replica
// exists (in the pool's replicas) from the moment it is decided, at start
// or when the pool grows, through every replacement of its worker, until
// it leaves (scale down) or the pool stops. Growth, scaling and shrinking
// count replicas (replicaCountLocked), never the workers in service at the
// moment, which are one fewer while a crashed worker's replacement starts.

// newReplicaLocked creates a replica and counts it in the pool at once,
// before its worker is spawned.
func (p *Pool) newReplicaLocked() *supervisor.Replica[*worker] {
	r := supervisor.NewReplica[*worker]()
	p.replicas = append(p.replicas, r)
	return r
}

// replicaCountLocked is the number of workers the pool is meant to have
// now: its replicas that are not leaving, whether their worker serves,
// starts (the pool grows) or is being replaced (it crashed, or is
// recycled).
func (p *Pool) replicaCountLocked() int {
	n := 0
	for _, r := range p.replicas {
		if !r.Leaving() {
			n++
		}
	}
	return n
}

// requestRecycle asks (once) for this worker's replacement; the pool's
// mutex must be held.
func (w *worker) requestRecycle(reason string) {
	if w.state != workerServing || w.replica == nil {
		return
	}
	if w.replica.RequestRecycle(reason, w) {
		w.state = workerRecycling
	}
}

// leaveLocked asks w's replica to retire w and end (scale down).
func (w *worker) leaveLocked() bool {
	if w.replica == nil || w.replica.Leaving() || w.retired() {
		return false
	}
	return w.replica.LeaveLocked()
}

// finishDrain stops a retired worker once its last request is done; the
// pool's mutex must be held.
func (w *worker) finishDrain() {
	if w.state == workerStopping {
		return
	}
	if w.drainTimer != nil {
		w.drainTimer.Stop()
	}
	w.state = workerStopping
	go w.stop(10 * time.Second)
}

// Done is closed once the worker's process has exited (supervisor.Occupant).
func (w *worker) Done() <-chan struct{} { return w.proc.Done() }

// StartedAt is when the worker's process started (supervisor.Occupant).
func (w *worker) StartedAt() time.Time { return w.proc.StartedAt() }

// keep runs w's replica until it leaves or the pool stops.
func (p *Pool) keep(w *worker) {
	defer p.loops.Done()
	r := w.replica // already in replicas (newReplicaLocked)
	defer func() {
		p.mu.Lock()
		p.replicas = without(p.replicas, r)
		p.mu.Unlock()
	}()
	r.Keep(p.ctx, p.logger, p.hooks(), w)
}

// hooks are what the pool does at each step of a replica's life.
func (p *Pool) hooks() *supervisor.Hooks[*worker] {
	return &supervisor.Hooks[*worker]{
		Start: p.spawnWorker,
		Adopt: p.adopt,
		Exited: func(w *worker) string {
			reason := p.retireExited(w)
			p.logger.Error("worker exited; replacing it", zap.String("reason", reason),
				zap.Int("pid", w.proc.Pid()), zap.String("exit", w.proc.ExitDescription()), zap.Duration("uptime", time.Since(w.proc.StartedAt())))
			return reason
		},
		Leave: func(w *worker) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.retireLocked(w, "scale", true)
		},
		Failed: func(old *worker, reason string, err error, retryIn time.Duration) {
			p.recycleFailed(old, err)
			if old != nil {
				p.logger.Error("could not start a replacement worker; the old one keeps serving",
					zap.String("reason", reason), zap.Int("pid", old.proc.Pid()), zap.Error(err))
			} else {
				p.logger.Error("replacement worker failed to start", zap.Error(err), zap.Duration("retry_in", retryIn))
			}
		},
		Waiting: func(delay time.Duration, failures int) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.failures, p.backoff = failures, time.Time{}
			if delay > 0 {
				p.backoff = time.Now().Add(delay)
			}
		},
		MaxLifetime: p.opts.MaxLifetime,
	}
}

// putInService puts next into service (retiring old, if set) unless the
// pool is stopping; it takes the pool's mutex.
func (p *Pool) putInService(r *supervisor.Replica[*worker], next, old *worker, reason string) bool {
	rss := residentBytes(next.proc.Pid())
	p.mu.Lock()
	defer p.mu.Unlock()
	next.rss, next.serviceRSS = rss, rss
	if p.state != supervisor.Running && p.state != supervisor.Draining {
		return false
	}
	next.replica = r
	p.addWorkerLocked(next)
	if old != nil {
		p.retireLocked(old, reason, true)
	}
	return true
}

// retireExited takes a worker that exited out of service and returns
// why it ended: the reason Hearth ended it, or a crash.
func (p *Pool) retireExited(w *worker) string {
	p.mu.Lock()
	defer p.mu.Unlock() // also if counting panics: a held lock would stop the pool
	reason := w.exitReason
	if reason == "" {
		reason = "crash"
	}
	p.retireLocked(w, reason, false)
	return reason
}

// recycleFailed records why a worker could not start; a worker whose
// recycle failed serves on.
func (p *Pool) recycleFailed(old *worker, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastError = err.Error()
	if old != nil && old.state == workerRecycling {
		old.state = workerServing
	}
}

// adopt puts next into service in replica r and, if old is set, retires
// old gracefully. It returns false (and stops next) if the pool is
// stopping.
func (p *Pool) adopt(r *supervisor.Replica[*worker], next, old *worker, reason string) bool {
	if !p.putInService(r, next, old, reason) {
		next.stop(time.Second)
		return false
	}
	if old != nil {
		p.logger.Info("worker recycled", zap.String("reason", reason),
			zap.Int("old_pid", old.proc.Pid()), zap.Int("new_pid", next.proc.Pid()))
	}
	return true
}

// addWorkerLocked puts w's channels into service.
func (p *Pool) addWorkerLocked(w *worker) {
	if p.opts.MaxRequests > 0 {
		w.limit = int64(p.opts.MaxRequests)
		if p.opts.MaxRequestsJitter > 0 {
			w.limit += rand.Int64N(int64(p.opts.MaxRequestsJitter) + 1)
		}
	}
	w.lastUsed = time.Now()
	p.workers = append(p.workers, w)
	for _, s := range w.channels {
		if next := p.giveLocked(s); next != nil {
			next.ch <- grant{channel: s} // the waiter sends its request itself
		}
	}
}

// retireLocked takes w out of service and counts the restart reason.
// Gracefully, w finishes its requests in flight and then stops; otherwise
// its channels are closed at once (it crashed, hung or broke).
func (p *Pool) retireLocked(w *worker, reason string, graceful bool) {
	if w.retired() {
		return
	}
	w.state = workerRetired
	p.restarts[reason]++
	restartsTotal.WithLabelValues(p.opts.Name, reason).Inc()
	p.idle = slices.DeleteFunc(p.idle, func(s *channel) bool { return s.worker == w })
	p.workers = without(p.workers, w)
	if !graceful {
		w.state = workerStopping
		w.close()
		return
	}
	p.retiring = append(p.retiring, w)
	panics.Go(p.logger, "retiring a worker", func() {
		<-w.proc.Done()
		p.mu.Lock()
		p.retiring = without(p.retiring, w)
		p.mu.Unlock()
	})
	if w.busy == 0 {
		w.finishDrain()
		return
	}
	// A request that nothing ends (a WebSocket, an event stream: an
	// exchange without a deadline) kept a retired worker, and so one more
	// process, for good: at each recycling (a client holding a WebSocket
	// per worker and sending max_requests requests piled up processes),
	// and at each restart or reload, whose old code then went on serving
	// those clients for as long as they stayed (a deployed fix did not
	// reach them). A retired worker holding such a request has
	// stop_timeout to finish, as when the pool stops (Gunicorn's
	// graceful_timeout), and no more of them wait at once than the pool
	// may have workers (the one retired longest stops first). Requests
	// with a deadline end by it.
	w.retiredFor = reason
	w.drainTimer = time.AfterFunc(p.opts.StopTimeout, func() { p.stopDraining(w, "its stop_timeout passed") })
	var held []*worker
	for _, r := range p.retiring {
		if r.state == workerRetired && r.holdsUnboundedLocked() {
			held = append(held, r)
		}
	}
	// (counted against the most workers the pool is configured or scaled
	// to: a scale-down has already lowered its size)
	for _, r := range held[:max(0, len(held)-max(1, p.maxWorkers, p.opts.Workers, p.opts.MaxWorkers))] {
		p.stopDrainingLocked(r, "more retired workers held WebSockets or streams than the pool has workers")
	}
}

// holdsUnboundedLocked says a request in flight on w has no deadline.
func (w *worker) holdsUnboundedLocked() bool {
	for _, s := range w.channels {
		if s.path != "" && s.unbounded.Load() {
			return true
		}
	}
	return false
}

// stopDraining stops w, retired with requests in flight, if it has not
// finished them yet and one of them has no deadline (why says what ended
// its wait).
func (p *Pool) stopDraining(w *worker, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopDrainingLocked(w, why) {
		// its requests have deadlines for now, but one may lose its
		// deadline later (an ASGI stream's head, a WebSocket its app
		// accepts late): looked at again
		w.drainTimer.Reset(time.Second)
	}
}

// stopDrainingLocked stops w (see stopDraining); it reports that w was
// not stopped only because its requests all have deadlines for now.
func (p *Pool) stopDrainingLocked(w *worker, why string) (bounded bool) {
	select {
	case <-w.proc.Done():
		return false // it ended meanwhile (a crash): nothing to stop
	default:
	}
	if w.state != workerRetired {
		return false // finished, or already stopping
	}
	if !w.holdsUnboundedLocked() {
		return true // its requests end by their deadlines
	}
	p.logger.Warn("stopping a retired worker whose WebSockets or streams have not ended (their clients are cut off, and reconnect to the new workers): "+why,
		zap.Int("pid", w.proc.Pid()), zap.String("retired_for", w.retiredFor), zap.Int("requests_in_flight", w.busy), zap.Duration("stop_timeout", p.opts.StopTimeout))
	w.finishDrain()
	return false
}

// growLocked adds one worker to an autoscaled pool whose requests queue,
// up to max_workers, one at a time. It counts replicas, not workers in
// service: a replica whose worker crashed and is being replaced still
// counts (counting workers, a fixed pool of 2 grew to 3 when requests
// queued while a killed worker's replacement started).
func (p *Pool) growLocked() {
	if p.paused || p.state != supervisor.Running || p.growing > 0 || p.replicaCountLocked() >= p.maxWorkers {
		return
	}
	p.addReplicaLocked(func(w *worker) {
		p.logger.Info("scaled up: requests were waiting", zap.Int("pid", w.proc.Pid()))
		p.mu.Lock()
		if len(p.waiters) > 0 {
			p.growLocked()
		}
		p.mu.Unlock()
	})
}

// addReplicaLocked starts one more worker, in a replica of its own, in the
// background; started (if set) runs once it serves.
func (p *Pool) addReplicaLocked(started func(*worker)) {
	r := p.newReplicaLocked()
	p.growing++
	p.loops.Add(1)
	panics.Go(p.logger, "adding a worker", func() {
		supervised := false
		defer func() { // also after a panic: the replica is not left counted
			if !supervised {
				p.mu.Lock()
				r.LeaveLocked()
				p.replicas = without(p.replicas, r)
				p.mu.Unlock()
				p.loops.Done()
			}
		}()
		w, err := p.spawnWorker()
		p.mu.Lock()
		p.growing--
		p.mu.Unlock()
		if err != nil || !p.adopt(r, w, nil, "") {
			if err != nil {
				p.logger.Error("could not add a worker", zap.Error(err))
			}
			return
		}
		if started != nil {
			_ = panics.Call(p.logger, "announcing a new worker", func() error { started(w); return nil })
		}
		supervised = true
		p.keep(w)
	})
}

// without returns list without the element x (compared by identity).
func without[T comparable](list []T, x T) []T {
	if i := slices.Index(list, x); i >= 0 {
		return slices.Delete(list, i, i+1)
	}
	return list
}

// shrinkLocked retires the worker idle the longest, if the pool has more
// than it needs; reason is counted as a restart reason.
func (p *Pool) shrinkLocked(idleFor time.Duration) bool {
	if p.replicaCountLocked() <= p.minWorkers {
		return false
	}
	var victim *worker
	for _, w := range p.workers {
		if w.busy == 0 && !w.replica.Leaving() && time.Since(w.lastUsed) >= idleFor &&
			(victim == nil || w.lastUsed.Before(victim.lastUsed)) {
			victim = w
		}
	}
	return victim != nil && victim.leaveLocked()
}

// Scale sets the number of workers: more are started at once, extra ones
// retire once idle. An autoscaled pool keeps scaling within its bounds.
func (p *Pool) Scale(n int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != supervisor.Running {
		return fmt.Errorf("app %s is %s, %w", p.opts.Name, p.state, supervisor.ErrNotRunning)
	}
	if n*max(p.opts.Threads, 1) > MaxChannels {
		return fmt.Errorf("app %s: %d workers of %d channels each would be %d channels, more than the %d a pool may have; scale to at most %d", p.opts.Name, n, p.opts.Threads, n*p.opts.Threads, MaxChannels, MaxChannels/max(p.opts.Threads, 1))
	}
	if p.opts.MaxWorkers > 0 {
		if n < p.opts.Workers || n > p.opts.MaxWorkers {
			return fmt.Errorf("app %s autoscales between %d and %d workers; scale it within those bounds or change `workers` in the Caddyfile", p.opts.Name, p.opts.Workers, p.opts.MaxWorkers)
		}
	} else {
		p.minWorkers, p.maxWorkers = n, n
	}
	for p.replicaCountLocked() < n {
		p.addReplicaLocked(nil)
	}
	for excess := p.replicaCountLocked() - n; excess > 0; excess-- {
		if !p.shrinkLocked(0) {
			// a replica whose worker is busy or starting: the worker
			// leaves when its request is done, or as soon as it is ready
			for i := len(p.replicas) - 1; i >= 0; i-- {
				if p.replicas[i].LeaveLocked() {
					break
				}
			}
		}
	}
	return nil
}

// Restart replaces every worker, one at a time, each replacement ready
// before its predecessor stops taking requests: a zero-downtime way to load
// new code. It stops at the first replacement that cannot start (the old
// workers keep serving) and returns why.
func (p *Pool) Restart() error {
	p.mu.Lock()
	if p.state != supervisor.Running {
		p.mu.Unlock()
		return fmt.Errorf("app %s is %s, %w", p.opts.Name, p.state, supervisor.ErrNotRunning)
	}
	replicas := slices.Clone(p.replicas)
	p.mu.Unlock()
	if p.opts.Preload {
		// load the new code once, in a new fork server, before any worker
		if err := p.replaceForkServer(); errors.Is(err, supervisor.ErrNotRunning) {
			return err
		} else if err != nil {
			return fmt.Errorf("restarting app %s: %w", p.opts.Name, err)
		}
	}
	running := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.state == supervisor.Running
	}
	switch err := supervisor.RecycleEach(p.ctx, replicas, "reload", running); {
	case errors.Is(err, supervisor.ErrNotRunning): // a reload took the pool out meanwhile: for the admin API, 409
		return fmt.Errorf("app %s stopped during its restart, %w", p.opts.Name, err)
	case err != nil:
		return fmt.Errorf("restarting app %s: %w", p.opts.Name, err)
	}
	return nil
}
