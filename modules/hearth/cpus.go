package hearth

import (
	"fmt"
	"os"
	"runtime"
	"slices"
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
// started one decides; when it stops while an older one runs (a config
// refused after its hearth app started: Caddy stops it, and the running
// config stays), the older one decides again; when the last one stops,
// Go's setting from before Hearth changed it comes back.
var goProcs struct {
	sync.Mutex
	started  []*cpuSetting // of the hearth apps started and not stopped, oldest first
	baseline int           // GOMAXPROCS before Hearth changed it; 0 until then
	procs    int           // GOMAXPROCS the newest config's setting gives; 0 when the environment decides
	lendable bool          // caddy_cpus auto left Caddy fewer Ps than CPUs: more may be lent
	lent     lendReason    // why lendProc raised GOMAXPROCS above procs; 0 when it did not
}

// lendReason is why a second P is lent to Caddy's Go code under
// caddy_cpus auto; the P stays lent while any reason holds.
type lendReason uint8

const (
	// lentForGC: a garbage collection nears or runs on Caddy's one P
	// (gcpoll.go): a second P.
	lentForGC lendReason = 1 << iota
	// lentForLoad: Caddy's Ps are saturated while the workers are idle
	// (cpulend.go): every CPU.
	lentForLoad
)

// lentProcs is GOMAXPROCS while the P is lent for reasons (goProcs locked).
func lentProcs(reasons lendReason) int {
	n := goProcs.procs
	if reasons&lentForGC != 0 {
		n = max(n, 2)
	}
	if reasons&lentForLoad != 0 {
		n = max(n, goProcs.baseline)
	}
	return n
}

// String is the reason as GET /hearth/apps shows it.
func (r lendReason) String() string {
	switch {
	case r&lentForLoad != 0:
		return "idle_workers"
	case r&lentForGC != 0:
		return "garbage_collection"
	}
	return ""
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

// cpuSetting is what one started config's caddy_cpus gives.
type cpuSetting struct {
	procs    int  // GOMAXPROCS; 0 when the environment decides
	lendable bool // caddy_cpus auto left Caddy fewer Ps than CPUs
}

// applyCaddyCPUs sets GOMAXPROCS for a starting config, unless the
// GOMAXPROCS environment variable says what it must be, and returns the
// setting for releaseCaddyCPUs.
func applyCaddyCPUs(setting string, pools int, logger *zap.Logger) *cpuSetting {
	goProcs.Lock()
	defer goProcs.Unlock()
	s := &cpuSetting{}
	goProcs.started = append(goProcs.started, s)
	prev := goProcs.procs
	if envDecides("GOMAXPROCS", "caddy_cpus", setting, logger) {
		useCPUSettingLocked(s)
		return s
	}
	if goProcs.baseline == 0 {
		goProcs.baseline = runtime.GOMAXPROCS(0)
	}
	if prev == 0 {
		prev = runtime.GOMAXPROCS(0)
	}
	n := caddyCPUsFor(setting, goProcs.baseline, pools > 0)
	s.procs, s.lendable = n, n < goProcs.baseline && (setting == "" || setting == CaddyCPUsAuto)
	useCPUSettingLocked(s)
	if prev != n {
		logger.Info("set how many CPUs Caddy's own code uses at once; the others stay free for the workers",
			zap.Int("caddy_cpus", n), zap.Int("cpus", goProcs.baseline), zap.String("setting", orAuto(setting)))
	}
	return s
}

// useCPUSettingLocked makes s the setting in force (a lent P is taken
// back: the setting decides anew).
func useCPUSettingLocked(s *cpuSetting) {
	goProcs.procs, goProcs.lendable, goProcs.lent = s.procs, s.lendable, 0
	if s.procs > 0 {
		runtime.GOMAXPROCS(s.procs)
	}
}

// releaseCaddyCPUs undoes applyCaddyCPUs for the config that set s: the
// newest config still started decides again, and when none is left,
// GOMAXPROCS from before comes back.
func releaseCaddyCPUs(s *cpuSetting) {
	goProcs.Lock()
	defer goProcs.Unlock()
	newest, found := dropStarted(&goProcs.started, s)
	switch {
	case !found:
	case len(goProcs.started) == 0:
		if goProcs.baseline != 0 {
			runtime.GOMAXPROCS(goProcs.baseline)
		}
		goProcs.baseline, goProcs.procs = 0, 0
		goProcs.lendable, goProcs.lent = false, 0
	case newest:
		useCPUSettingLocked(goProcs.started[len(goProcs.started)-1])
	}
}

// dropStarted removes s from started (the settings of the configs started
// and not stopped, oldest first) and reports whether it was the newest,
// which decided: then the one before it decides again.
func dropStarted[T comparable](started *[]T, s T) (newest, found bool) {
	i := slices.Index(*started, s)
	if i < 0 {
		return false, false
	}
	newest = i == len(*started)-1
	*started = slices.Delete(*started, i, i+1)
	return newest, true
}

// lendProc lends Caddy's Go code more Ps for reason, when caddy_cpus auto
// left it fewer than the CPUs, and reports whether they are lent: a
// second P for a garbage collection on its one P, whose mark workers and
// sweeper then run beside the requests instead of between them
// (gcpoll.go); every CPU for a saturated Caddy whose workers are idle
// (cpulend.go). GOMAXPROCS waits for a running mark phase to end.
func lendProc(reason lendReason) bool {
	goProcs.Lock()
	defer goProcs.Unlock()
	if !goProcs.lendable || (reason == lentForGC && goProcs.procs != 1) {
		return false
	}
	before, after := lentProcs(goProcs.lent), lentProcs(goProcs.lent|reason)
	goProcs.lent |= reason
	if after != before {
		runtime.GOMAXPROCS(after)
	}
	return true
}

// procLent reports whether the P lendProc lent is out for reason.
func procLent(reason lendReason) bool {
	goProcs.Lock()
	defer goProcs.Unlock()
	return goProcs.lent&reason != 0
}

// returnProc gives up reason for the lent Ps, and takes back what no
// other reason holds; a config started since has set GOMAXPROCS anew and
// cleared every reason.
func returnProc(reason lendReason) {
	goProcs.Lock()
	defer goProcs.Unlock()
	if goProcs.lent&reason == 0 {
		return
	}
	before, after := lentProcs(goProcs.lent), lentProcs(goProcs.lent&^reason)
	goProcs.lent &^= reason
	if after != before {
		runtime.GOMAXPROCS(after)
	}
}

// lendShape is how many Ps caddy_cpus auto gave Caddy and how many more
// CPUs there are, when it may be lent more (ok).
func lendShape() (procs, spare int, ok bool) {
	goProcs.Lock()
	defer goProcs.Unlock()
	return goProcs.procs, goProcs.baseline - goProcs.procs, goProcs.lendable
}

// cpuStatus is how many CPUs Caddy's Go code uses, in GET /hearth/apps,
// and why a second one is lent to it, if it is.
func cpuStatus() (using, available int, lent lendReason) {
	goProcs.Lock()
	defer goProcs.Unlock()
	using = goProcs.procs // what is lent is not the setting's
	if using == 0 {
		using = runtime.GOMAXPROCS(0)
	}
	available = goProcs.baseline
	if available == 0 {
		available = using
	}
	return using, available, goProcs.lent
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
