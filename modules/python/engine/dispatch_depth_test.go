package engine

import (
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestPipelineDepth: how many requests may wait behind a running one
// follows the pool's mean request time (the work committed behind it stays
// within pipelineBudget), never past pipelineMaxDepth, and is zero before
// anything is measured, for ASGI pools and with `pipeline off`.
func TestPipelineDepth(t *testing.T) {
	for _, tc := range []struct {
		name     string
		kind     string
		pipeline string
		mean     time.Duration
		want     int
	}{
		{"nothing measured", "wsgi", "auto", 0, 0},
		{"hello world", "wsgi", "auto", 40 * time.Microsecond, pipelineMaxDepth},
		{"a quarter millisecond", "wsgi", "auto", 250 * time.Microsecond, 8},
		{"0.4 ms", "wsgi", "auto", 400 * time.Microsecond, 5},
		{"half a millisecond", "wsgi", "auto", 500 * time.Microsecond, 4},
		{"one millisecond", "wsgi", "auto", time.Millisecond, 2},
		{"1.5 ms", "wsgi", "auto", 1500 * time.Microsecond, 1},
		{"from the budget on", "wsgi", "auto", pipelineBudget, 1},
		{"just past the budget", "wsgi", "auto", 2100 * time.Microsecond, 0},
		{"slower", "wsgi", "auto", 3 * time.Millisecond, 0},
		{"a second", "wsgi", "auto", time.Second, 0},
		{"pipeline off", "wsgi", "off", 40 * time.Microsecond, 0},
		{"asgi multiplexes instead", "asgi", "auto", 40 * time.Microsecond, 0},
		{"asgi, pipeline unset", "asgi", "", 40 * time.Microsecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New(Options{Name: "t", Kind: tc.kind, Pipeline: tc.pipeline}, zap.NewNop())
			defer p.cancel()
			p.meanDuration = tc.mean
			if got := p.pipelineDepthLocked(); got != tc.want {
				t.Errorf("mean %s: depth %d, want %d", tc.mean, got, tc.want)
			}
		})
	}
}
