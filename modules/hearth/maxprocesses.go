package hearth

import (
	"fmt"
	"strconv"
	"sync"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// MaxProcessesOff is the max_processes setting that sets no process limit.
const MaxProcessesOff = "off"

// maxMaxProcesses is the most max_processes accepted: Linux's most
// process ids (PID_MAX_LIMIT), above which a limit means nothing.
const maxMaxProcesses = 1 << 22

// parseMaxProcesses reads a max_processes setting: "" is the default,
// "off" is 0 (no limit).
func parseMaxProcesses(setting string) (uint64, error) {
	switch setting {
	case "":
		return supervisor.DefaultMaxProcesses, nil
	case MaxProcessesOff:
		return 0, nil
	}
	n, err := strconv.ParseUint(setting, 10, 64)
	if err != nil || n < supervisor.MinMaxProcesses || n > maxMaxProcesses {
		return 0, fmt.Errorf("max_processes %q is not off or a number of processes and threads from %d to %d (default %d)",
			setting, supervisor.MinMaxProcesses, maxMaxProcesses, supervisor.DefaultMaxProcesses)
	}
	return n, nil
}

// maxProcessesSetter is the hearth app whose Start set the process limit
// in force, and the limit before it: the newest started config decides
// (processes started from then on get its limit), and a config that
// Caddy stops because another of its apps failed to start gives back the
// limit it replaced.
var maxProcessesSetter struct {
	sync.Mutex
	app      *App
	previous uint64
	applied  bool // a config has set it since Caddy started
}

// applyMaxProcesses makes a's setting the process limit of what starts
// from now on. A change is logged: processes already running keep the
// limit they started with until they are restarted.
func (a *App) applyMaxProcesses() {
	n, _ := parseMaxProcesses(a.MaxProcesses) // checked at Provision
	maxProcessesSetter.Lock()
	defer maxProcessesSetter.Unlock()
	previous := supervisor.SetMaxProcesses(n)
	reload := maxProcessesSetter.applied // (at Caddy's start, previous is the default)
	maxProcessesSetter.app, maxProcessesSetter.previous, maxProcessesSetter.applied = a, previous, true
	if previous != n && reload {
		a.logger.Info("max_processes changed: processes started from now on as an app's account get the new limit; running ones keep theirs until they restart (caddy hearth restart <app>)",
			zap.Uint64("max_processes", n), zap.Uint64("previous", previous))
	}
}

// releaseMaxProcesses gives back the limit a replaced, if a's is still
// the one in force (a config that fails to start, or the last one
// stopping); a config replaced by a newer one leaves the newer's.
func (a *App) releaseMaxProcesses() {
	maxProcessesSetter.Lock()
	defer maxProcessesSetter.Unlock()
	if maxProcessesSetter.app == a {
		supervisor.SetMaxProcesses(maxProcessesSetter.previous)
		maxProcessesSetter.app = nil
	}
}
