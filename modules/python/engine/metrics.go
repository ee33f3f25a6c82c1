package engine

import "github.com/prometheus/client_golang/prometheus"

// Metrics of every pool, labelled by app name. Histograms and counters
// live across reloads (a replaced pool and its successor add to the same
// series); gauges are read from the pools at scrape time (Gauges).
var (
	queueWaitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "hearth", Name: "queue_wait_seconds",
		Help: "Time requests waited for a free worker.",
	}, []string{"app"})
	requestDurationSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "hearth", Name: "request_duration_seconds",
		Help: "Time requests spent in a worker, from dispatch to the end of the response.",
	}, []string{"app"})
	restartsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "hearth", Name: "worker_restarts_total",
		Help: "Workers replaced, by reason (crash, timeout, max_requests, memory, lifetime, reload, scale).",
	}, []string{"app", "reason"})
)

// Metrics are the engine's histograms and counters, for a collector to
// describe and collect.
var Metrics = []prometheus.Collector{queueWaitSeconds, requestDurationSeconds, restartsTotal}

// Gauges are a pool's gauge values, to be summed per app.
type Gauges struct {
	Idle, Busy, Retiring int // workers in each state
	Queue                int // requests waiting for a worker
	RSS                  int64
}

// AddGauges adds the pool's gauge values to g.
func (p *Pool) AddGauges(g *Gauges) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g.Queue += len(p.waiters) + p.pipelined
	for _, w := range p.workers {
		if w.busy > 0 {
			g.Busy++
		} else {
			g.Idle++
		}
		g.RSS += w.rss
	}
	for _, w := range p.retiring {
		g.Retiring++
		g.RSS += w.rss
	}
}
