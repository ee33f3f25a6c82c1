package guard

import (
	"sync/atomic"
	"time"
)

// logLimit lets a warning through at most once per every, and counts the
// ones it held back since.
type logLimit struct {
	every   time.Duration
	last    atomic.Int64 // unix nanoseconds of the last one let through
	skipped atomic.Int64
}

// allow reports whether a warning may be logged now, and how many were
// held back since the last one.
func (l *logLimit) allow() (bool, int64) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(l.every) || !l.last.CompareAndSwap(last, now) {
		l.skipped.Add(1)
		return false, 0
	}
	return true, l.skipped.Swap(0)
}
