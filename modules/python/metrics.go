package python

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/python/engine"
)

// The gauges of every Python app, read from its pools at scrape time; the
// engine keeps the histograms and counters (engine.Metrics).
var (
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
	for _, m := range engine.Metrics {
		m.Describe(ch)
	}
	ch <- workersDesc
	ch <- queueDesc
	ch <- rssDesc
}

// Collect implements prometheus.Collector.
func (poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range engine.Metrics {
		m.Collect(ch)
	}
	apps := map[string]*engine.Gauges{}
	for _, hp := range hearth.Pools() {
		a, ok := hp.(*App)
		if !ok {
			continue
		}
		g := apps[a.spec.Name]
		if g == nil {
			g = &engine.Gauges{}
			apps[a.spec.Name] = g
		}
		a.pool.AddGauges(g)
	}
	for app, g := range apps {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(g.Idle), app, "idle")
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(g.Busy), app, "busy")
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(g.Retiring), app, "retiring")
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(g.Queue), app)
		ch <- prometheus.MustNewConstMetric(rssDesc, prometheus.GaugeValue, float64(g.RSS), app)
	}
}
