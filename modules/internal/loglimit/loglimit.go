// Package loglimit lets a repeated warning through at most once in a
// while, counting the ones it held back: what a client can trigger at will
// (a scanner asking for /.env, a foreign Host, a link that leads where it
// should not) must not fill the log.
package loglimit

import (
	"sync/atomic"
	"time"
)

// Limit lets a warning through at most once per Every, and counts the ones
// it held back since. The zero value lets every warning through.
type Limit struct {
	// Every is the least time between two warnings let through.
	Every   time.Duration
	last    atomic.Int64 // unix nanoseconds of the last one let through
	skipped atomic.Int64
}

// Allow reports whether a warning may be logged now, and how many were
// held back since the last one.
func (l *Limit) Allow() (bool, int64) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(l.Every) || !l.last.CompareAndSwap(last, now) {
		l.skipped.Add(1)
		return false, 0
	}
	return true, l.skipped.Swap(0)
}
