package engine

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of every pool, labelled by app name. Histograms and counters
// live across reloads (a replaced pool and its successor add to the same
// series); gauges are read from the pools at scrape time (Gauges).
var (
	queueWaitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "hearth", Name: "queue_wait_seconds",
		Help:    "Time requests waited for a free worker.",
		Buckets: durationBuckets,
	}, []string{"app"})
	requestDurationSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "hearth", Name: "request_duration_seconds",
		Help:    "Time requests spent in a worker, from dispatch to the end of the response.",
		Buckets: durationBuckets,
	}, []string{"app"})
	restartsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "hearth", Name: "worker_restarts_total",
		Help: "Workers replaced, by reason (crash, timeout, max_requests, memory, lifetime, reload, scale).",
	}, []string{"app", "reason"})
	refusedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "hearth", Name: "refused_requests_total",
		Help: "Requests Caddy answered 503 (or 429: client_queue_full, client_websockets, client_streams) for an app, by reason (queue_full, client_queue_full, queue_timeout, stopped, held_budget, websockets, streams, client_websockets, client_streams).",
	}, []string{"app", "reason"})
)

// durationBuckets are the histograms' buckets, in seconds: Prometheus's
// defaults (5 ms to 10 s) below which a plain view and its wait for a
// worker fall whole, so three more below them (0.5, 1 and 2.5 ms).
var durationBuckets = append([]float64{0.0005, 0.001, 0.0025}, prometheus.DefBuckets...)

// Metrics are the engine's histograms and counters, for a collector to
// describe and collect.
var Metrics = []prometheus.Collector{queueWaitSeconds, requestDurationSeconds, restartsTotal, refusedTotal}

// CountRefusal counts err in hearth_refused_requests_total when it is a
// refusal (Unavailable, TooManyRequests), under its reason.
func (p *Pool) CountRefusal(err error) {
	if FailureOf(err).Refusal() {
		reason := refusalReason(err)
		refusedTotal.WithLabelValues(p.opts.Name, reason).Inc()
		switch reason { // refused before the pool (ReadBody): said here, as the other shares are
		case "client_held_budget":
			p.warnClientShare(fmt.Sprintf("app %s: %v: refused with 429%s", p.opts.Name, err, clientShareHint("")))
		case "client_bodies":
			p.warnClientShare(fmt.Sprintf("app %s: %v: refused with 429%s", p.opts.Name, err, clientShareHint("max_queue_per_client")))
		}
	}
}

// refusalReason is why err refused a request, as the metric says it.
func refusalReason(err error) string {
	var ll *longLivedRefusal
	switch {
	case errors.As(err, &ll) && ll.perClient:
		return "client_" + longLivedNames[ll.kind].reason
	case errors.As(err, &ll):
		return longLivedNames[ll.kind].reason
	case errors.Is(err, errQueueFull):
		return "queue_full"
	case errors.Is(err, errClientQueueFull):
		return "client_queue_full"
	case errors.Is(err, errQueueTimeout):
		return "queue_timeout"
	case errors.Is(err, errPoolStopped):
		return "stopped"
	case errors.Is(err, errClientBodiesHeld):
		return "client_held_budget"
	case errors.Is(err, errClientBodiesCount):
		return "client_bodies"
	case errors.Is(err, errBodiesHeld):
		return "held_budget"
	}
	return "other"
}

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
