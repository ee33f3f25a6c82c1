// Package memory says how much memory Caddy may count on, for the bounds
// Hearth derives from it (the held budget's disk part on a tmpfs,
// hearth_io's max_connections).
package memory

import (
	"math"
	"runtime/debug"
	"syscall"
)

// Total is the machine's memory, or the container's as Caddy gave it to
// Go (its memory limit, from the cgroup), whichever is less; 0 when
// neither is known.
func Total() int64 {
	memory := debug.SetMemoryLimit(-1)
	var info syscall.Sysinfo_t
	if syscall.Sysinfo(&info) == nil {
		memory = min(memory, int64(min(uint64(info.Totalram)*uint64(info.Unit), math.MaxInt64)))
	}
	if memory == math.MaxInt64 {
		return 0
	}
	return memory
}
