package hearth

import (
	"math"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestGCPollPlan(t *testing.T) {
	const mib = 1 << 20
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// live 4 MiB, goal 68 MiB: progress is (objects-4)/64 MiB. frees only
	// changes where a sweep frees something.
	heap := func(ms int, objects uint64, cycles, pauses uint64) heapSample {
		return heapSample{at: at(ms), objects: objects * mib, live: 4 * mib, goal: 68 * mib, cycles: cycles, pauses: pauses}
	}
	swept := func(h heapSample, live, goal, frees uint64) heapSample {
		h.live, h.goal, h.frees = live*mib, goal*mib, frees*mib
		return h
	}
	type step struct {
		sample heapSample
		phase  gcPhase
		wait   time.Duration // 0: any
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first sample: no rate yet", []step{
			{heap(0, 10, 3, 6), gcFar, 10 * gcWatchEvery},
		}},
		{"a growing heap is sampled at half the time it takes to near the first trigger", []step{
			{heap(0, 4, 3, 6), gcFar, 0},
			// 8 MiB per 100 ms; the watch starts at 0.65 × 64 + 4 = 45.6 MiB,
			// 33.6 MiB away: 420 ms, half of it 210, bounded by gcPollIdle.
			{heap(100, 12, 3, 6), gcFar, gcPollIdle},
			// 32 MiB per 10 ms from 44 MiB: 1.6 MiB away, 0.5 ms: at least gcWatchEvery.
			{heap(110, 44, 3, 6), gcFar, gcWatchEvery},
			{heap(111, 46, 3, 6), gcNear, gcWatchEvery},
		}},
		{"an idle heap is sampled rarely", []step{
			{heap(0, 10, 3, 6), gcFar, 0},
			{heap(100, 10, 3, 6), gcFar, gcPollIdle},
		}},
		{"a collection is seen from its first stop of the world to the end of its sweep", []step{
			{heap(0, 50, 3, 6), gcNear, 10 * gcWatchEvery}, // growing? not known yet
			{heap(1, 51, 3, 7), gcMarking, gcPollEvery},
			{heap(5, 55, 3, 7), gcMarking, gcPollEvery},
			// Ended: new live and goal; the sweep frees the old heap's garbage.
			{swept(heap(9, 56, 4, 8), 5, 69, 0), gcSweeping, gcPollEvery},
			{swept(heap(12, 30, 4, 8), 5, 69, 26), gcSweeping, gcPollEvery},
			{swept(heap(13, 12, 4, 8), 5, 69, 44), gcSweeping, gcPollEvery},
			{swept(heap(14, 14, 4, 8), 5, 69, 44), gcSweeping, gcPollEvery},
			// Nothing freed for gcSweepQuiet: swept, however much was allocated since.
			{swept(heap(15, 15, 4, 8), 5, 69, 44), gcFar, 0},
		}},
		{"the sweep is taken as done after gcSweepAtMost", []step{
			{heap(0, 60, 3, 7), gcMarking, gcPollEvery},
			{swept(heap(10, 60, 4, 8), 4, 68, 1), gcSweeping, gcPollEvery},
			{swept(heap(59, 60, 4, 8), 4, 68, 2), gcSweeping, gcPollEvery},
			{swept(heap(61, 60, 4, 8), 4, 68, 3), gcNear, 10 * gcWatchEvery}, // near the default trigger (0.7), not growing
			{swept(heap(62, 61, 4, 8), 4, 68, 3), gcNear, gcWatchEvery},
		}},
		{"the trigger is learned from the sample before the mark", []step{
			{heap(0, 40, 3, 6), gcFar, 0}, // progress 0.5625
			{heap(1, 41, 3, 7), gcMarking, gcPollEvery},
			{swept(heap(5, 30, 4, 8), 4, 68, 1), gcSweeping, gcPollEvery},
			{swept(heap(7, 5, 4, 8), 4, 68, 1), gcFar, 0},
			// The watch now starts at 0.5625 - 0.05 of the way: 36.8 MiB.
			{swept(heap(8, 36, 4, 8), 4, 68, 1), gcFar, 0},
			{swept(heap(9, 37, 4, 8), 4, 68, 1), gcNear, gcWatchEvery},
		}},
		{"a collection started early (periodic, runtime.GC) teaches no trigger below gcLowestTrigger", []step{
			{heap(0, 5, 3, 6), gcFar, 0},
			{heap(1, 6, 3, 7), gcMarking, gcPollEvery},
			{swept(heap(5, 6, 4, 8), 4, 68, 1), gcSweeping, gcPollEvery},
			{swept(heap(7, 6, 4, 8), 4, 68, 1), gcFar, 0},
			// The watch starts at 0.5 - 0.05 of the way: 32.8 MiB.
			{swept(heap(8, 32, 4, 8), 4, 68, 1), gcFar, 0},
			{swept(heap(9, 33, 4, 8), 4, 68, 1), gcNear, gcWatchEvery},
		}},
		{"a heap that stops growing near the trigger is left after gcPollIdle", []step{
			{heap(0, 48, 3, 6), gcNear, 0},
			{heap(1, 49, 3, 6), gcNear, gcWatchEvery},
			{heap(2, 49, 3, 6), gcNear, 10 * gcWatchEvery},
			{heap(90, 49, 3, 6), gcNear, 10 * gcWatchEvery},
			{heap(102, 49, 3, 6), gcFar, gcPollIdle},
			{heap(202, 49, 3, 6), gcFar, gcPollIdle},
			{heap(203, 50, 3, 6), gcNear, gcWatchEvery}, // traffic again
		}},
		{"a collection that starts and ends between two samples still has its sweep watched", []step{
			{heap(0, 10, 3, 6), gcFar, 0},
			{swept(heap(50, 60, 4, 8), 4, 68, 1), gcSweeping, gcPollEvery},
		}},
		{"an extra GC pause (a restarted mark termination) is not a mark phase for good", []step{
			{heap(0, 10, 3, 7), gcMarking, gcPollEvery},
			{swept(heap(5, 10, 4, 9), 4, 68, 1), gcMarking, gcPollEvery}, // 9 pauses for 4 cycles
			{swept(heap(900, 10, 4, 9), 4, 68, 1), gcMarking, gcPollEvery},
			{swept(heap(1006, 10, 4, 9), 4, 68, 1), gcFar, 0}, // nothing changed for over gcMarkAtMost
			{swept(heap(1007, 11, 4, 9), 4, 68, 1), gcFar, 0},
			{swept(heap(1008, 50, 4, 10), 4, 68, 1), gcMarking, gcPollEvery}, // the next mark, counted from there
			{swept(heap(1012, 50, 5, 11), 4, 68, 2), gcSweeping, gcPollEvery},
		}},
		{"a mark longer than gcMarkAtMost is counted again once it ends", []step{
			{heap(0, 50, 3, 7), gcMarking, gcPollEvery},
			{heap(1001, 50, 3, 7), gcNear, 0}, // taken for an extra pause
			{swept(heap(1500, 6, 4, 8), 4, 68, 1), gcSweeping, gcPollEvery},
			{swept(heap(1501, 6, 4, 8), 4, 68, 1), gcSweeping, gcPollEvery},
			{swept(heap(1502, 6, 4, 8), 4, 68, 1), gcFar, 0},
			{swept(heap(1503, 50, 4, 9), 4, 68, 1), gcMarking, gcPollEvery},
		}},
		{"a sample between a collection's end and its pause does not lower the count for good", []step{
			{heap(0, 50, 3, 7), gcMarking, gcPollEvery},
			{swept(heap(1, 50, 4, 7), 4, 68, 1), gcSweeping, gcPollEvery}, // the end counted, its pause not yet
			{swept(heap(2, 20, 4, 8), 4, 68, 9), gcSweeping, gcPollEvery},
			{swept(heap(5, 20, 4, 8), 4, 68, 9), gcFar, 0},
			{swept(heap(6, 60, 4, 9), 4, 68, 9), gcMarking, gcPollEvery},
			{swept(heap(9, 60, 5, 10), 4, 68, 10), gcSweeping, gcPollEvery},
		}},
		{"an extra pause at a mark's end, with collections coming faster than gcMarkAtMost", []step{
			{heap(0, 50, 3, 7), gcMarking, gcPollEvery},
			{swept(heap(5, 50, 4, 9), 4, 68, 1), gcMarking, gcPollEvery}, // 9 pauses for 4 cycles: taken for a mark
			{swept(heap(300, 50, 4, 10), 4, 68, 1), gcMarking, gcPollEvery},
			{swept(heap(305, 50, 5, 11), 4, 68, 2), gcSweeping, gcPollEvery}, // two cycles since: counted from there
			{swept(heap(308, 20, 5, 11), 4, 68, 2), gcFar, 0},
			{swept(heap(600, 60, 5, 12), 4, 68, 2), gcMarking, gcPollEvery},
		}},
		{"no goal (GOGC=off, no memory limit): bounded waits", []step{
			{heapSample{at: at(0), objects: 10 * mib, live: 4 * mib, goal: math.MaxUint64, cycles: 3, pauses: 6}, gcFar, 0},
			{heapSample{at: at(1), objects: 11 * mib, live: 4 * mib, goal: math.MaxUint64, cycles: 3, pauses: 6}, gcFar, gcPollIdle},
		}},
	}
	for _, tt := range tests {
		var plan gcPollPlan
		for i, s := range tt.steps {
			phase, wait := plan.next(s.sample)
			if phase != s.phase || (s.wait != 0 && wait != s.wait) {
				t.Errorf("%s, sample %d: got %v after %v, want %v after %v", tt.name, i, phase, wait, s.phase, s.wait)
			}
			if wait < gcPollEvery || wait > gcPollIdle {
				t.Errorf("%s, sample %d: wait %v is out of [%v, %v]", tt.name, i, wait, gcPollEvery, gcPollIdle)
			}
		}
	}
}

// The poller reads a mark phase from the count of GC pauses: two per
// completed collection, one more while one marks. This checks the
// runtime this is built with counts them so.
func TestHeapSampleCountsPausesPerCollection(t *testing.T) {
	reader := newHeapReader()
	for try := 0; ; try++ {
		runtime.GC()
		before := reader.read()
		runtime.GC()
		h := reader.read()
		if h.cycles == 0 || h.goal == 0 || h.objects == 0 || h.frees == 0 {
			t.Fatalf("runtime/metrics gave no heap numbers: %+v", h)
		}
		// Pauses beyond two per collection from before (a restarted mark
		// termination) stay; one collection adds exactly two.
		if h.pauses-before.pauses == 2*(h.cycles-before.cycles) && h.cycles > before.cycles {
			return
		}
		if try == 10 { // each try may meet a collection started in between
			t.Fatalf("a collection added %d pauses for %d collections, want two per collection", h.pauses-before.pauses, h.cycles-before.cycles)
		}
	}
}

// useCaddyCPUs gives the test a clean goProcs on two Ps (caddy_cpus auto
// makes that one) and restores it all when the test ends.
func useCaddyCPUs(t *testing.T) {
	t.Helper()
	t.Setenv("GOMAXPROCS", "")
	before := runtime.GOMAXPROCS(2)
	t.Cleanup(func() {
		goProcs.Lock()
		goProcs.started, goProcs.baseline, goProcs.procs, goProcs.lendable, goProcs.lent = nil, 0, 0, false, 0
		goProcs.Unlock()
		runtime.GOMAXPROCS(before)
	})
}

func TestLendGCProc(t *testing.T) {
	useCaddyCPUs(t)
	logger := zap.NewNop()
	first := applyCaddyCPUs("auto", 1, logger)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("caddy_cpus auto on 2 CPUs: GOMAXPROCS %d, want 1", got)
	}
	if !lendProc(lentForGC) || runtime.GOMAXPROCS(0) != 2 {
		t.Fatalf("lendGCProc under caddy_cpus auto: GOMAXPROCS %d, want 2", runtime.GOMAXPROCS(0))
	}
	if using, _, _ := cpuStatus(); using != 1 {
		t.Errorf("the admin API shows %d CPUs while one is lent; want the setting's 1", using)
	}
	returnProc(lentForGC)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("after returnGCProc: GOMAXPROCS %d, want 1", got)
	}

	// A config started while the P is lent decides; returning it later
	// changes nothing.
	lendProc(lentForGC)
	second := applyCaddyCPUs("all", 1, logger)
	returnProc(lentForGC)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("caddy_cpus all started while a P was lent, then returned: GOMAXPROCS %d, want 2", got)
	}
	if lendProc(lentForGC) {
		t.Errorf("lent a P under caddy_cpus all")
	}

	// An explicit number is the user's: nothing is lent.
	third := applyCaddyCPUs("1", 1, logger)
	if lendProc(lentForGC) || runtime.GOMAXPROCS(0) != 1 {
		t.Errorf("lent a P under caddy_cpus 1: GOMAXPROCS %d", runtime.GOMAXPROCS(0))
	}
	for _, s := range []*cpuSetting{first, second, third} {
		releaseCaddyCPUs(s)
	}
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("after the last config stopped: GOMAXPROCS %d, want the 2 from before", got)
	}
}

// The poller lends the P for a collection, takes it back once the heap
// stops short of the next one, and gives it back when it stops.
func TestPollDuringGCLendsAndReturnsTheP(t *testing.T) {
	useCaddyCPUs(t)
	applyCaddyCPUs("auto", 1, zap.NewNop())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { pollDuringGC(stop, math.Inf(1)) }) // help every collection
	var once sync.Once
	end := func() {
		once.Do(func() { close(stop) })
		wg.Wait()
	}
	t.Cleanup(end)

	var sink [][]byte
	garbageUntil := func(procs int) bool {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.GOMAXPROCS(0) != procs && time.Now().Before(deadline) {
			for range 1000 {
				sink = append(sink, make([]byte, 1024))
			}
			if len(sink) > 10000 {
				sink = sink[:0]
			}
		}
		return runtime.GOMAXPROCS(0) == procs
	}
	if !garbageUntil(2) {
		t.Fatal("the poller lent no P in 10 s of garbage")
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.GOMAXPROCS(0) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("10 s after the garbage stopped: GOMAXPROCS %d, want the P back (1)", got)
	}
	if !garbageUntil(2) {
		t.Fatal("the poller lent no P for a second collection")
	}
	done := make(chan struct{})
	go func() { end(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller did not stop within 5 s")
	}
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("after the poller stopped: GOMAXPROCS %d, want the 1 caddy_cpus auto set", got)
	}
}

func TestCPUMeter(t *testing.T) {
	var m cpuMeter
	if !m.below(0.5) {
		t.Error("the first reading has nothing to compare with: want true")
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// Spin for 100 ms of CPU (not of wall clock: the machine may be busy).
	from, deadline := cpu(), time.Now().Add(10*time.Second)
	for cpu()-from < 100*time.Millisecond && time.Now().Before(deadline) {
		for n := 0; n < 100000; n++ {
			_ = n * n
		}
	}
	if m.below(0.01) {
		t.Error("after 100 ms of spinning: below a hundredth of a CPU")
	}
	time.Sleep(100 * time.Millisecond)
	if !m.below(0.5) {
		t.Error("after 100 ms of sleep: not below half a CPU")
	}
}
