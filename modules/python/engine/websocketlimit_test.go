package engine

import "testing"

// TestWebSocketLimit: max_websockets when set, else half the channels of
// the pool at its largest, at least one.
func TestWebSocketLimit(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want int
	}{
		{Options{Workers: 2, Threads: 100}, 100},
		{Options{Workers: 1, Threads: 4}, 2},
		{Options{Workers: 1, Threads: 1}, 1},
		{Options{Workers: 2, MaxWorkers: 6, Threads: 10}, 30},
		{Options{Workers: 2, Threads: 100, MaxWebSockets: 1000}, 1000},
	} {
		if got := tc.opts.WebSocketLimit(); got != tc.want {
			t.Errorf("%+v: %d, want %d", tc.opts, got, tc.want)
		}
	}
}
