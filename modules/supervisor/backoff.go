package supervisor

import "time"

// Backoff computes restart delays for a process that keeps failing: the
// delay doubles with each consecutive failure, from Min up to Max. A process
// that stayed up for at least Stable counts as healthy and resets the count.
type Backoff struct {
	Min, Max, Stable time.Duration
	failures         int
}

// DefaultBackoff is the restart policy of worker pools: 100ms doubling up to
// 30s; a worker that ran for 10s resets it.
func DefaultBackoff() Backoff {
	return Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, Stable: 10 * time.Second}
}

// Failed records a failure of a process that ran for lived and returns how
// long to wait before the next start.
func (b *Backoff) Failed(lived time.Duration) time.Duration {
	if lived >= b.Stable {
		b.failures = 0
	}
	b.failures++
	d := b.Min
	for i := 1; i < b.failures && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	return d
}

// Succeeded resets the failure count.
func (b *Backoff) Succeeded() { b.failures = 0 }

// Failures is the number of consecutive failures recorded.
func (b *Backoff) Failures() int { return b.failures }
