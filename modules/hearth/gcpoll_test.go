package hearth

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestGCPollPlan(t *testing.T) {
	const mib = 1 << 20
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// live 4 MiB, goal 68 MiB: progress is (objects-4)/64 MiB.
	heap := func(ms int, objects uint64, cycles, pauses uint64) heapSample {
		return heapSample{at: at(ms), objects: objects * mib, live: 4 * mib, goal: 68 * mib, cycles: cycles, pauses: pauses}
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
			// Ended: new live and goal; the old heap's garbage not yet swept.
			{heapSample{at: at(9), objects: 56 * mib, live: 5 * mib, goal: 69 * mib, cycles: 4, pauses: 8}, gcSweeping, gcPollEvery},
			{heapSample{at: at(12), objects: 30 * mib, live: 5 * mib, goal: 69 * mib, cycles: 4, pauses: 8}, gcSweeping, gcPollEvery},
			// Swept: 5 + 6.4 MiB (a tenth of the way) or less.
			{heapSample{at: at(16), objects: 11 * mib, live: 5 * mib, goal: 69 * mib, cycles: 4, pauses: 8}, gcFar, 0},
		}},
		{"the sweep is taken as done after gcSweepAtMost", []step{
			{heap(0, 60, 3, 7), gcMarking, gcPollEvery},
			{heap(10, 60, 4, 8), gcSweeping, gcPollEvery},
			{heap(59, 60, 4, 8), gcSweeping, gcPollEvery},
			{heap(61, 60, 4, 8), gcNear, 10 * gcWatchEvery}, // near the default trigger (0.7), not growing
			{heap(62, 61, 4, 8), gcNear, gcWatchEvery},
		}},
		{"the trigger is learned from the sample before the mark", []step{
			{heap(0, 20, 3, 6), gcFar, 0}, // progress 0.25
			{heap(1, 21, 3, 7), gcMarking, gcPollEvery},
			{heap(5, 30, 4, 8), gcSweeping, gcPollEvery},
			{heap(6, 5, 4, 8), gcFar, 0},
			// The watch now starts at 0.25 - 0.05 = 0.2 of the way: 16.8 MiB.
			{heap(7, 16, 4, 8), gcFar, 0},
			{heap(8, 17, 4, 8), gcNear, gcWatchEvery},
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
			{heap(50, 60, 4, 8), gcSweeping, gcPollEvery},
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
	runtime.GC()
	h := newHeapReader().read()
	if h.cycles == 0 || h.goal == 0 || h.objects == 0 {
		t.Fatalf("runtime/metrics gave no heap numbers: %+v", h)
	}
	if h.pauses != 2*h.cycles || h.marking() {
		t.Errorf("after a complete collection: %d pauses for %d collections, want two per collection", h.pauses, h.cycles)
	}
}

func TestLendGCProc(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	t.Setenv("GOMAXPROCS", "")
	logger := zap.NewNop()
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)

	applyCaddyCPUs("auto", 1, logger)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("caddy_cpus auto on %d CPUs: GOMAXPROCS %d; this test wants 1", before, got)
	}
	if !lendGCProc() || runtime.GOMAXPROCS(0) != 2 {
		t.Fatalf("lendGCProc under caddy_cpus auto: GOMAXPROCS %d, want 2", runtime.GOMAXPROCS(0))
	}
	if using, _ := cpuStatus(); using != 1 {
		t.Errorf("the admin API shows %d CPUs while one is lent; want the setting's 1", using)
	}
	returnGCProc()
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("after returnGCProc: GOMAXPROCS %d, want 1", got)
	}

	// A config started while the P is lent decides; returning it later
	// changes nothing.
	lendGCProc()
	applyCaddyCPUs("all", 1, logger)
	returnGCProc()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("caddy_cpus all started while a P was lent, then returned: GOMAXPROCS %d, want %d", got, before)
	}
	if lendGCProc() {
		t.Errorf("lent a P under caddy_cpus all")
	}

	// An explicit number is the user's: nothing is lent.
	applyCaddyCPUs("1", 1, logger)
	if lendGCProc() || runtime.GOMAXPROCS(0) != 1 {
		t.Errorf("lent a P under caddy_cpus 1: GOMAXPROCS %d", runtime.GOMAXPROCS(0))
	}
	for range 3 {
		releaseCaddyCPUs()
	}
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("after the last config stopped: GOMAXPROCS %d, want %d", got, before)
	}
}

// The poller ends when told to, and gives back a P it lent.
func TestPollDuringGCStopsAndReturnsTheP(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	t.Setenv("GOMAXPROCS", "")
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	applyCaddyCPUs("auto", 1, zap.NewNop())
	defer releaseCaddyCPUs()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { pollDuringGC(stop) })
	// Garbage until the poller has lent the P for a collection.
	var sink [][]byte
	deadline := time.Now().Add(10 * time.Second)
	for runtime.GOMAXPROCS(0) != 2 && time.Now().Before(deadline) {
		for range 1000 {
			sink = append(sink, make([]byte, 1024))
		}
		if len(sink) > 10000 {
			sink = sink[:0]
		}
	}
	if runtime.GOMAXPROCS(0) != 2 {
		t.Fatalf("the poller lent no P in 10 s of garbage")
	}
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
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
	spin := time.Now().Add(100 * time.Millisecond)
	for n := 0; time.Now().Before(spin); n++ {
		_ = n * n
	}
	if m.below(0.5) {
		t.Error("after 100 ms of spinning on a CPU: below half a CPU")
	}
	time.Sleep(100 * time.Millisecond)
	if !m.below(0.5) {
		t.Error("after 100 ms of sleep: not below half a CPU")
	}
}
