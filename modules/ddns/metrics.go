package ddns

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the ddns app.
var (
	updatesTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "hearth", Subsystem: "ddns", Name: "updates_total",
		Help: "DNS records updated.",
	})
	errorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "hearth", Subsystem: "ddns", Name: "errors_total",
		Help: "Failed DNS record updates.",
	})
	lastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "hearth", Subsystem: "ddns", Name: "last_success_timestamp_seconds",
		Help: "When a record was last updated successfully (Unix time).",
	})
)
