package engine

import (
	"testing"

	"go.uber.org/zap"
)

// TestWebSocketLimit: max_websockets when set, else half the channels of
// the workers the pool runs now (at least its minimum), at least one: it
// follows an autoscaled pool's growth and a scale through the admin API.
func TestWebSocketLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		running int // workers in service
		scaled  int // the admin API's scale, when set
		want    int
	}{
		{"two workers of 100", Options{Workers: 2, Threads: 100}, 2, 0, 100},
		{"one of 4", Options{Workers: 1, Threads: 4}, 1, 0, 2},
		{"one of 1", Options{Workers: 1, Threads: 1}, 1, 0, 1},
		{"starting", Options{Workers: 2, Threads: 100}, 0, 0, 100},
		{"autoscaled, at its minimum", Options{Workers: 2, MaxWorkers: 6, Threads: 10}, 2, 0, 10},
		{"autoscaled, grown", Options{Workers: 2, MaxWorkers: 6, Threads: 10}, 5, 0, 25},
		{"scaled down to one", Options{Workers: 4, Threads: 100}, 1, 1, 50},
		{"set", Options{Workers: 2, Threads: 100, MaxWebSockets: 1000}, 2, 0, 1000},
	} {
		p := New(tc.opts, zap.NewNop())
		for range tc.running {
			p.workers = append(p.workers, &worker{})
		}
		if tc.scaled > 0 {
			p.minWorkers = tc.scaled
		}
		if got := p.webSocketLimitLocked(); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
