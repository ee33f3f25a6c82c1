package engine

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestDurationHistogramsSeeBelowFiveMilliseconds: a request a plain view
// answers in under a millisecond, and its wait for a worker, land in
// buckets of their own, not all in Prometheus's first (5 ms), in both
// histograms.
func TestDurationHistogramsSeeBelowFiveMilliseconds(t *testing.T) {
	for _, vec := range []*prometheus.HistogramVec{requestDurationSeconds, queueWaitSeconds} {
		h := vec.WithLabelValues("buckets-test")
		defer vec.DeleteLabelValues("buckets-test")
		for _, seconds := range []float64{0.0003, 0.0008, 0.002, 0.004, 0.02, 20} {
			h.Observe(seconds)
		}
		var m dto.Metric
		if err := h.(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		want := map[float64]uint64{0.0005: 1, 0.001: 2, 0.0025: 3, 0.005: 4, 0.025: 5, 10: 5}
		got := map[float64]uint64{}
		for _, b := range m.GetHistogram().GetBucket() {
			got[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		for le, n := range want {
			if c, ok := got[le]; !ok || c != n {
				t.Errorf("bucket le=%g: %d observations (present %v), want %d; buckets %v", le, c, ok, n, got)
			}
		}
		if m.GetHistogram().GetSampleCount() != 6 {
			t.Errorf("%d observations counted, want 6", m.GetHistogram().GetSampleCount())
		}
	}
}
