package hearth

import (
	"runtime"
	"testing"

	"go.uber.org/zap"
)

func TestCaddyCPUsFor(t *testing.T) {
	tests := []struct {
		setting string
		all     int
		running bool
		want    int
	}{
		{"", 2, true, 1},
		{"auto", 2, true, 1},
		{"auto", 1, true, 1},
		{"auto", 3, true, 1},
		{"auto", 8, true, 4},
		{"auto", 8, false, 8}, // no pools: nothing to leave CPUs to
		{"all", 8, true, 8},
		{"3", 8, true, 3},
		{"3", 8, false, 3},
		{"16", 8, true, 8}, // never more than there are
	}
	for _, tt := range tests {
		if got := caddyCPUsFor(tt.setting, tt.all, tt.running); got != tt.want {
			t.Errorf("caddyCPUsFor(%q, %d, %v) = %d, want %d", tt.setting, tt.all, tt.running, got, tt.want)
		}
	}
}

func TestParseCaddyCPUs(t *testing.T) {
	for _, ok := range []string{"", "auto", "all", "1", "12"} {
		if err := parseCaddyCPUs(ok); err != nil {
			t.Errorf("parseCaddyCPUs(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"0", "-2", "half", "1.5", "ALL"} {
		if err := parseCaddyCPUs(bad); err == nil {
			t.Errorf("parseCaddyCPUs(%q) accepted it", bad)
		}
	}
}

// TestARefusedConfigGivesWay: a config whose hearth app started and
// which Caddy then refused (another app of it failed to start) is
// stopped while the running one stays: the running one's caddy_cpus and
// caddy_gc_floor are in force again, not the refused one's (a reload of
// the unchanged running config is "unchanged" to Caddy, so nothing else
// would put them back). A reload that succeeds keeps the new one's.
func TestARefusedConfigGivesWay(t *testing.T) {
	useCaddyCPUs(t)
	t.Setenv("GOGC", "")
	floor := func() uint64 {
		gcFloor.Lock()
		defer gcFloor.Unlock()
		return gcFloor.floor
	}
	logger := zap.NewNop()
	running, runningFloor := applyCaddyCPUs("all", 1, logger), applyCaddyGCFloor("32MiB", 1, logger)
	refused, refusedFloor := applyCaddyCPUs("1", 1, logger), applyCaddyGCFloor("off", 1, logger)
	if runtime.GOMAXPROCS(0) != 1 || floor() != 0 {
		t.Fatalf("the newest config's settings: GOMAXPROCS %d, floor %d", runtime.GOMAXPROCS(0), floor())
	}
	releaseCaddyCPUs(refused)
	releaseCaddyGCFloor(refusedFloor)
	if runtime.GOMAXPROCS(0) != 2 || floor() != 32<<20 {
		t.Errorf("after the refused config stopped: GOMAXPROCS %d, floor %d; want the running config's 2, 32 MiB", runtime.GOMAXPROCS(0), floor())
	}
	// a reload that succeeds: the old config stops after the new started
	next, nextFloor := applyCaddyCPUs("1", 1, logger), applyCaddyGCFloor("16MiB", 1, logger)
	releaseCaddyCPUs(running)
	releaseCaddyGCFloor(runningFloor)
	if runtime.GOMAXPROCS(0) != 1 || floor() != 16<<20 {
		t.Errorf("after a reload: GOMAXPROCS %d, floor %d; want the new config's 1, 16 MiB", runtime.GOMAXPROCS(0), floor())
	}
	releaseCaddyCPUs(next)
	releaseCaddyGCFloor(nextFloor)
	gcFloor.Lock()
	tuning := gcFloor.tuning
	gcFloor.Unlock()
	if runtime.GOMAXPROCS(0) != 2 || tuning {
		t.Errorf("after the last config stopped: GOMAXPROCS %d, the GC still tuned %v", runtime.GOMAXPROCS(0), tuning)
	}
}

// TestCleanupWithoutStopGivesWay: when Caddy refuses a config after every
// app started (its last setting-up step failed), it cleans the config up
// without stopping its apps: the settings it applied still give way.
func TestCleanupWithoutStopGivesWay(t *testing.T) {
	useCaddyCPUs(t)
	t.Setenv("GOGC", "")
	running := applyCaddyCPUs("all", 1, zap.NewNop())
	defer releaseCaddyCPUs(running)
	a := &App{logger: zap.NewNop()}
	a.cpus, a.gcFloor = applyCaddyCPUs("1", 1, zap.NewNop()), applyCaddyGCFloor("16MiB", 1, zap.NewNop())
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	gcFloor.Lock()
	left := len(gcFloor.started)
	gcFloor.Unlock()
	if runtime.GOMAXPROCS(0) != 2 || left != 0 {
		t.Errorf("after Cleanup: GOMAXPROCS %d, %d GC floor settings left", runtime.GOMAXPROCS(0), left)
	}
}
