package engine

import (
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestLongLivedLimit: a kind's own option (max_websockets, max_streams)
// when set, else half the channels of the workers the pool runs now (at
// least its minimum), at least one, shared by both kinds: it follows an
// autoscaled pool's growth and a scale through the admin API.
func TestLongLivedLimit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       Options
		running    int // workers in service
		scaled     int // the admin API's scale, when set
		webSockets int
		streams    int
		shared     bool
	}{
		{"two workers of 100", Options{Workers: 2, Threads: 100}, 2, 0, 100, 100, true},
		{"one of 4", Options{Workers: 1, Threads: 4}, 1, 0, 2, 2, true},
		{"one of 1", Options{Workers: 1, Threads: 1}, 1, 0, 1, 1, true},
		{"starting", Options{Workers: 2, Threads: 100}, 0, 0, 100, 100, true},
		{"autoscaled, at its minimum", Options{Workers: 2, MaxWorkers: 6, Threads: 10}, 2, 0, 10, 10, true},
		{"autoscaled, grown", Options{Workers: 2, MaxWorkers: 6, Threads: 10}, 5, 0, 25, 25, true},
		{"scaled down to one", Options{Workers: 4, Threads: 100}, 1, 1, 50, 50, true},
		{"max_websockets", Options{Workers: 2, Threads: 100, MaxWebSockets: 1000}, 2, 0, 1000, 100, false},
		{"max_streams", Options{Workers: 2, Threads: 100, MaxStreams: 7}, 2, 0, 100, 7, false},
	} {
		p := New(tc.opts, zap.NewNop())
		for range tc.running {
			p.workers = append(p.workers, &worker{})
		}
		if tc.scaled > 0 {
			p.minWorkers = tc.scaled
		}
		ws, wsShared := p.longLivedLimitLocked(webSocket)
		st, stShared := p.longLivedLimitLocked(streamedResponse)
		if ws != tc.webSockets || st != tc.streams {
			t.Errorf("%s: %d WebSockets and %d streams, want %d and %d", tc.name, ws, st, tc.webSockets, tc.streams)
		}
		if wsShared != (tc.opts.MaxWebSockets == 0) || stShared != (tc.opts.MaxStreams == 0) {
			t.Errorf("%s: shared %v and %v", tc.name, wsShared, stShared)
		}
	}
}

// TestAdmitLongLived: by default WebSockets and streamed responses share
// half the channels, so neither kind (nor both) can take the channels
// requests need; a kind's own option bounds that kind alone, and the
// other still counts it. A refusal is Unavailable (503) and names the
// option to raise; a release gives the place back. An exchange that may
// not be refused is counted past the limit.
func TestAdmitLongLived(t *testing.T) {
	admitN := func(p *Pool, k longLived, n int) []func() {
		t.Helper()
		var releases []func()
		for i := range n {
			release, err := p.admit(k, true)
			if err != nil {
				t.Fatalf("%s %d of %d: %v", longLivedNames[k].singular, i+1, n, err)
			}
			releases = append(releases, release)
		}
		return releases
	}
	refused := func(p *Pool, k longLived, option string) {
		t.Helper()
		release, err := p.admit(k, true)
		if err == nil {
			release()
			t.Fatalf("one %s past the limit was admitted", longLivedNames[k].singular)
		}
		if FailureOf(err) != Unavailable || !strings.Contains(err.Error(), option) {
			t.Fatalf("refusal: %v (want Unavailable, naming %s)", err, option)
		}
	}
	pool := func(opts Options) *Pool {
		opts.Workers, opts.Threads = 1, 8
		p := New(opts, zap.NewNop())
		p.workers = []*worker{{}}
		return p
	}

	p := pool(Options{})
	streams := admitN(p, streamedResponse, 3)
	admitN(p, webSocket, 1)
	refused(p, streamedResponse, "max_streams")
	refused(p, webSocket, "max_websockets")
	streams[0]()
	admitN(p, webSocket, 1) // the place a stream gave back
	refused(p, webSocket, "max_websockets")

	// a stream that may not be refused (a POST's) is counted past it
	release, err := p.admit(streamedResponse, false)
	if err != nil {
		t.Fatalf("a stream that may not be refused: %v", err)
	}
	if n := p.longLived.sum(); n != 5 {
		t.Errorf("%d counted with one past the limit, want 5", n)
	}
	release()

	p = pool(Options{MaxStreams: 6})
	admitN(p, streamedResponse, 6)
	refused(p, streamedResponse, "max_streams")
	refused(p, webSocket, "max_websockets") // the shared half is taken by streams

	p = pool(Options{MaxWebSockets: 2, MaxStreams: 2})
	admitN(p, webSocket, 2)
	admitN(p, streamedResponse, 2)
	refused(p, webSocket, "max_websockets")
	refused(p, streamedResponse, "max_streams")
	if n := p.longLived.sum(); n != 4 {
		t.Errorf("%d counted after refusals, want 4", n)
	}
}

// TestRefusalReason: each refusal is counted under its reason in
// hearth_refused_requests_total.
func TestRefusalReason(t *testing.T) {
	p := New(Options{Name: "reasons", Workers: 1, Threads: 2}, zap.NewNop())
	p.workers = []*worker{{}}
	_, err := p.admit(streamedResponse, true)
	if err != nil {
		t.Fatal(err)
	}
	_, streams := p.admit(streamedResponse, true)
	_, webSockets := p.admit(webSocket, true)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{streams, "streams"},
		{webSockets, "websockets"},
		{p.unavailable(errQueueFull), "queue_full"},
		{p.unavailable(errQueueTimeout), "queue_timeout"},
		{p.unavailable(errPoolStopped), "stopped"},
		{Failed(Unavailable, errBodiesHeld), "held_budget"},
	} {
		if got := refusalReason(tc.err); FailureOf(tc.err) != Unavailable || got != tc.want {
			t.Errorf("%v: %q (failure %d), want %q", tc.err, got, FailureOf(tc.err), tc.want)
		}
	}
}
