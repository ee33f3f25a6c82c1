package hearth

import (
	"runtime"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// lendForLoad lends the second P to a saturated Caddy whose workers idle,
// keeps it while Caddy stays busy and the workers mostly idle, and takes
// it back when either changes; between the thresholds the decision
// stays what it was.
func TestLendForLoad(t *testing.T) {
	for _, tt := range []struct {
		name           string
		caddy, workers float64
		lent, want     bool
	}{
		{"saturated, workers idle", 0.97, 0, false, true},
		{"saturated, workers busy a little", 0.97, 0.05, false, true},
		{"saturated, workers busy: they need the CPU", 0.97, 0.5, false, false},
		{"saturated, workers between the thresholds", 0.97, 0.15, false, false},
		{"not saturated", 0.7, 0, false, false},
		{"lent, busy on two Ps", 1.5, 0, true, true},
		{"lent, workers between the thresholds", 1.5, 0.15, true, true},
		{"lent, the workers got busy", 1.5, 0.3, true, false},
		{"lent, Caddy between the thresholds", 0.7, 0, true, true},
		{"lent, the load ended", 0.1, 0, true, false},
	} {
		if got := lendForLoad(tt.caddy, tt.workers, tt.lent); got != tt.want {
			t.Errorf("%s (Caddy %.2f CPUs, workers %.2f, lent %v): %v, want %v", tt.name, tt.caddy, tt.workers, tt.lent, got, tt.want)
		}
	}
}

// The P is lent while any reason holds, and taken back with the last.
func TestLendReasons(t *testing.T) {
	useCaddyCPUs(t)
	setting := applyCaddyCPUs("auto", 1, zap.NewNop())
	if !lendProc(lentForLoad) || !lendProc(lentForGC) || runtime.GOMAXPROCS(0) != 2 {
		t.Fatalf("lent for the load and a collection: GOMAXPROCS %d, want 2", runtime.GOMAXPROCS(0))
	}
	if _, _, lent := cpuStatus(); lent.String() != "idle_workers" {
		t.Errorf("status shows the P lent for %q, want idle_workers", lent)
	}
	returnProc(lentForLoad)
	if runtime.GOMAXPROCS(0) != 2 || !procLent(lentForGC) || procLent(lentForLoad) {
		t.Errorf("the load's reason returned, the collection's held: GOMAXPROCS %d, want 2", runtime.GOMAXPROCS(0))
	}
	if using, _, lent := cpuStatus(); using != 1 || lent.String() != "garbage_collection" {
		t.Errorf("status: %d CPUs, lent for %q; want 1, garbage_collection", using, lent)
	}
	returnProc(lentForLoad) // again: nothing
	returnProc(lentForGC)
	if runtime.GOMAXPROCS(0) != 1 {
		t.Errorf("every reason returned: GOMAXPROCS %d, want 1", runtime.GOMAXPROCS(0))
	}
	if _, _, lent := cpuStatus(); lent != 0 {
		t.Errorf("status shows the P lent for %q after it came back", lent)
	}
	releaseCaddyCPUs(setting)
}

// busyPool is a pool whose workers' busy time the test sets.
type busyPool struct {
	placedPool
	busy time.Duration
}

func (p *busyPool) BusyTime() time.Duration { return p.busy }

// loadLender reads the pools' workers' busy time per unit of wall time
// between looks, leaves out a pool it has not seen before, and counts
// nothing of a pool whose count went back.
func TestLoadLenderWorkersBusy(t *testing.T) {
	add := func(name string, busy time.Duration) *busyPool {
		p := &busyPool{placedPool: placedPool{name: name, destructs: new(int)}, busy: busy}
		pools.LoadOrNew("lend-test-"+name, func() (caddy.Destructor, error) { return p, nil })
		t.Cleanup(func() { pools.Delete("lend-test-" + name) })
		return p
	}
	var l loadLender
	l.workersBusy()
	time.Sleep(time.Millisecond)
	if _, known := l.workersBusy(); known {
		t.Error("no pool measures its workers, and the look knows how busy they were")
	}
	a := add("a", 0)
	l = loadLender{}
	if _, known := l.workersBusy(); known {
		t.Fatal("the first look knows a rate")
	}
	start := l.at
	add("b", time.Hour) // started since the last look: left out
	a.busy += time.Second
	time.Sleep(20 * time.Millisecond)
	busy, known := l.workersBusy()
	if elapsed := time.Since(start); !known || busy < float64(time.Second)/float64(elapsed) || busy > float64(time.Second)/float64(20*time.Millisecond) {
		t.Errorf("a pool busy for a second in %v, one new: %.2f (known %v), want a second's worth", elapsed, busy, known)
	}
	a.busy -= time.Second // a pool started anew under the same value
	if busy, _ := l.workersBusy(); busy != 0 {
		t.Errorf("nothing busy since: %.2f, want 0", busy)
	}
}

// On four CPUs caddy_cpus auto gives Caddy two Ps: a collection gets no
// P more (the one-P trouble it is lent for is not there), a saturated
// Caddy with idle workers gets all four, and the status shows the
// setting's two.
func TestLendOnFourCPUs(t *testing.T) {
	useCaddyCPUs(t)
	runtime.GOMAXPROCS(4)
	auto := applyCaddyCPUs("auto", 1, zap.NewNop())
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Fatalf("caddy_cpus auto on 4 CPUs: GOMAXPROCS %d, want 2", got)
	}
	if lendProc(lentForGC) || runtime.GOMAXPROCS(0) != 2 {
		t.Errorf("lent for a collection with two Ps: GOMAXPROCS %d", runtime.GOMAXPROCS(0))
	}
	if procs, spare, ok := lendShape(); procs != 2 || spare != 2 || !ok {
		t.Errorf("lendShape: %d Ps, %d spare, lendable %v; want 2, 2, true", procs, spare, ok)
	}
	if !lendProc(lentForLoad) || runtime.GOMAXPROCS(0) != 4 {
		t.Errorf("lent for the load: GOMAXPROCS %d, want 4", runtime.GOMAXPROCS(0))
	}
	if using, available, lent := cpuStatus(); using != 2 || available != 4 || lent != lentForLoad {
		t.Errorf("status: %d of %d CPUs, lent for %q; want 2 of 4, idle_workers", using, available, lent)
	}
	returnProc(lentForLoad)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("returned: GOMAXPROCS %d, want 2", got)
	}
	all := applyCaddyCPUs("all", 1, zap.NewNop())
	if _, _, ok := lendShape(); ok || lendProc(lentForLoad) {
		t.Errorf("caddy_cpus all: lendable %v", ok)
	}
	releaseCaddyCPUs(all)
	releaseCaddyCPUs(auto)
	if got := runtime.GOMAXPROCS(0); got != 4 {
		t.Errorf("after the last config stopped: GOMAXPROCS %d, want the 4 from before", got)
	}
}
