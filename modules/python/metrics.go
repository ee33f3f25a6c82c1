package python

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-dev/hearth/modules/hearth"
)

// Metrics of every Python pool, labelled by app name. Histograms and
// counters live across reloads (a replaced pool and its successor add to
// the same series); gauges are read from the pools at scrape time.
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

	workersDesc = prometheus.NewDesc("hearth_workers", "Worker processes by state (idle, busy, retiring).", []string{"app", "state"}, nil)
	queueDesc   = prometheus.NewDesc("hearth_queue_depth", "Requests waiting for a free worker.", []string{"app"}, nil)
	rssDesc     = prometheus.NewDesc("hearth_worker_rss_bytes", "Resident memory of the app's workers, summed.", []string{"app"}, nil)
)

// poolCollector exposes Hearth's pool metrics in Caddy's registry.
type poolCollector struct{}

// registerMetrics adds the pool metrics to a config's registry, once.
func registerMetrics(registry *prometheus.Registry) error {
	return hearth.RegisterCollector(registry, poolCollector{})
}

// Describe implements prometheus.Collector.
func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	queueWaitSeconds.Describe(ch)
	requestDurationSeconds.Describe(ch)
	restartsTotal.Describe(ch)
	ch <- workersDesc
	ch <- queueDesc
	ch <- rssDesc
}

// appGauges are an app's gauge values, summed over its pools.
type appGauges struct {
	idle, busy, retiring, queue int
	rss                         int64
}

// Collect implements prometheus.Collector.
func (poolCollector) Collect(ch chan<- prometheus.Metric) {
	queueWaitSeconds.Collect(ch)
	requestDurationSeconds.Collect(ch)
	restartsTotal.Collect(ch)
	apps := map[string]*appGauges{}
	for _, hp := range hearth.Pools() {
		p, ok := hp.(*Pool)
		if !ok {
			continue
		}
		g := apps[p.spec.Name]
		if g == nil {
			g = &appGauges{}
			apps[p.spec.Name] = g
		}
		p.addGauges(g)
	}
	for app, g := range apps {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(g.idle), app, "idle")
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(g.busy), app, "busy")
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(g.retiring), app, "retiring")
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(g.queue), app)
		ch <- prometheus.MustNewConstMetric(rssDesc, prometheus.GaugeValue, float64(g.rss), app)
	}
}

func (p *Pool) addGauges(g *appGauges) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g.queue += len(p.waiters) + p.pipelined
	for _, w := range p.workers {
		if w.busy > 0 {
			g.busy++
		} else {
			g.idle++
		}
		g.rss += w.rss
	}
	for _, w := range p.retiring {
		g.retiring++
		g.rss += w.rss
	}
}
