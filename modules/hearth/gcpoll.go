package hearth

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
)

// Requests during a garbage collection, with one P.
//
// With caddy_cpus auto on a 2-CPU machine Caddy's Go code runs on one P.
// A collection's mark phase then takes a quarter of that P or more, and
// slows the requests' own code (assists, write barriers); after it, Go's
// background sweeper frees the heap's spans in batches and yields between
// them through the global run queue, and Go's scheduler takes work from
// its run queues before it looks at the network: until the sweep is done
// (~7 ms for a 64 MiB heap on the bench's VM) neither a new request nor a
// worker's answer is seen, except by sysmon's poll every 10 ms. Each
// collection so adds milliseconds to the requests of that moment: most of
// the p99 at a quarter of the peak load (tests/bench/analysis.md,
// "Garbage collection and the tail").
//
// The GC poller watches the heap through runtime/metrics and, from just
// before a collection starts until its sweep is done, lends Caddy a
// second P (lendProc: only under caddy_cpus auto, which took the CPUs
// away): the mark workers and the sweeper run on it, beside the requests.
// Where no P can be lent (one CPU, or caddy_cpus 1), it makes Go poll the
// network instead every gcPollEvery while the collection and its sweep
// run: Go polls it whenever it restarts the world after stopping it, and
// runtime.ReadMemStats stops it for about a microsecond on one P. Between
// collections it samples more often as the heap nears the point where the
// last one started, and rarely when the heap does not grow (an idle
// server): each wake-up costs Caddy's P a context switch.

// gcPollEvery is how often the network is polled while a collection or
// its sweep runs.
const gcPollEvery = 250 * time.Microsecond

// gcWatchEvery is how often the heap is sampled once it is near the point
// where the next collection should start.
const gcWatchEvery = time.Millisecond

// gcPollIdle is the longest wait between samples (a heap that does not
// grow).
const gcPollIdle = 100 * time.Millisecond

// gcSweepAtMost bounds how long after a collection the sweep is taken to
// run, however the heap's numbers look.
const gcSweepAtMost = 50 * time.Millisecond

// gcFirstTrigger is where a collection is expected to start before one
// has been seen: the lowest trigger Go's pacer sets, 45/64 of the way from
// the live heap to the goal.
const gcFirstTrigger = 0.7

// gcWatchMargin is how far before the last collection's start (as a
// fraction of the way to the goal) the watch at gcWatchEvery begins.
const gcWatchMargin = 0.05

// gcSweepQuiet is how long nothing must be freed for a sweep to count as
// done: a run of spans with nothing to free, or a sweeper waiting for the
// P, looks the same for a sample or two.
const gcSweepQuiet = 2 * time.Millisecond

// gcLowestTrigger bounds the start point the poller learns from below: a
// collection Go starts for another reason than the heap's growth (its
// two-minute periodic one, runtime.GC) would otherwise teach it to watch
// all the time.
const gcLowestTrigger = 0.5

// gcMarkAtMost is how long the pause count may show a mark phase with
// nothing changing before the poller takes the extra pause for one it
// does not know (Go restarts a mark termination now and then) and counts
// from there.
const gcMarkAtMost = time.Second

// gcPollAside is how often the poller looks whether Caddy's Go code is
// down to one P again, while it has more.
const gcPollAside = time.Second

// gcPoll runs one poller while any started config runs pools.
var gcPoll struct {
	sync.Mutex
	running int           // started configs with pools
	stop    chan struct{} // closed to stop the poller
}

// applyGCPoll starts the poller for a starting config with pools and
// reports whether it counted the config (releaseGCPoll undoes it then).
func applyGCPoll(pools int, logger *zap.Logger) bool {
	if pools == 0 {
		return false
	}
	gcPoll.Lock()
	defer gcPoll.Unlock()
	gcPoll.running++
	if gcPoll.running == 1 {
		stop := make(chan struct{})
		gcPoll.stop = stop
		panics.Go(logger, "polling the network during garbage collections", func() { pollDuringGC(stop, gcHelpBelow) })
	}
	return true
}

// releaseGCPoll undoes applyGCPoll; the last one stops the poller.
func releaseGCPoll() {
	gcPoll.Lock()
	defer gcPoll.Unlock()
	gcPoll.running--
	if gcPoll.running == 0 {
		close(gcPoll.stop)
	}
}

// pollDuringGC samples the heap until stop is closed and, while a
// collection nears or runs on a single P, lends a second P or polls the
// network, unless Caddy used helpBelow CPUs or more since the collection
// before. Every loadEvery it also decides whether Caddy's load and the
// workers' idleness call for the second P (cpulend.go); while it is lent
// for that, collections need nothing more.
//
// lendProc and returnProc call runtime.GOMAXPROCS, which waits for a
// running mark phase to end. The poller does not lend during one, but one
// may start between a sample and the call: the P then comes after that
// mark (milliseconds), and a reload's applyCaddyCPUs waits as long.
func pollDuringGC(stop chan struct{}, helpBelow float64) {
	var plan gcPollPlan
	var stats runtime.MemStats // ReadMemStats fills it; only its stop of the world is wanted
	var busy cpuMeter
	var load loadLender
	reader := newHeapReader()
	help := false  // this collection gets a P or polls
	phase := gcFar // at the last sample
	timer := time.NewTimer(0)
	defer func() {
		timer.Stop()
		returnProc(lentForGC | lentForLoad) // if lent
	}()
	for {
		select {
		case <-stop:
			return
		case <-timer.C:
		}
		if _, _, lendable := lendShape(); !lendable {
			load = loadLender{} // nothing to lend: no look (caddy_cpus 1 or all, one CPU)
		} else if time.Since(load.at) >= loadEvery && phase != gcMarking { // GOMAXPROCS would wait for the mark to end
			if load.wants(procLent(lentForLoad)) {
				lendProc(lentForLoad)
			} else {
				returnProc(lentForLoad)
			}
		}
		if procLent(lentForLoad) { // every CPU already: a collection needs no help
			returnProc(lentForGC)
			plan, phase, help = gcPollPlan{}, gcFar, false
			timer.Reset(loadEvery)
			continue
		}
		lent := procLent(lentForGC)              // goProcs's: a config started since may have set GOMAXPROCS anew
		if !lent && runtime.GOMAXPROCS(0) != 1 { // with more, an idle P's thread waits on the network
			plan, phase = gcPollPlan{}, gcFar // a stale sample would misread the rate after a change back
			if _, _, lendable := lendShape(); lendable {
				timer.Reset(loadEvery) // the load may call for the CPUs caddy_cpus auto left out
			} else {
				timer.Reset(gcPollAside)
			}
			continue
		}
		last := phase
		var wait time.Duration
		phase, wait = plan.next(reader.read())
		if phase != gcFar && (last == gcFar || (last == gcSweeping && phase != gcSweeping)) {
			help = busy.below(helpBelow) // a collection comes (or came): was Caddy saturated since the last one?
		}
		switch {
		case phase == gcFar || !help:
			if lent && phase != gcMarking { // GOMAXPROCS would wait for the mark to end
				returnProc(lentForGC)
			}
		case lent:
		case phase != gcMarking && lendProc(lentForGC): // GOMAXPROCS would wait for the mark to end
		case phase != gcNear:
			runtime.ReadMemStats(&stats) // restarting the world polls the network
			timer.Reset(gcPollEvery)
			continue
		}
		if phase != gcFar {
			wait = max(wait, gcWatchEvery) // a lent P's idle thread polls the network
		}
		timer.Reset(min(wait, loadEvery))
	}
}

// gcHelpBelow is how much of a CPU Caddy may have used since the last
// collection for the next one to get a P or polls. A saturated Caddy finds
// requests waiting whenever it looks at the network, and there a second P
// costs more in its threads' wake-ups than it gives (analysis.md).
const gcHelpBelow = 0.85

// cpuMeter measures the process's CPU use between its readings.
type cpuMeter struct {
	at  time.Time
	cpu time.Duration
}

// below reports whether the process used less than cpus CPUs since the
// last reading (true for the first).
func (m *cpuMeter) below(cpus float64) bool {
	used, known, err := m.used()
	return err == nil && (!known || used < cpus)
}

// used is how many CPUs the process used since the last reading; known
// is false for the first.
func (m *cpuMeter) used() (cpus float64, known bool, err error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false, err
	}
	now := time.Now()
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	last := *m
	m.at, m.cpu = now, cpu
	if last.at.IsZero() || !now.After(last.at) {
		return 0, false, nil
	}
	return float64(cpu-last.cpu) / float64(now.Sub(last.at)), true, nil
}

// heapSample is what the poller reads of the heap at one moment.
type heapSample struct {
	at      time.Time
	objects uint64 // bytes in objects, live or not yet swept
	live    uint64 // bytes the last collection marked live
	goal    uint64 // the heap size Go aims to collect at
	frees   uint64 // bytes freed by sweeping, ever
	cycles  uint64 // collections completed
	pauses  uint64 // stops of the world for collections: two per completed one, one more while one marks
}

var heapSampleNames = []string{
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/live:bytes",
	"/gc/heap/goal:bytes",
	"/gc/heap/frees:bytes",
	"/gc/cycles/total:gc-cycles",
	"/sched/pauses/total/gc:seconds",
}

// heapReader reads heap samples, reusing its runtime/metrics samples.
type heapReader []metrics.Sample

func newHeapReader() heapReader {
	s := make(heapReader, len(heapSampleNames))
	for i, name := range heapSampleNames {
		s[i].Name = name
	}
	return s
}

func (s heapReader) read() heapSample {
	metrics.Read(s)
	h := heapSample{at: time.Now()}
	for i, dst := range []*uint64{&h.objects, &h.live, &h.goal, &h.frees, &h.cycles} {
		if s[i].Value.Kind() == metrics.KindUint64 {
			*dst = s[i].Value.Uint64()
		}
	}
	if v := s[len(s)-1].Value; v.Kind() == metrics.KindFloat64Histogram {
		for _, n := range v.Float64Histogram().Counts {
			h.pauses += n
		}
	}
	return h
}

// progress is how far the heap is from the live heap to the goal: 0 just
// after a sweep, 1 at the goal.
func (h heapSample) progress() float64 {
	if h.goal <= h.live {
		return 1
	}
	if h.objects <= h.live {
		return 0
	}
	return float64(h.objects-h.live) / float64(h.goal-h.live)
}

// gcPhase is where the heap is in Go's collection cycle, as the poller
// sees it.
type gcPhase int

const (
	gcFar      gcPhase = iota // between collections, short of the watch
	gcNear                    // close to where the last collection started
	gcMarking                 // a collection's mark phase runs
	gcSweeping                // a collection ended and its sweep runs
)

func (p gcPhase) String() string {
	switch p {
	case gcFar:
		return "far"
	case gcNear:
		return "near"
	case gcMarking:
		return "marking"
	case gcSweeping:
		return "sweeping"
	}
	return "unknown"
}

// gcPollPlan decides, from one heap sample to the next, where the heap is
// and when to look again.
type gcPollPlan struct {
	last       heapSample
	trigger    float64   // the progress at which the last collection started (at most)
	excess     int64     // GC pauses counted beyond two per cycle and not a mark phase
	markSince  time.Time // since when the pause count has shown the same mark phase
	markCycles uint64    // completed collections when the pause count first showed it
	sweepFrom  time.Time // when the last collection ended, while its sweep runs
	freedAt    time.Time // the last sample at which the sweep had freed more
	grewAt     time.Time // the last sample at which the heap had grown
}

// marking reports whether a collection's mark phase runs: it started (one
// stop of the world) and has not ended (the second).
func (p *gcPollPlan) marking(h heapSample) bool {
	return int64(h.pauses)-2*int64(h.cycles) > p.excess
}

// next takes a new sample and returns the phase and how long to wait for
// the next sample.
func (p *gcPollPlan) next(h heapSample) (gcPhase, time.Duration) {
	last := p.last
	p.last = h
	d := int64(h.pauses) - 2*int64(h.cycles)
	if d < p.excess && h.pauses == last.pauses && h.cycles == last.cycles {
		// A mark longer than gcMarkAtMost was taken for an extra pause.
		// Only on two equal samples: Go counts a collection's end before
		// its pause, so one sample can fall between the two.
		p.excess = d
	}
	known := !last.at.IsZero() && h.at.After(last.at)
	if p.trigger == 0 {
		p.trigger = gcFirstTrigger
	}
	if p.marking(h) {
		if !known || !p.marking(last) {
			p.markCycles = h.cycles
		}
		if !known || h.pauses != last.pauses || h.cycles != last.cycles || !p.marking(last) {
			p.markSince = h.at
		}
		// No mark lasts over two completed collections: a count that says
		// so has an extra pause in it (Go restarted a mark termination).
		if h.at.Sub(p.markSince) <= gcMarkAtMost && h.cycles < p.markCycles+2 {
			if known && !p.marking(last) && last.cycles == h.cycles {
				p.trigger = max(last.progress(), gcLowestTrigger) // it started after the last sample
			}
			p.sweepFrom = time.Time{}
			return gcMarking, gcPollEvery
		}
		p.excess = d // a pause that was not a mark's start
	}
	if h.frees != last.frees {
		p.freedAt = h.at
	}
	if known && h.cycles != last.cycles {
		p.sweepFrom = h.at
	} else if !p.sweepFrom.IsZero() && (h.at.Sub(p.freedAt) >= gcSweepQuiet || h.at.Sub(p.sweepFrom) >= gcSweepAtMost) {
		p.sweepFrom = time.Time{} // nothing freed for gcSweepQuiet: swept
	}
	if !p.sweepFrom.IsZero() {
		return gcSweeping, gcPollEvery
	}
	growing := known && h.cycles == last.cycles && h.objects > last.objects
	if growing || p.grewAt.IsZero() {
		p.grewAt = h.at
	}
	watch := max(p.trigger-gcWatchMargin, 0)
	if h.progress() >= watch {
		if growing {
			return gcNear, gcWatchEvery
		}
		if h.at.Sub(p.grewAt) < gcPollIdle {
			return gcNear, 10 * gcWatchEvery // a pause in the traffic, or its end
		}
		return gcFar, gcPollIdle // the heap stopped short of a collection: an idle server
	}
	if !known || h.cycles != last.cycles {
		return gcFar, 10 * gcWatchEvery // no rate to go by yet
	}
	if !growing {
		return gcFar, gcPollIdle // an idle server
	}
	// Half the time the heap takes to reach the watch at its present rate.
	left := watch*float64(h.goal-h.live) - float64(h.objects-min(h.objects, h.live))
	perByte := float64(h.at.Sub(last.at)) / float64(h.objects-last.objects)
	return gcFar, time.Duration(min(max(left*perByte/2, float64(gcWatchEvery)), float64(gcPollIdle)))
}
