package supervisor

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
)

// Occupant is a process a Replica holds: a Python worker, a process
// upstream's instance.
type Occupant interface {
	comparable
	// Done is closed once the process has exited.
	Done() <-chan struct{}
	// StartedAt is when it started.
	StartedAt() time.Time
}

// Replica is one place in a group of identical processes. It holds one
// process at a time and keeps the place filled: when the process exits,
// Keep starts the next (backing off while they keep failing); asked to
// recycle, it starts the next one first and retires the old one once the
// next serves; asked to leave (the group shrinks), it retires its process
// and ends. A group is as big as its replicas, not as its processes: a
// replica whose process is being replaced still counts, so nothing grows
// the group to make up for it.
//
// One goroutine runs Keep for a replica, from its first process until it
// leaves or the group stops; what a group does at each step is in Hooks.
type Replica[T Occupant] struct {
	recycle chan recycleRequest[T]
	leave   chan struct{}
	leaving bool // guarded by the group's mutex
}

// NewReplica makes a replica; Keep runs it.
func NewReplica[T Occupant]() *Replica[T] {
	return &Replica[T]{recycle: make(chan recycleRequest[T], 1), leave: make(chan struct{})}
}

// Hooks are what a group does at each step of its replicas' lives. Keep
// calls them from the replica's goroutine; Start may take long (a process
// starting), the others should not.
type Hooks[T Occupant] struct {
	// Start starts a new process and waits until it is ready to serve.
	Start func() (T, error)
	// Adopt puts next into service in r. When old is set (recycling), it
	// retires old gracefully: it finishes its work, then stops; reason
	// names why (a restart reason). Adopt returns false if the group is
	// stopping, after stopping next.
	Adopt func(r *Replica[T], next, old T, reason string) bool
	// Exited takes a process that exited out of service and returns why
	// it ended (its restart reason): "crash" when nobody asked it to.
	// Only crashes are backed off before the next start.
	Exited func(old T) string
	// Leave retires the process of a replica that leaves (scale down).
	Leave func(old T)
	// Failed reports a process that could not start: while recycling old
	// (which keeps serving), or while replacing one that exited (old is
	// the zero value; Keep tries again after retryIn).
	Failed func(old T, reason string, err error, retryIn time.Duration)
	// Waiting reports that the next start waits delay after failures
	// consecutive failures; (0, 0) once a process started. Optional.
	Waiting func(delay time.Duration, failures int)
	// MaxLifetime recycles a process after it served that long (plus up
	// to a tenth more, so that processes started together do not recycle
	// together). 0: never.
	MaxLifetime time.Duration
	// Backoff is the restart policy; the zero value is DefaultBackoff.
	Backoff Backoff
}

// recycleRequest asks a replica to replace its process. If occupant is
// set, the request is dropped when that process has already left the
// replica. done, if set, receives the outcome.
type recycleRequest[T Occupant] struct {
	reason   string
	occupant T
	done     chan error
}

// ErrStopped is returned by Recycle when the group stops first.
var ErrStopped = errors.New("the group stopped")

// ErrNotRunning is the answer of a pool or group asked to restart, scale
// or pause while it is not running (starting, draining, stopped): a state
// it is in for now, which the admin API answers 409, not a failure.
var ErrNotRunning = errors.New("not running")

// RequestRecycle asks, without waiting, for occupant's replacement
// ("max_requests", "memory"…). It returns false if a request is already
// pending; Keep drops it if occupant is no longer the replica's.
func (r *Replica[T]) RequestRecycle(reason string, occupant T) bool {
	select {
	case r.recycle <- recycleRequest[T]{reason: reason, occupant: occupant}:
		return true
	default:
		return false
	}
}

// Recycle asks the replica to replace its process and waits: nil once the
// next one serves (or if the replica left meanwhile: nothing is left to
// replace), the error of a next one that could not start (the old one
// keeps serving), ErrStopped if ctx ends first.
func (r *Replica[T]) Recycle(ctx context.Context, reason string) error {
	done := make(chan error, 1)
	select {
	case r.recycle <- recycleRequest[T]{reason: reason, done: done}:
	case <-r.leave:
		return nil
	case <-ctx.Done():
		return ErrStopped
	}
	select {
	case err := <-done:
		return err
	case <-r.leave:
		// it left, or its process never started: no process of it is
		// left to replace
		return nil
	case <-ctx.Done():
		return ErrStopped
	}
}

// RecycleEach replaces the process of each replica in turn (Recycle),
// stopping at the first replacement that cannot start (its error). Once
// running reports that the group no longer runs, it returns
// ErrNotRunning: a reload stopped the group meanwhile, whichever of that
// stop's effects Recycle saw first (the replacement killed, the replica
// gone, ctx ended).
func RecycleEach[T Occupant](ctx context.Context, replicas []*Replica[T], reason string, running func() bool) error {
	for _, r := range replicas {
		err := r.Recycle(ctx, reason)
		if !running() || errors.Is(err, ErrStopped) {
			return ErrNotRunning
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// LeaveLocked makes the replica end: its process retires and Keep
// returns. It returns false if the replica was already leaving. The
// group's mutex must be held.
func (r *Replica[T]) LeaveLocked() bool {
	if r.leaving {
		return false
	}
	r.leaving = true
	close(r.leave)
	return true
}

// Leaving reports whether the replica is leaving; the group's mutex must
// be held.
func (r *Replica[T]) Leaving() bool { return r.leaving }

// Keep runs the replica with first as its process until it leaves (it
// retires its process) or ctx ends (the group stops its processes). A
// panic in a step is logged with its stack and the replica goes on with
// the process it last adopted.
func (r *Replica[T]) Keep(ctx context.Context, logger *zap.Logger, h *Hooks[T], first T) {
	backoff := h.Backoff
	if backoff == (Backoff{}) {
		backoff = DefaultBackoff()
	}
	current := first
	var none T
	var notBefore time.Time // no lifetime recycle before this, after one failed
	panics.Keep(logger, "supervising a process", ctx.Done(), func() {
		if current == none { // run again after a panic while replacing: replace on
			r.replace(ctx, h, &current, &backoff, backoff.Failed(0))
		}
		for current != none {
			lifetime := h.lifetimeTimer(current, notBefore)
			select {
			case <-ctx.Done():
				lifetime.Stop()
				return
			case <-r.leave:
				lifetime.Stop()
				h.Leave(current)
				return
			case req := <-r.recycle:
				lifetime.Stop()
				if ctx.Err() != nil { // stopped as the request came
					req.answer(ErrStopped)
					return
				}
				if req.occupant != none && req.occupant != current {
					continue // about a process that already left
				}
				r.recycleNow(ctx, logger, h, &current, req, &backoff)
			case <-lifetime.C:
				if !r.recycleNow(ctx, logger, h, &current, recycleRequest[T]{reason: "lifetime"}, &backoff) {
					notBefore = time.Now().Add(backoff.Failed(0)) // not at once again
				}
			case <-current.Done():
				lifetime.Stop()
				r.replace(ctx, h, &current, &backoff, h.exited(current, &backoff))
			}
		}
	})
}

// answer tells the requester the outcome, once.
func (req *recycleRequest[T]) answer(err error) {
	if req.done != nil {
		req.done <- err
		req.done = nil
	}
}

// errPanicked answers a recycle whose step panicked (the panic is logged).
var errPanicked = errors.New("internal error while recycling (a bug; the stack is in Caddy's log)")

// lifetimeTimer fires when p reaches MaxLifetime (with its jitter), not
// before notBefore; it never fires when MaxLifetime is not set.
func (h *Hooks[T]) lifetimeTimer(p T, notBefore time.Time) *time.Timer {
	if h.MaxLifetime <= 0 {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	life := h.MaxLifetime
	if jitter := time.Duration(rand.Int64N(int64(h.MaxLifetime)/10 + 1)); life <= math.MaxInt64-jitter {
		life += jitter // (a lifetime of centuries, plus its jitter, wrapped negative: recycled at once)
	}
	due := p.StartedAt().Add(life)
	if due.Before(notBefore) {
		due = notBefore
	}
	return time.NewTimer(time.Until(due))
}

// exited takes an exited process out of service and returns how long to
// wait before the next start: a crash is backed off.
func (h *Hooks[T]) exited(p T, backoff *Backoff) time.Duration {
	if h.Exited(p) == "crash" {
		return backoff.Failed(time.Since(p.StartedAt()))
	}
	return 0
}

// startResult is what a start in the background gave.
type startResult[T Occupant] struct {
	next T
	err  error
}

// recycleNow starts the next process and has it adopted in place of *cur,
// which retires; if the next cannot start, *cur stays. If *cur exits while
// the next starts, it is taken out of service at once (its crash counted),
// and the next, or the replacement loop if it failed, takes its place. It
// reports whether a next process serves.
func (r *Replica[T]) recycleNow(ctx context.Context, logger *zap.Logger, h *Hooks[T], cur *T, req recycleRequest[T], backoff *Backoff) bool {
	var none T
	old := *cur
	defer req.answer(errPanicked) // if a step panics; a no-op once answered
	started := make(chan startResult[T], 1)
	go func() {
		var res startResult[T]
		res.err = panics.Call(logger, "starting a process", func() (err error) {
			res.next, err = h.Start()
			return err
		})
		started <- res
	}()
	var res startResult[T]
	select {
	case res = <-started:
	case <-old.Done():
		delay := h.exited(old, backoff) // out of service now, not when the next is ready
		*cur = none
		res = <-started
		if res.err != nil {
			req.answer(res.err)
			h.Failed(none, "", res.err, delay)
			r.replace(ctx, h, cur, backoff, delay)
			return *cur != none
		}
		if !h.Adopt(r, res.next, none, "") {
			req.answer(ErrStopped)
			return false
		}
		*cur = res.next
		req.answer(nil)
		return true
	}
	if res.err == nil && !h.Adopt(r, res.next, old, req.reason) {
		res.err = ErrStopped
	}
	if res.err != nil {
		req.answer(res.err)
		h.Failed(old, req.reason, res.err, 0)
		return false
	}
	*cur = res.next
	req.answer(nil)
	return true
}

// replace starts the next process in place of one that exited (*cur is
// set to it), after delay, backing off while starts fail. A recycle asked
// for meanwhile (a restart) is answered by that next start. *cur stays the
// zero value when the group stops or the replica leaves meanwhile.
func (r *Replica[T]) replace(ctx context.Context, h *Hooks[T], cur *T, backoff *Backoff, delay time.Duration) {
	var none T
	*cur = none
	var pending []recycleRequest[T]
	answer := func(err error) {
		for i := range pending {
			pending[i].answer(err)
		}
		pending = nil
	}
	defer answer(ErrStopped) // when the group stops or the replica leaves
	for {
		if delay > 0 {
			if h.Waiting != nil {
				h.Waiting(delay, backoff.Failures())
			}
			t := time.NewTimer(delay)
		wait:
			for {
				select {
				case <-t.C:
					break wait
				case <-ctx.Done():
					t.Stop()
					return
				case <-r.leave:
					t.Stop()
					return
				case req := <-r.recycle:
					if req.occupant == none { // a restart: the next start is one
						pending = append(pending, req)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.leave:
			return // scaled down meanwhile: the replica ends with its process
		default:
		}
		next, err := h.Start()
		if err == nil {
			if !h.Adopt(r, next, none, "") {
				return
			}
			*cur = next
			if h.Waiting != nil {
				h.Waiting(0, 0)
			}
			answer(nil)
			return
		}
		delay = backoff.Failed(0)
		h.Failed(none, "", err, delay)
		answer(err) // a restart asked meanwhile learns why nothing started
	}
}
