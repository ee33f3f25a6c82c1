package hearth

import (
	"fmt"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
)

// CaddyGCFloor settings. A size (like 64MiB) is also accepted.
const (
	// CaddyGCFloorAuto is a 128th of the memory Caddy may use (its Go
	// memory limit: GOMEMLIMIT, or what Caddy sets from the container's or
	// the machine's memory), at most maxAutoGCFloor: on a board with 1 or
	// 2 GiB it is below or near the heap Go's default lets Caddy reach
	// anyway, so memory goes to speed only where there is plenty.
	CaddyGCFloorAuto = "auto"
	// CaddyGCFloorOff leaves Go's garbage collector as it is.
	CaddyGCFloorOff = "off"
)

// maxAutoGCFloor is the auto floor on machines with ~9 GiB or more.
const maxAutoGCFloor = 64 << 20

// gcTuneEvery is how often the tuner looks at the live heap again.
const gcTuneEvery = time.Second

// maxGCPercent bounds the GC percent the floor may ask for (a heap of
// under a megabyte would otherwise ask for a huge one).
const maxGCPercent = 10000

// gcFloor arbitrates Go's GC percent, which is process-wide, between the
// hearth apps of the configs that run at once during a reload, like
// goProcs does for GOMAXPROCS: the newest started one decides (the one
// before it again once it stops first), and when the last one stops, the
// percent from before comes back.
var gcFloor struct {
	sync.Mutex
	started  []*floorSetting // of the hearth apps started and not stopped, oldest first
	floor    uint64          // the heap size below which Go should not collect; 0: off
	baseline int             // GC percent before Hearth changed it
	tuning   bool            // baseline is set and the tuner runs
	percent  int             // the GC percent set last
	stop     chan struct{}   // closed to stop the tuner
}

// parseCaddyGCFloor validates a caddy_gc_floor setting and returns the
// floor in bytes (0 for off).
func parseCaddyGCFloor(setting string) (uint64, error) {
	switch setting {
	case "", CaddyGCFloorAuto:
		return autoGCFloor(debug.SetMemoryLimit(-1)), nil
	case CaddyGCFloorOff:
		return 0, nil
	}
	n, err := humanize.ParseBytes(setting)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("caddy_gc_floor %q is not auto, off or a size; write it like 32MiB or 128MB", setting)
	}
	return n, nil
}

// autoGCFloor is the auto floor under a Go memory limit of memoryLimit
// bytes (math.MaxInt64 when there is none).
func autoGCFloor(memoryLimit int64) uint64 {
	return min(maxAutoGCFloor, uint64(max(memoryLimit, 0))/128)
}

// gcPercentFor is the GC percent that lets a heap whose live part is live
// bytes grow to floor bytes before the next collection, and never less
// than baseline: Go collects when the heap reaches live × (1 + percent/100).
func gcPercentFor(floor, live uint64, baseline int) int {
	if floor == 0 || baseline < 0 {
		return baseline // off, or the collector is off (GOGC=off) anyway
	}
	live = max(live, 1<<20)
	if live >= floor {
		return baseline
	}
	need := (floor - live) * 100 / live
	return max(baseline, int(min(need, maxGCPercent)))
}

// floorSetting is what one started config's caddy_gc_floor gives.
type floorSetting struct {
	floor  uint64 // 0: off
	env    bool   // GOGC decides
	logger *zap.Logger
}

// applyCaddyGCFloor sets the GC floor for a starting config, unless the
// GOGC environment variable says how Go collects, and returns the setting
// for releaseCaddyGCFloor.
func applyCaddyGCFloor(setting string, pools int, logger *zap.Logger) *floorSetting {
	floor, _ := parseCaddyGCFloor(setting) // validated in Provision
	if pools == 0 {
		floor = 0
	}
	gcFloor.Lock()
	defer gcFloor.Unlock()
	s := &floorSetting{floor: floor, env: envDecides("GOGC", "caddy_gc_floor", setting, logger), logger: logger}
	gcFloor.started = append(gcFloor.started, s)
	useFloorLocked(s)
	if floor != 0 && !s.env {
		logger.Debug("Caddy's heap may grow to the GC floor before Go collects garbage",
			zap.String("caddy_gc_floor", humanize.IBytes(floor)), zap.Int("gc_percent", gcFloor.percent))
	}
	return s
}

// useFloorLocked makes s the floor in force.
func useFloorLocked(s *floorSetting) {
	if s.env {
		return
	}
	if !gcFloor.tuning {
		if s.floor == 0 {
			return // nothing to change, nothing to follow
		}
		gcFloor.baseline = readGCPercent()
		gcFloor.percent = gcFloor.baseline
		gcFloor.stop = make(chan struct{})
		gcFloor.tuning = true
		stop := gcFloor.stop
		panics.Go(s.logger, "tuning the GC floor", func() { tuneGC(stop) })
	}
	gcFloor.floor = s.floor
	retuneGCLocked()
}

// releaseCaddyGCFloor undoes applyCaddyGCFloor for the config that set s:
// the newest config still started decides again, and when none is left,
// the GC percent from before comes back.
func releaseCaddyGCFloor(s *floorSetting) {
	gcFloor.Lock()
	defer gcFloor.Unlock()
	newest, found := dropStarted(&gcFloor.started, s)
	switch {
	case !found:
	case len(gcFloor.started) == 0:
		if gcFloor.tuning {
			close(gcFloor.stop)
			gcFloor.tuning = false
			debug.SetGCPercent(gcFloor.baseline)
			gcFloor.percent = gcFloor.baseline
		}
	case newest:
		useFloorLocked(gcFloor.started[len(gcFloor.started)-1])
	}
}

// tuneGC follows the live heap: as it grows, the percent needed to reach
// the floor shrinks, down to the baseline once the heap is past it.
func tuneGC(stop chan struct{}) {
	tick := time.NewTicker(gcTuneEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			gcFloor.Lock()
			if gcFloor.tuning {
				retuneGCLocked()
			}
			gcFloor.Unlock()
		}
	}
}

// retuneGCLocked sets the GC percent the floor asks for now, when it
// differs by more than a tenth from the one set (the live heap wobbles
// from one collection to the next).
func retuneGCLocked() {
	want := gcPercentFor(gcFloor.floor, readLiveHeap(), gcFloor.baseline)
	if want == gcFloor.percent {
		return
	}
	if diff := math.Abs(float64(want - gcFloor.percent)); want != gcFloor.baseline && diff*10 < float64(gcFloor.percent) {
		return
	}
	debug.SetGCPercent(want)
	gcFloor.percent = want
}

// gcStatus is the GC percent in use, in GET /hearth/apps.
func gcStatus() int {
	return readGCPercent()
}

func readGCPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	v := s[0].Value.Uint64()
	if v > math.MaxInt32 {
		return -1 // GOGC=off reads as a huge number
	}
	return int(v)
}

func readLiveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
