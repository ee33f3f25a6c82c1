package supervisor

import (
	"context"
	"errors"
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
// panic in a step is logged with its stack and the replica goes on.
func (r *Replica[T]) Keep(ctx context.Context, logger *zap.Logger, h *Hooks[T], first T) {
	backoff := h.Backoff
	if backoff == (Backoff{}) {
		backoff = DefaultBackoff()
	}
	current := first
	var none T
	panics.Keep(logger, "supervising a process", ctx.Done(), func() {
		for current != none {
			lifetime := h.lifetimeTimer(current)
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
					if req.done != nil {
						req.done <- ErrStopped
					}
					return
				}
				if req.occupant != none && req.occupant != current {
					continue // about a process that already left
				}
				current = r.recycleNow(h, current, req)
			case <-lifetime.C:
				current = r.recycleNow(h, current, recycleRequest[T]{reason: "lifetime"})
			case <-current.Done():
				lifetime.Stop()
				current = r.replace(ctx, h, current, &backoff)
			}
		}
	})
}

// lifetimeTimer fires when p reaches MaxLifetime (with its jitter); it
// never fires when MaxLifetime is not set.
func (h *Hooks[T]) lifetimeTimer(p T) *time.Timer {
	if h.MaxLifetime <= 0 {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	jitter := time.Duration(rand.Int64N(int64(h.MaxLifetime)/10 + 1))
	return time.NewTimer(time.Until(p.StartedAt().Add(h.MaxLifetime + jitter)))
}

// recycleNow starts the next process and has it adopted in place of
// current, which retires; if the next cannot start, current stays.
func (r *Replica[T]) recycleNow(h *Hooks[T], current T, req recycleRequest[T]) T {
	next, err := h.Start()
	if err == nil && !h.Adopt(r, next, current, req.reason) {
		err = ErrStopped
	}
	if req.done != nil {
		req.done <- err
	}
	if err != nil {
		h.Failed(current, req.reason, err, 0)
		return current
	}
	return next
}

// replace takes an exited process out of service and starts the next,
// backing off after crashes and while starts fail. It returns the zero
// value when the group stops or the replica leaves meanwhile.
func (r *Replica[T]) replace(ctx context.Context, h *Hooks[T], exited T, backoff *Backoff) T {
	var none T
	delay := time.Duration(0)
	if reason := h.Exited(exited); reason == "crash" {
		delay = backoff.Failed(time.Since(exited.StartedAt()))
	}
	for {
		if delay > 0 {
			if h.Waiting != nil {
				h.Waiting(delay, backoff.Failures())
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return none
			case <-r.leave:
				t.Stop()
				return none
			}
		}
		select {
		case <-ctx.Done():
			return none
		case <-r.leave:
			return none // scaled down meanwhile: the replica ends with its process
		default:
		}
		next, err := h.Start()
		if err == nil {
			if !h.Adopt(r, next, none, "") {
				return none
			}
			if h.Waiting != nil {
				h.Waiting(0, 0)
			}
			return next
		}
		delay = backoff.Failed(0)
		h.Failed(none, "", err, delay)
	}
}
