package python

import (
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

// seat is one place in the pool, held by one worker at a time: when the
// worker exits, is recycled or restarted, the next one takes the seat.
//
// Seats are how many workers the pool should have: a seat exists (in the
// pool's seatList) from the moment it is decided, at start or when the
// pool grows, through every replacement of its worker, until it leaves
// (scale down) or the pool stops. Growth, scaling and shrinking count
// seats (seatCountLocked), never the workers in service at the moment,
// which are one fewer while a crashed worker's replacement starts.
type seat struct {
	recycle chan recycleRequest
	leave   chan struct{} // closed to remove the seat (scale down)
	leaving bool          // guarded by the pool's mutex
}

func newSeat() *seat {
	return &seat{recycle: make(chan recycleRequest, 1), leave: make(chan struct{})}
}

// newSeatLocked creates a seat and counts it in the pool at once,
// before its worker is spawned.
func (p *Pool) newSeatLocked() *seat {
	st := newSeat()
	p.seatList = append(p.seatList, st)
	return st
}

// seatCountLocked is the number of workers the pool is meant to have now:
// its seats that are not leaving, whether their worker serves, starts
// (the pool grows) or is being replaced (it crashed, or is recycled).
func (p *Pool) seatCountLocked() int {
	n := 0
	for _, st := range p.seatList {
		if !st.leaving {
			n++
		}
	}
	return n
}

// leaveLocked makes the seat leave: its worker retires (once it is in
// service) and the seat ends.
func (st *seat) leaveLocked() bool {
	if st.leaving {
		return false
	}
	st.leaving = true
	close(st.leave)
	return true
}

// recycleRequest asks a seat to replace its worker: spawn the replacement,
// wait until it is ready, then retire the old worker once its requests
// are done. If worker is set, the request is dropped when that worker has
// already left the seat. done, if set, receives the outcome.
type recycleRequest struct {
	reason string
	worker *worker
	done   chan error
}

// requestRecycle asks (once) for this worker's replacement; the pool's
// mutex must be held.
func (w *worker) requestRecycle(reason string) {
	if w.recycling || w.retired || w.seat == nil {
		return
	}
	select {
	case w.seat.recycle <- recycleRequest{reason: reason, worker: w}:
		w.recycling = true
	default:
	}
}

// removeSeatLocked asks w's seat to retire w and end (scale down).
func (w *worker) removeSeatLocked() bool {
	if w.seat == nil || w.seat.leaving || w.retired {
		return false
	}
	return w.seat.leaveLocked()
}

// finishDrain stops a retired worker once its last request is done; the
// pool's mutex must be held.
func (w *worker) finishDrain() {
	if w.stopping {
		return
	}
	w.stopping = true
	go w.stop(10 * time.Second)
}

// keepSeat keeps one worker running: it replaces the worker when it exits
// (with exponential backoff while replacements fail), recycles it on
// request (spawn first, retire after), at max_lifetime, and ends the seat
// when the pool scales down or stops.
func (p *Pool) keepSeat(w *worker) {
	defer p.seats.Done()
	st := w.seat // already in seatList (newSeatLocked)
	defer func() {
		p.mu.Lock()
		p.seatList = without(p.seatList, st)
		p.mu.Unlock()
	}()
	backoff := supervisor.DefaultBackoff()
	// a panic in one turn is logged and the seat goes on with its worker
	panics.Keep(p.logger, "supervising a worker", p.ctx.Done(), func() {
		for {
			lifetime := p.lifetimeTimer(w)
			select {
			case <-p.ctx.Done():
				lifetime.Stop()
				return
			case <-st.leave:
				lifetime.Stop()
				p.mu.Lock()
				p.retireLocked(w, "scale", true)
				p.mu.Unlock()
				return
			case req := <-st.recycle:
				lifetime.Stop()
				if req.worker != nil && req.worker != w {
					continue // about a worker that already left
				}
				w = p.recycleWorker(w, req)
			case <-lifetime.C:
				w = p.recycleWorker(w, recycleRequest{reason: "lifetime"})
			case <-w.proc.Done():
				lifetime.Stop()
				if w = p.replaceExited(w, &backoff); w == nil {
					return
				}
			}
		}
	})
}

// lifetimeTimer fires when w reaches max_lifetime (plus up to 10% jitter,
// so workers started together do not recycle together); it never fires
// when max_lifetime is not set.
func (p *Pool) lifetimeTimer(w *worker) *time.Timer {
	if p.spec.MaxLifetime <= 0 {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	jitter := time.Duration(rand.Int64N(int64(p.spec.MaxLifetime)/10 + 1))
	return time.NewTimer(time.Until(w.proc.StartedAt().Add(p.spec.MaxLifetime + jitter)))
}

// recycleWorker replaces w by a new worker, spawned and ready before w
// stops taking requests. If the replacement cannot start, w stays.
func (p *Pool) recycleWorker(w *worker, req recycleRequest) *worker {
	next, err := p.spawnWorker()
	if err == nil && !p.adopt(next, w, req.reason) {
		err = errPoolStopped
	}
	if req.done != nil {
		req.done <- err
	}
	if err != nil {
		p.logger.Error("could not start a replacement worker; the old one keeps serving",
			zap.String("reason", req.reason), zap.Int("pid", w.proc.Pid()), zap.Error(err))
		p.mu.Lock()
		p.lastError = err.Error()
		w.recycling = false
		p.mu.Unlock()
		return w
	}
	p.logger.Info("worker recycled", zap.String("reason", req.reason),
		zap.Int("old_pid", w.proc.Pid()), zap.Int("new_pid", next.proc.Pid()))
	return next
}

// adopt puts next into service and, if old is set, retires old gracefully.
// It returns false (and stops next) if the pool is stopping.
func (p *Pool) adopt(next, old *worker, reason string) bool {
	rss := residentBytes(next.proc.Pid())
	p.mu.Lock()
	next.rss = rss
	if p.state != supervisor.Running && p.state != supervisor.Draining {
		p.mu.Unlock()
		next.stop(time.Second)
		return false
	}
	if old != nil {
		next.seat = old.seat
	} else if next.seat == nil {
		next.seat = newSeat()
	}
	p.addWorkerLocked(next)
	if old != nil {
		p.retireLocked(old, reason, true)
	}
	p.mu.Unlock()
	return true
}

// replaceExited handles a worker that exited: it starts a replacement,
// backing off while replacements fail. It returns nil if the pool stops.
func (p *Pool) replaceExited(w *worker, backoff *supervisor.Backoff) *worker {
	lived := time.Since(w.proc.StartedAt())
	p.mu.Lock()
	reason := w.exitReason
	if reason == "" {
		reason = "crash"
	}
	p.retireLocked(w, reason, false)
	p.mu.Unlock()
	p.logger.Error("worker exited; replacing it", zap.String("reason", reason),
		zap.Int("pid", w.proc.Pid()), zap.String("exit", w.proc.ExitDescription()), zap.Duration("uptime", lived))
	delay := time.Duration(0)
	if reason == "crash" {
		delay = backoff.Failed(lived)
	}
	for {
		if !p.sleepBackoff(delay, backoff.Failures()) {
			return nil
		}
		select {
		case <-w.seat.leave:
			return nil // scaled down meanwhile: the seat ends with its worker
		default:
		}
		next, err := p.spawnWorker()
		if err == nil {
			next.seat = w.seat
			if !p.adopt(next, nil, "") {
				return nil
			}
			p.mu.Lock()
			p.failures, p.backoff = 0, time.Time{}
			p.mu.Unlock()
			return next
		}
		delay = backoff.Failed(0)
		p.logger.Error("replacement worker failed to start", zap.Error(err),
			zap.Int("consecutive_failures", backoff.Failures()), zap.Duration("retry_in", delay))
		p.mu.Lock()
		p.lastError = err.Error()
		p.mu.Unlock()
	}
}

// sleepBackoff waits delay, reporting it in status; false if the pool stops.
func (p *Pool) sleepBackoff(delay time.Duration, failures int) bool {
	if delay <= 0 {
		return p.ctx.Err() == nil
	}
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

// addWorkerLocked puts w's slots into service.
func (p *Pool) addWorkerLocked(w *worker) {
	if p.spec.MaxRequests > 0 {
		w.limit = int64(p.spec.MaxRequests)
		if p.spec.Jitter > 0 {
			w.limit += rand.Int64N(int64(p.spec.Jitter) + 1)
		}
	}
	w.lastUsed = time.Now()
	p.workers = append(p.workers, w)
	for _, s := range w.slots {
		if next := p.giveLocked(s); next != nil {
			next.ch <- s // the waiter sends its request itself
		}
	}
}

// retireLocked takes w out of service and counts the restart reason.
// Gracefully, w finishes its requests in flight and then stops; otherwise
// its channels are closed at once (it crashed, hung or broke).
func (p *Pool) retireLocked(w *worker, reason string, graceful bool) {
	if w.retired {
		return
	}
	w.retired = true
	p.restarts[reason]++
	restartsTotal.WithLabelValues(p.spec.Name, reason).Inc()
	p.idle = slices.DeleteFunc(p.idle, func(s *slot) bool { return s.worker == w })
	p.workers = without(p.workers, w)
	if !graceful {
		w.stopping = true
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
	}
}

// growLocked adds one worker to an autoscaled pool whose requests queue,
// up to max_workers, one at a time. It counts seats, not workers in
// service: a seat whose worker crashed and is being replaced still counts
// (counting workers, a fixed pool of 2 grew to 3 when requests queued while
// a killed worker's replacement started).
func (p *Pool) growLocked() {
	if p.state != supervisor.Running || p.growing > 0 || p.seatCountLocked() >= p.maxWorkers {
		return
	}
	p.addSeatLocked(func(w *worker) {
		p.logger.Info("scaled up: requests were waiting", zap.Int("pid", w.proc.Pid()))
		p.mu.Lock()
		if len(p.waiters) > 0 {
			p.growLocked()
		}
		p.mu.Unlock()
	})
}

// addSeatLocked starts one more worker, in a seat of its own, in the
// background; started (if set) runs once it serves.
func (p *Pool) addSeatLocked(started func(*worker)) {
	st := p.newSeatLocked()
	p.growing++
	p.seats.Add(1)
	panics.Go(p.logger, "adding a worker", func() {
		supervised := false
		defer func() { // also after a panic: the seat is not left counted
			if !supervised {
				p.mu.Lock()
				st.leaveLocked()
				p.seatList = without(p.seatList, st)
				p.mu.Unlock()
				p.seats.Done()
			}
		}()
		w, err := p.spawnWorker()
		p.mu.Lock()
		p.growing--
		p.mu.Unlock()
		if err == nil {
			w.seat = st
		}
		if err != nil || !p.adopt(w, nil, "") {
			if err != nil {
				p.logger.Error("could not add a worker", zap.Error(err))
			}
			return
		}
		if started != nil {
			_ = panics.Call(p.logger, "announcing a new worker", func() error { started(w); return nil })
		}
		supervised = true
		p.keepSeat(w)
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
	if p.seatCountLocked() <= p.minWorkers {
		return false
	}
	var victim *worker
	for _, w := range p.workers {
		if w.busy == 0 && !w.seat.leaving && time.Since(w.lastUsed) >= idleFor &&
			(victim == nil || w.lastUsed.Before(victim.lastUsed)) {
			victim = w
		}
	}
	return victim != nil && victim.removeSeatLocked()
}

// Scale sets the number of workers: more are started at once, extra ones
// retire once idle. An autoscaled pool keeps scaling within its bounds.
func (p *Pool) Scale(n int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != supervisor.Running {
		return fmt.Errorf("app %s is %s, not running", p.spec.Name, p.state)
	}
	if p.spec.MaxWorkers > 0 {
		if n < p.spec.Workers || n > p.spec.MaxWorkers {
			return fmt.Errorf("app %s autoscales between %d and %d workers; scale it within those bounds or change `workers` in the Caddyfile", p.spec.Name, p.spec.Workers, p.spec.MaxWorkers)
		}
	} else {
		p.minWorkers, p.maxWorkers = n, n
	}
	for p.seatCountLocked() < n {
		p.addSeatLocked(nil)
	}
	for excess := p.seatCountLocked() - n; excess > 0; excess-- {
		if !p.shrinkLocked(0) {
			// a seat whose worker is busy or starting: the worker leaves
			// when its request is done, or as soon as it is ready
			for i := len(p.seatList) - 1; i >= 0; i-- {
				if p.seatList[i].leaveLocked() {
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
		return fmt.Errorf("app %s is %s, not running", p.spec.Name, p.state)
	}
	seats := append([]*seat(nil), p.seatList...)
	p.mu.Unlock()
	if p.spec.Preload {
		// load the new code once, in a new template, before any worker
		old, err := p.replaceTemplate()
		if err != nil {
			return fmt.Errorf("restarting app %s: %w", p.spec.Name, err)
		}
		if old != nil {
			defer old.stop()
		}
	}
	for _, st := range seats {
		done := make(chan error, 1)
		select {
		case st.recycle <- recycleRequest{reason: "reload", done: done}:
		case <-st.leave:
			continue // scaled away meanwhile
		case <-p.ctx.Done():
			return errPoolStopped
		}
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("restarting app %s: %w", p.spec.Name, err)
			}
		case <-st.leave:
			// scaled away, or its first worker never started: nobody
			// may answer, and no worker of that seat is left to restart
		case <-p.ctx.Done():
			return errPoolStopped
		}
	}
	return nil
}
