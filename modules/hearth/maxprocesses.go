package hearth

import (
	"fmt"
	"strconv"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// MaxProcessesOff is the max_processes setting that sets no process limit.
const MaxProcessesOff = "off"

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
	if err != nil || n < supervisor.MinMaxProcesses {
		return 0, fmt.Errorf("max_processes %q is not off or a number of processes and threads of at least %d (default %d)",
			setting, supervisor.MinMaxProcesses, supervisor.DefaultMaxProcesses)
	}
	return n, nil
}

// applyMaxProcesses makes setting the process limit of what starts from
// now on, and returns what undoes it (for a config that fails to start).
// A change is logged: processes already running keep the limit they
// started with until they are restarted.
func applyMaxProcesses(setting string, logger *zap.Logger) (undo func()) {
	n, _ := parseMaxProcesses(setting) // checked at Provision
	previous := supervisor.SetMaxProcesses(n)
	if previous != n {
		logger.Info("max_processes changed: processes started from now on as an app's account get the new limit; running ones keep theirs until they restart (caddy hearth restart <app>)",
			zap.Uint64("max_processes", n), zap.Uint64("previous", previous))
	}
	return func() { supervisor.SetMaxProcesses(previous) }
}
