package python

import (
	"testing"
	"time"
)

// The pipeline depth commits at most pipelineBudget of expected work
// behind a running request.
func TestPipelineDepthFollowsMeanRequestTime(t *testing.T) {
	tests := []struct {
		kind, pipeline string
		mean           time.Duration
		want           int
	}{
		{"wsgi", "auto", 0, 0}, // nothing measured yet
		{"wsgi", "auto", 40 * time.Microsecond, pipelineMaxDepth},
		{"wsgi", "auto", 250 * time.Microsecond, 8},
		{"wsgi", "auto", 400 * time.Microsecond, 5},
		{"wsgi", "auto", time.Millisecond, 2},
		{"wsgi", "auto", 1500 * time.Microsecond, 1},
		{"wsgi", "auto", 2100 * time.Microsecond, 0},
		{"wsgi", "auto", time.Second, 0},
		{"wsgi", "off", 40 * time.Microsecond, 0},
		{"asgi", "", 40 * time.Microsecond, 0},
	}
	for _, tt := range tests {
		p := &Pool{spec: &poolSpec{Kind: tt.kind, Pipeline: tt.pipeline}, meanDuration: tt.mean}
		if got := p.pipelineDepthLocked(); got != tt.want {
			t.Errorf("%s pipeline %s, mean %v: depth %d, want %d", tt.kind, tt.pipeline, tt.mean, got, tt.want)
		}
	}
}
