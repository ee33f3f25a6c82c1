package hearth

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"go.uber.org/zap"
)

// CaddyCPUs settings. A number is also accepted.
const (
	// CaddyCPUsAuto leaves half of the CPUs to the worker processes while
	// the config runs pools: Caddy's Go code uses at most half of them (at
	// least one).
	CaddyCPUsAuto = "auto"
	// CaddyCPUsAll lets Caddy's Go code use every CPU (Go's default).
	CaddyCPUsAll = "all"
)

// goProcs arbitrates GOMAXPROCS, which is process-wide, between the
// hearth apps of the configs that run at once during a reload: the newest
// started one decides, and when the last one stops, Go's setting from
// before Hearth changed it comes back.
var goProcs struct {
	sync.Mutex
	running  int  // hearth apps started and not stopped
	baseline int  // GOMAXPROCS before Hearth changed it; 0 until then
	lendable bool // caddy_cpus auto left Caddy one P of several CPUs: a second may be lent for collections
	lent     bool // lendGCProc raised GOMAXPROCS to 2 and returnGCProc has not lowered it
}

// parseCaddyCPUs validates a caddy_cpus setting.
func parseCaddyCPUs(setting string) error {
	switch setting {
	case "", CaddyCPUsAuto, CaddyCPUsAll:
		return nil
	}
	if n, err := strconv.Atoi(setting); err != nil || n < 1 {
		return fmt.Errorf("caddy_cpus %q is not auto, all or a number of CPUs of at least 1", setting)
	}
	return nil
}

// caddyCPUsFor is how many CPUs Caddy's Go code may use under setting,
// out of all (the CPUs available to Caddy), when the config runs pools
// (running) or not.
func caddyCPUsFor(setting string, all int, running bool) int {
	switch setting {
	case CaddyCPUsAll:
		return all
	case "", CaddyCPUsAuto:
		if !running {
			return all
		}
		return max(1, all/2)
	}
	n, _ := strconv.Atoi(setting)
	return min(n, all)
}

// applyCaddyCPUs sets GOMAXPROCS for a starting config, unless the
// GOMAXPROCS environment variable says what it must be.
func applyCaddyCPUs(setting string, pools int, logger *zap.Logger) {
	goProcs.Lock()
	defer goProcs.Unlock()
	goProcs.running++
	wasLent := goProcs.lent
	goProcs.lendable, goProcs.lent = false, false
	if envDecides("GOMAXPROCS", "caddy_cpus", setting, logger) {
		return
	}
	if goProcs.baseline == 0 {
		goProcs.baseline = runtime.GOMAXPROCS(0)
	}
	n := caddyCPUsFor(setting, goProcs.baseline, pools > 0)
	goProcs.lendable = n == 1 && goProcs.baseline >= 2 && (setting == "" || setting == CaddyCPUsAuto)
	prev := runtime.GOMAXPROCS(n)
	if wasLent {
		prev-- // the P lent for a collection was not the setting's
	}
	if prev != n {
		logger.Info("set how many CPUs Caddy's own code uses at once; the others stay free for the workers",
			zap.Int("caddy_cpus", n), zap.Int("cpus", goProcs.baseline), zap.String("setting", orAuto(setting)))
	}
}

// releaseCaddyCPUs undoes applyCaddyCPUs when the last config stops.
func releaseCaddyCPUs() {
	goProcs.Lock()
	defer goProcs.Unlock()
	goProcs.running--
	if goProcs.running == 0 && goProcs.baseline != 0 {
		runtime.GOMAXPROCS(goProcs.baseline)
		goProcs.baseline = 0
		goProcs.lendable, goProcs.lent = false, false
	}
}

// lendGCProc gives Caddy's Go code a second P for a garbage collection
// about to start or running, when caddy_cpus auto left it one of several
// CPUs: Go's mark workers and sweeper then run beside the requests instead
// of between them (see gcpoll.go). It reports whether the P is lent.
// GOMAXPROCS waits for a running mark phase to end, so the poller lends
// the P before the collection starts.
func lendGCProc() bool {
	goProcs.Lock()
	defer goProcs.Unlock()
	if goProcs.lent {
		return true
	}
	if !goProcs.lendable || runtime.GOMAXPROCS(0) != 1 {
		return false
	}
	runtime.GOMAXPROCS(2)
	goProcs.lent = true
	return true
}

// gcProcLent reports whether the P lendGCProc lent is still out.
func gcProcLent() bool {
	goProcs.Lock()
	defer goProcs.Unlock()
	return goProcs.lent
}

// returnGCProc takes back the P lendGCProc lent, unless a config started
// since has set GOMAXPROCS anew.
func returnGCProc() {
	goProcs.Lock()
	defer goProcs.Unlock()
	if goProcs.lent {
		goProcs.lent = false
		runtime.GOMAXPROCS(1)
	}
}

// cpuStatus is how many CPUs Caddy's Go code uses, in GET /hearth/apps.
func cpuStatus() (using, available int) {
	goProcs.Lock()
	defer goProcs.Unlock()
	using = runtime.GOMAXPROCS(0)
	if goProcs.lent {
		using-- // lent for a collection only
	}
	available = goProcs.baseline
	if available == 0 {
		available = using
	}
	return using, available
}

// envDecides reports whether the environment variable name is set, which
// overrides the Hearth option that sets the same Go setting, and warns
// when the option was set explicitly (and so is ignored).
func envDecides(name, option, setting string, logger *zap.Logger) bool {
	env := os.Getenv(name)
	if env == "" {
		return false
	}
	if setting != "" {
		logger.Warn("the "+name+" environment variable takes precedence; "+option+" is ignored",
			zap.String(name, env), zap.String(option, setting))
	}
	return true
}

func orAuto(setting string) string {
	if setting == "" {
		return CaddyCPUsAuto
	}
	return setting
}
