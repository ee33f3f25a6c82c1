package hearth

import "time"

// A second P while the workers are idle.
//
// caddy_cpus auto keeps Caddy's Go code to half of the CPUs (one P on a
// 2-CPU machine) so that the workers have the others: there a second P
// costs Caddy more in thread wake-ups than it gives (analysis.md). But
// when Caddy's work is not the workers' (static files, TLS, a proxied
// service) and the workers are idle, their CPUs idle while Caddy's Ps are
// saturated: a site's static files were served at 22.6–24k req/s with one
// P and 34–40k with two (tests/bench/analysis.md, "One P for static
// files").
//
// So the GC poller (gcpoll.go) also looks, every loadEvery, at how much
// CPU Caddy used and how busy the pools' workers were, and lends Caddy
// every CPU (lendProc) while it used loadLendFrom of its Ps or more and
// the workers were busy less than workersIdleBelow of the time per CPU
// left to them; it takes them back once the workers are busy
// workersBusyFrom of that time or more, or Caddy uses less than
// loadKeepFrom of its own Ps. The gap between the two sets of thresholds
// keeps a load near one of them from switching at every look. Only pools
// that measure their workers (BusyTimer: the Python apps) are looked at:
// with none, nothing is lent; process upstreams and services are not.

// loadEvery is how often the load is looked at.
const loadEvery = 100 * time.Millisecond

const (
	// loadLendFrom is how much CPU Caddy must have used, per P of its
	// setting, for the CPUs to be lent: its Ps saturated.
	loadLendFrom = 0.9
	// loadKeepFrom is how much CPU Caddy must keep using, per P of its
	// setting, for the CPUs to stay lent.
	loadKeepFrom = 0.6
	// workersIdleBelow is the workers' busy time, as a share of the wall
	// time summed over workers (0.1: one worker busy a tenth of the time),
	// per CPU left to the workers, under which the CPUs may be lent.
	workersIdleBelow = 0.1
	// workersBusyFrom is the workers' busy time, per CPU left to them,
	// from which lent CPUs are taken back.
	workersBusyFrom = 0.25
)

// BusyTimer is a pool that measures how long its workers have had
// requests; Caddy is lent a second CPU only while they are idle.
type BusyTimer interface {
	// BusyTime is how long the pool's workers have had a request or been starting,
	// summed over the workers, since the pool started.
	BusyTime() time.Duration
}

// loadLender decides, from one look to the next, whether Caddy's load
// calls for the second P.
type loadLender struct {
	caddy cpuMeter
	busy  map[any]time.Duration // each pool's BusyTime at the last look
	at    time.Time             // the last look
}

// wants looks at the load since the last look and reports whether the
// CPUs should be lent now (lent: they are).
func (l *loadLender) wants(lent bool) bool {
	caddy, known, err := l.caddy.used()
	workers, workersKnown := l.workersBusy()
	procs, spare, lendable := lendShape()
	if err != nil || !known || !workersKnown || !lendable || procs < 1 || spare < 1 {
		return false
	}
	return lendForLoad(caddy/float64(procs), workers/float64(spare), lent)
}

// lendForLoad is the decision of wants: caddy is the CPU Caddy used per P
// of its setting, workers the share of the time the workers were busy per
// CPU left to them.
func lendForLoad(caddy, workers float64, lent bool) bool {
	if lent {
		return caddy >= loadKeepFrom && workers < workersBusyFrom
	}
	return caddy >= loadLendFrom && workers < workersIdleBelow
}

// workersBusy is the pools' workers' busy time since the last look, per
// unit of wall time; known is false for the first look and when no pool
// measures its workers (nothing says they idle). A pool that started
// since counts from the next look, one that stopped is left out.
func (l *loadLender) workersBusy() (busy float64, known bool) {
	now := time.Now()
	seen := make(map[any]time.Duration, len(l.busy))
	var sum time.Duration
	pools.Range(func(_, v any) bool {
		p, ok := v.(BusyTimer)
		if !ok {
			return true
		}
		t := p.BusyTime()
		if last, ok := l.busy[v]; ok && t > last {
			sum += t - last
		}
		seen[v] = t
		return true
	})
	last := l.at
	l.busy, l.at = seen, now
	if last.IsZero() || !now.After(last) || len(seen) == 0 {
		return 0, false
	}
	return float64(sum) / float64(now.Sub(last)), true
}
