package supervisor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// fakeProc is a process for Replica tests: it "exits" when its done
// channel is closed.
type fakeProc struct {
	id      int
	done    chan struct{}
	started time.Time
}

func (f *fakeProc) Done() <-chan struct{} { return f.done }
func (f *fakeProc) StartedAt() time.Time  { return f.started }
func (f *fakeProc) exit()                 { close(f.done) }

// fakeGroup records what a replica asks of its group, with start failures
// scripted.
type fakeGroup struct {
	mu       sync.Mutex
	next     int
	failNext int           // the next starts that fail
	gate     chan struct{} // if set, a start waits for it
	entered  chan struct{} // if set, told when a start begins to wait at the gate
	stopping bool
	serving  []*fakeProc
	events   []string
	changed  chan struct{} // a token per event
}

func newFakeGroup() *fakeGroup { return &fakeGroup{changed: make(chan struct{}, 100)} }

func (g *fakeGroup) record(format string, args ...any) {
	g.events = append(g.events, fmt.Sprintf(format, args...))
	select {
	case g.changed <- struct{}{}:
	default: // tokens are waiting already
	}
}

func (g *fakeGroup) hooks() *Hooks[*fakeProc] {
	return &Hooks[*fakeProc]{
		Start: func() (*fakeProc, error) {
			g.mu.Lock()
			gate, entered := g.gate, g.entered
			g.mu.Unlock()
			if gate != nil {
				if entered != nil {
					entered <- struct{}{}
				}
				<-gate
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			g.next++
			if g.failNext > 0 {
				g.failNext--
				g.record("start %d failed", g.next)
				return nil, errors.New("no luck")
			}
			g.record("start %d", g.next)
			return &fakeProc{id: g.next, done: make(chan struct{}), started: time.Now()}, nil
		},
		Adopt: func(_ *Replica[*fakeProc], next, old *fakeProc, reason string) bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.stopping {
				g.record("refused %d", next.id)
				return false
			}
			g.serving = append(g.serving, next)
			if old != nil {
				g.serving = slices.DeleteFunc(g.serving, func(p *fakeProc) bool { return p == old })
				g.record("adopt %d for %d (%s)", next.id, old.id, reason)
			} else {
				g.record("adopt %d", next.id)
			}
			return true
		},
		Exited: func(old *fakeProc) string {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.serving = slices.DeleteFunc(g.serving, func(p *fakeProc) bool { return p == old })
			g.record("exited %d", old.id)
			return "crash"
		},
		Leave: func(old *fakeProc) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.serving = slices.DeleteFunc(g.serving, func(p *fakeProc) bool { return p == old })
			g.record("leave %d", old.id)
		},
		Failed: func(old *fakeProc, reason string, err error, retryIn time.Duration) {
			g.mu.Lock()
			defer g.mu.Unlock()
			if old != nil {
				g.record("failed recycling %d (%s): %v", old.id, reason, err)
			} else {
				g.record("failed replacing, retry in %s", retryIn)
			}
		},
		Waiting: func(delay time.Duration, failures int) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.record("waiting %s after %d", delay, failures)
		},
		Backoff: Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond, Stable: time.Hour},
	}
}

// waitEvents waits until the group has recorded n events and returns them.
func (g *fakeGroup) waitEvents(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		g.mu.Lock()
		events := slices.Clone(g.events)
		g.mu.Unlock()
		if len(events) >= n {
			return events
		}
		select {
		case <-g.changed:
		case <-deadline:
			t.Fatalf("waited for %d events, got %q", n, events)
		}
	}
}

// keptReplica starts a replica holding a first process, as a group does.
func keptReplica(t *testing.T, g *fakeGroup, h *Hooks[*fakeProc]) (*Replica[*fakeProc], *fakeProc, context.CancelFunc, chan struct{}) {
	t.Helper()
	first, _ := h.Start()
	h.Adopt(nil, first, nil, "")
	r := NewReplica[*fakeProc]()
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		r.Keep(ctx, zap.NewNop(), h, first)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Error("Keep did not return after its group stopped")
		}
	})
	return r, first, cancel, ended
}

func TestReplica(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, stop context.CancelFunc)
		want   []string // events after "start 1", "adopt 1"
		ends   bool     // Keep returns on its own
		tune   func(h *Hooks[*fakeProc])
	}{
		{"an exit is replaced, backed off as a crash", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			first.exit()
		}, []string{"exited 1", "waiting 1ms after 1", "start 2", "adopt 2", "waiting 0s after 0"}, false, nil},
		{"failed starts are retried, backing off further", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			g.mu.Lock()
			g.failNext = 2
			g.mu.Unlock()
			first.exit()
		}, []string{"exited 1", "waiting 1ms after 1", "start 2 failed", "failed replacing, retry in 2ms", "waiting 2ms after 2",
			"start 3 failed", "failed replacing, retry in 4ms", "waiting 4ms after 3", "start 4", "adopt 4", "waiting 0s after 0"}, false, nil},
		{"a recycle starts the next first, then retires the old one", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			if err := r.Recycle(context.Background(), "reload"); err != nil {
				t.Errorf("Recycle: %v", err)
			}
		}, []string{"start 2", "adopt 2 for 1 (reload)"}, false, nil},
		{"a recycle that cannot start keeps the old one", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			g.mu.Lock()
			g.failNext = 1
			g.mu.Unlock()
			if err := r.Recycle(context.Background(), "reload"); err == nil || !strings.Contains(err.Error(), "no luck") {
				t.Errorf("Recycle: %v, want the start's error", err)
			}
			// the old one is still supervised: its exit is replaced
			first.exit()
		}, []string{"start 2 failed", "failed recycling 1 (reload): no luck", "exited 1", "waiting 1ms after 1", "start 3", "adopt 3", "waiting 0s after 0"}, false, nil},
		{"a recycle asked for a process that already left is dropped", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			if err := r.Recycle(context.Background(), "reload"); err != nil {
				t.Fatal(err)
			}
			if !r.RequestRecycle("max_requests", first) {
				t.Fatal("RequestRecycle refused with nothing pending")
			}
			// a marker: the next request is for the current process
			if err := r.Recycle(context.Background(), "marker"); err != nil {
				t.Fatal(err)
			}
		}, []string{"start 2", "adopt 2 for 1 (reload)", "start 3", "adopt 3 for 2 (marker)"}, false, nil},
		{"leaving retires the process and ends", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			g.mu.Lock()
			r.LeaveLocked()
			if r.LeaveLocked() {
				t.Error("a second LeaveLocked reported leaving anew")
			}
			g.mu.Unlock()
		}, []string{"leave 1"}, true, nil},
		{"leaving during a backoff starts nothing", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			first.exit()
			g.waitEvents(t, 4) // start 1, adopt 1, exited 1, waiting 1h
			g.mu.Lock()
			r.LeaveLocked()
			g.mu.Unlock()
		}, []string{"exited 1", "waiting 1h0m0s after 1"}, true, func(h *Hooks[*fakeProc]) { h.Backoff.Min, h.Backoff.Max = time.Hour, time.Hour }},
		{"a group that stops while a next one starts refuses it", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			g.mu.Lock()
			g.stopping = true
			g.mu.Unlock()
			first.exit()
		}, []string{"exited 1", "waiting 1ms after 1", "start 2", "refused 2"}, true, nil},
		{"Recycle of a replica that left returns at once", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, _ context.CancelFunc) {
			g.mu.Lock()
			r.LeaveLocked()
			g.mu.Unlock()
			g.waitEvents(t, 3)
			done := make(chan error, 1)
			go func() { done <- r.Recycle(context.Background(), "reload") }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Recycle: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Recycle of a replica that left hangs")
			}
		}, []string{"leave 1"}, true, nil},
		{"a stopped group ends Keep and Recycle", func(t *testing.T, g *fakeGroup, r *Replica[*fakeProc], first *fakeProc, stop context.CancelFunc) {
			stop()
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := r.Recycle(ctx, "reload"); !errors.Is(err, ErrStopped) && err != nil {
				t.Errorf("Recycle after the stop: %v", err)
			}
		}, []string{}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGroup()
			h := g.hooks()
			if tc.tune != nil {
				tc.tune(h)
			}
			r, first, stop, ended := keptReplica(t, g, h)
			tc.script(t, g, r, first, stop)
			want := append([]string{"start 1", "adopt 1"}, tc.want...)
			got := g.waitEvents(t, len(want))
			if tc.ends {
				select {
				case <-ended:
				case <-time.After(5 * time.Second):
					t.Fatal("Keep did not end")
				}
			} else {
				time.Sleep(20 * time.Millisecond) // nothing more happens
			}
			g.mu.Lock()
			got = slices.Clone(g.events)
			g.mu.Unlock()
			if !slices.Equal(got, want) {
				t.Errorf("events:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestReplicaLifetime: a process is recycled once it served MaxLifetime.
func TestReplicaLifetime(t *testing.T) {
	g := newFakeGroup()
	h := g.hooks()
	h.MaxLifetime = 30 * time.Millisecond
	keptReplica(t, g, h)
	got := g.waitEvents(t, 4)
	if want := []string{"start 1", "adopt 1", "start 2", "adopt 2 for 1 (lifetime)"}; !slices.Equal(got[:4], want) {
		t.Errorf("events %q, want %q first", got, want)
	}
}

// TestReplicaPanicGoesOn: a panic in a hook is logged and the replica
// keeps its process.
func TestReplicaPanicGoesOn(t *testing.T) {
	g := newFakeGroup()
	h := g.hooks()
	exited := h.Exited
	panicked := false
	h.Exited = func(old *fakeProc) string {
		if !panicked {
			panicked = true
			panic("a bug")
		}
		return exited(old)
	}
	_, first, _, _ := keptReplica(t, g, h)
	first.exit()
	// the turn that panicked is run again: the exit is seen again
	got := g.waitEvents(t, 5)
	if want := []string{"start 1", "adopt 1", "exited 1", "waiting 1ms after 1", "start 2"}; !slices.Equal(got[:5], want) {
		t.Errorf("events %q, want %q first", got, want)
	}
}

// TestReplicaRestartDuringBackoff: a restart asked while a crashed
// process's replacement waits out its backoff is answered by that
// replacement: one start, not two.
func TestReplicaRestartDuringBackoff(t *testing.T) {
	g := newFakeGroup()
	h := g.hooks()
	h.Backoff = Backoff{Min: 100 * time.Millisecond, Max: 100 * time.Millisecond, Stable: time.Hour}
	r, first, _, _ := keptReplica(t, g, h)
	first.exit()
	g.waitEvents(t, 4) // start 1, adopt 1, exited 1, waiting
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Recycle(ctx, "reload"); err != nil {
		t.Fatalf("Recycle: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if want := []string{"start 1", "adopt 1", "exited 1", "waiting 100ms after 1", "start 2", "adopt 2", "waiting 0s after 0"}; !slices.Equal(g.events, want) {
		t.Errorf("events:\n got %q\nwant %q", g.events, want)
	}
}

// TestReplicaRestartWhileStartsFail: a restart of a replica whose
// process crashed and cannot start again returns the start's error at
// once, instead of waiting for a start that may never succeed.
func TestReplicaRestartWhileStartsFail(t *testing.T) {
	g := newFakeGroup()
	h := g.hooks()
	h.Backoff = Backoff{Min: 50 * time.Millisecond, Max: 50 * time.Millisecond, Stable: time.Hour}
	r, first, _, _ := keptReplica(t, g, h)
	g.mu.Lock()
	g.failNext = 1000
	g.mu.Unlock()
	first.exit()
	g.waitEvents(t, 4)
	done := make(chan error, 1)
	go func() { done <- r.Recycle(context.Background(), "reload") }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no luck") {
			t.Errorf("Recycle: %v, want the start's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recycle waits for a start that keeps failing")
	}
}

// TestReplicaOldExitsWhileNextStarts: the process being recycled exits
// while its successor starts: it is taken out of service at once (its
// crash counted), and the successor takes its place.
func TestReplicaOldExitsWhileNextStarts(t *testing.T) {
	g := newFakeGroup()
	h := g.hooks()
	r, first, _, _ := keptReplica(t, g, h)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	g.mu.Lock()
	g.gate, g.entered = gate, entered
	g.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- r.Recycle(context.Background(), "reload") }()
	<-entered // the next one is starting
	first.exit()
	g.waitEvents(t, 3) // start 1, adopt 1, exited 1: before the next is ready
	close(gate)
	if err := <-done; err != nil {
		t.Errorf("Recycle: %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if want := []string{"start 1", "adopt 1", "exited 1", "start 2", "adopt 2"}; !slices.Equal(g.events, want) {
		t.Errorf("events:\n got %q\nwant %q", g.events, want)
	}
}

// TestReplicaPanicInRecycleAnswers: a panic while adopting the next
// process answers the restart with an error instead of leaving it
// waiting.
func TestReplicaPanicInRecycleAnswers(t *testing.T) {
	g := newFakeGroup()
	h := g.hooks()
	adopt := h.Adopt
	h.Adopt = func(r *Replica[*fakeProc], next, old *fakeProc, reason string) bool {
		if old != nil {
			panic("a bug")
		}
		return adopt(r, next, old, reason)
	}
	r, _, _, _ := keptReplica(t, g, h)
	done := make(chan error, 1)
	go func() { done <- r.Recycle(context.Background(), "reload") }()
	select {
	case err := <-done:
		if !errors.Is(err, errPanicked) {
			t.Errorf("Recycle: %v, want the internal error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a recycle whose step panicked was never answered")
	}
}

// TestReplicaFailedLifetimeRecycleWaits: when the recycle at max_lifetime
// cannot start a process, the next try waits (backoff), instead of
// starting processes in a tight loop.
func TestReplicaFailedLifetimeRecycleWaits(t *testing.T) {
	g := newFakeGroup()
	h := g.hooks()
	h.MaxLifetime = time.Millisecond
	h.Backoff = Backoff{Min: 100 * time.Millisecond, Max: 100 * time.Millisecond, Stable: time.Hour}
	keptReplica(t, g, h)
	g.mu.Lock()
	g.failNext = 1000
	g.mu.Unlock()
	time.Sleep(250 * time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	attempts := 0
	for _, e := range g.events {
		if strings.HasSuffix(e, "failed") {
			attempts++
		}
	}
	if attempts < 1 || attempts > 4 {
		t.Errorf("%d failed starts in 250 ms with a 100 ms backoff: %q", attempts, g.events)
	}
}

// TestReplicaPanicWhileReplacing: a panic after a crashed process left
// service (here: adopting its replacement) does not end the replica: it
// starts another, so the group keeps its size.
func TestReplicaPanicWhileReplacing(t *testing.T) {
	g := newFakeGroup()
	h := g.hooks()
	adopt := h.Adopt
	panicked := false
	h.Adopt = func(r *Replica[*fakeProc], next, old *fakeProc, reason string) bool {
		if next.id == 2 && !panicked {
			panicked = true
			panic("a bug")
		}
		return adopt(r, next, old, reason)
	}
	_, first, _, ended := keptReplica(t, g, h)
	first.exit()
	got := g.waitEvents(t, 8) // … start 2 (adopting it panics), then, after a backoff, start 3 and adopt 3
	if want := []string{"start 1", "adopt 1", "exited 1", "waiting 1ms after 1", "start 2"}; !slices.Equal(got[:5], want) {
		t.Errorf("events %q, want %q first", got, want)
	}
	if !slices.Contains(got, "adopt 3") {
		t.Errorf("no process replaced the one whose adoption panicked: %q", got)
	}
	select {
	case <-ended:
		t.Error("the replica ended after a panic")
	default:
	}
}

// TestLifetimeTimerOfCenturies: a max_lifetime near the longest duration
// there is, plus its jitter, wrapped negative, and the worker was recycled
// at once, again and again (100000d in a Caddyfile did it).
func TestLifetimeTimerOfCenturies(t *testing.T) {
	for _, life := range []time.Duration{100000 * 24 * time.Hour, math.MaxInt64 - 1, math.MaxInt64} {
		h := &Hooks[*fakeProc]{MaxLifetime: life}
		for range 200 {
			timer := h.lifetimeTimer(&fakeProc{started: time.Now()}, time.Time{})
			select {
			case <-timer.C:
				t.Fatalf("max_lifetime %v: the timer fired at once", life)
			default:
				timer.Stop()
			}
		}
	}
}
