package engine

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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
			release, err := p.admit(k, true, origin{})
			if err != nil {
				t.Fatalf("%s %d of %d: %v", longLivedNames[k].singular, i+1, n, err)
			}
			releases = append(releases, release)
		}
		return releases
	}
	refused := func(p *Pool, k longLived, option string) {
		t.Helper()
		release, err := p.admit(k, true, origin{})
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
	release, err := p.admit(streamedResponse, false, origin{})
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
	_, err := p.admit(streamedResponse, true, origin{})
	if err != nil {
		t.Fatal(err)
	}
	_, streams := p.admit(streamedResponse, true, origin{})
	_, webSockets := p.admit(webSocket, true, origin{})
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

// TestOpenPerClientLimit: max_open_per_client when set, else a quarter of
// the limit the exchange counts against, at least MinOpenPerClient.
func TestOpenPerClientLimit(t *testing.T) {
	for _, tc := range []struct {
		set, limit, want int
	}{
		{0, 100, 25},   // two workers of 100 channels: half of them, a quarter each
		{0, 1000, 250}, // max_websockets 1000
		{0, 30, MinOpenPerClient},
		{0, 2, MinOpenPerClient}, // a small app: its limit binds first
		{3, 100, 3},
		{500, 100, 500}, // above the limit: it never binds
	} {
		o := Options{MaxOpenPerClient: tc.set}
		if got := o.openPerClientLimit(tc.limit); got != tc.want {
			t.Errorf("max_open_per_client %d, limit %d: %d per client, want %d", tc.set, tc.limit, got, tc.want)
		}
	}
}

// TestAdmitPerClient: one client cannot take every WebSocket or streamed
// response an app allows. Past its share it gets TooManyRequests (429),
// naming max_open_per_client and trusted_proxies, and another client
// still gets in; the share counts what the exchange's limit counts (both
// kinds while they share it), an IPv6 client by its /64; a client
// without an address has no share of its own; a release gives the
// client's place back, and a refused exchange takes none.
func TestAdmitPerClient(t *testing.T) {
	pool := func(opts Options) *Pool {
		opts.Name, opts.Workers, opts.Threads = "shares", 1, 200 // a limit of 100 when shared
		p := New(opts, zap.NewNop())
		p.workers = []*worker{{}}
		return p
	}
	attacker := origin{"", "203.0.113.7:40000"}
	admitN := func(p *Pool, k longLived, from origin, n int) []func() {
		t.Helper()
		var releases []func()
		for i := range n {
			release, err := p.admit(k, true, from)
			if err != nil {
				t.Fatalf("%s %d of %d from %v: %v", longLivedNames[k].singular, i+1, n, from, err)
			}
			releases = append(releases, release)
		}
		return releases
	}
	refusedFor := func(p *Pool, k longLived, from origin, client string) {
		t.Helper()
		release, err := p.admit(k, true, from)
		if err == nil {
			release()
			t.Fatalf("%s from %v past its share was admitted", longLivedNames[k].singular, from)
		}
		msg := err.Error()
		if FailureOf(err) != TooManyRequests || !strings.Contains(msg, "max_open_per_client") || !strings.Contains(msg, "trusted_proxies") || !strings.Contains(msg, "client "+client+" ") {
			t.Fatalf("refusal: %v (want TooManyRequests, naming client %s, max_open_per_client and trusted_proxies)", err, client)
		}
		if reason := refusalReason(err); reason != "client_"+longLivedNames[k].reason {
			t.Errorf("counted as %q", reason)
		}
	}

	// shared: a quarter of 100, WebSockets and streams together
	p := pool(Options{})
	ws := admitN(p, webSocket, attacker, 20)
	admitN(p, streamedResponse, attacker, 5)
	refusedFor(p, webSocket, attacker, "203.0.113.7")
	refusedFor(p, streamedResponse, attacker, "203.0.113.7")
	admitN(p, webSocket, origin{"198.51.100.1", "127.0.0.1:5000"}, 25) // Caddy's client address, not the proxy's
	admitN(p, webSocket, origin{"", "[2001:db8:1:2::1]:443"}, 20)
	admitN(p, streamedResponse, origin{"2001:db8:1:2::99", ""}, 5) // the same /64
	refusedFor(p, webSocket, origin{"2001:db8:1:2::5", ""}, "2001:db8:1:2::/64")
	admitN(p, webSocket, origin{"2001:db8:1:3::1", ""}, 1) // another /64
	if n := p.longLived.sum(); n != 76 {
		t.Errorf("%d counted, want 76 (refusals take no place)", n)
	}
	ws[0]()
	admitN(p, webSocket, attacker, 1) // the place it gave back
	refusedFor(p, webSocket, attacker, "203.0.113.7")
	// no address: no share of its own, only the app's limit
	admitN(p, webSocket, origin{"", "@"}, 24) // up to the app's 100
	if _, err := p.admit(webSocket, true, origin{"", "@"}); FailureOf(err) != Unavailable {
		t.Errorf("past the app's limit: %v, want Unavailable", err)
	}

	// its own limits: a quarter of each
	p = pool(Options{MaxWebSockets: 40, MaxStreams: 100})
	admitN(p, webSocket, attacker, 10)
	refusedFor(p, webSocket, attacker, "203.0.113.7")
	admitN(p, streamedResponse, attacker, 25)
	refusedFor(p, streamedResponse, attacker, "203.0.113.7")

	// set, and a stream that may not be refused is counted past it
	p = pool(Options{MaxOpenPerClient: 2})
	admitN(p, streamedResponse, attacker, 2)
	release, err := p.admit(streamedResponse, false, attacker)
	if err != nil {
		t.Fatalf("a stream that may not be refused: %v", err)
	}
	refusedFor(p, webSocket, attacker, "203.0.113.7")
	release()
	refusedFor(p, webSocket, attacker, "203.0.113.7")
	// ... but by one share at most: POSTs to a streaming endpoint took the
	// app's whole limit from one client
	for range 2 {
		if _, err := p.admit(streamedResponse, false, attacker); err != nil {
			t.Fatalf("a stream that may not be refused, within twice the share: %v", err)
		}
	}
	if _, err := p.admit(streamedResponse, false, attacker); FailureOf(err) != TooManyRequests {
		t.Errorf("a stream that may not be refused, at twice the client's share: %v, want TooManyRequests", err)
	}

	// a POST's stream is refused past the client's share only while the
	// app is at its limit: then that client alone gets 429, and another
	// client's is counted past the limit, as before
	p = pool(Options{MaxStreams: 3, MaxOpenPerClient: 2})
	admitN(p, streamedResponse, attacker, 2)
	visitor := origin{"198.51.100.1", ""}
	admitN(p, streamedResponse, visitor, 1)
	if _, err := p.admit(streamedResponse, false, attacker); FailureOf(err) != TooManyRequests {
		t.Errorf("a POST's stream from a client past its share, the app at its limit: %v, want TooManyRequests", err)
	}
	release, err = p.admit(streamedResponse, false, visitor)
	if err != nil {
		t.Errorf("a POST's stream from a client within its share, the app at its limit: %v", err)
	}
	// a release called twice gives back one place
	release()
	release()
	if n := p.longLived[streamedResponse].Load(); n != 3 || p.openBy[clientOf(visitor.ip, "")][streamedResponse] != 1 {
		t.Errorf("after a release called twice: %d counted, the client %d; want 3 and 1", n, p.openBy[clientOf(visitor.ip, "")][streamedResponse])
	}

	// refused at the app's limit, the client keeps only what it holds
	p = pool(Options{MaxWebSockets: 2, MaxOpenPerClient: 3})
	held := admitN(p, webSocket, attacker, 2)
	for range 3 {
		if _, err := p.admit(webSocket, true, attacker); FailureOf(err) != Unavailable {
			t.Fatalf("past the app's limit of 2: %v, want Unavailable", err)
		}
	}
	held[0]()
	admitN(p, webSocket, attacker, 1)

	// every place given back leaves nothing behind
	p = pool(Options{})
	var releases []func()
	for _, from := range []origin{attacker, {"198.51.100.1", ""}, {"2001:db8::1", ""}, {"", "@"}} {
		releases = append(releases, admitN(p, webSocket, from, 3)...)
		releases = append(releases, admitN(p, streamedResponse, from, 2)...)
	}
	for _, r := range releases {
		r()
	}
	if len(p.openBy) != 0 || p.longLived.sum() != 0 {
		t.Errorf("after every release: %v held by clients, %d counted", p.openBy, p.longLived.sum())
	}
}

// TestClientShareWarnings: a client refused past its share is warned of
// (Caddy logs a 4xx only at its debug level) with what to change, at
// most once a minute however often a client provokes it, then with how
// many were held back; for the queue's share (max_queue_per_client) too.
func TestClientShareWarnings(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	p := New(Options{Name: "warned", Workers: 1, Threads: 200, MaxOpenPerClient: 1}, zap.New(core))
	p.workers = []*worker{{}}
	from := origin{"", "203.0.113.7:40000"}
	if _, err := p.admit(webSocket, true, from); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := p.admit(webSocket, true, from); FailureOf(err) != TooManyRequests {
			t.Fatalf("past the client's share: %v", err)
		}
	}
	warnings := logs.TakeAll()
	if len(warnings) != 1 || !strings.Contains(warnings[0].Message, "client 203.0.113.7 already holds 1 WebSockets") ||
		!strings.Contains(warnings[0].Message, "trusted_proxies") || !strings.Contains(warnings[0].Message, "raise max_open_per_client") {
		t.Fatalf("warnings for 5 refusals within a minute: %v, want one naming the client, trusted_proxies and max_open_per_client", warnings)
	}
	p.clientShareWarnings.Every = 0 // as if the minute had passed
	p.warnClientShare("app warned: client 203.0.113.7 already has 2 requests waiting" + clientShareHint("max_queue_per_client"))
	warnings = logs.TakeAll()
	if len(warnings) != 1 || warnings[0].ContextMap()["like_warnings_held_back"] != int64(4) || !strings.Contains(warnings[0].Message, "raise max_queue_per_client") {
		t.Fatalf("the next warning: %v, want one saying 4 were held back, naming max_queue_per_client", warnings)
	}
}

// TestStreamsPastBoundRefusedBeforeTheApp: a client of an ASGI app that
// holds twice its share of streamed responses has its next POST refused
// (429) before the app is asked: past that bound admit refuses the
// stream, by then with the app's work done (a retry would do it twice).
// GET and HEAD, refused at admit with nothing done, and other clients'
// requests go on.
func TestStreamsPastBoundRefusedBeforeTheApp(t *testing.T) {
	p := New(Options{Name: "chat", Kind: "asgi", Workers: 1, Threads: 200, MaxOpenPerClient: 2}, zap.NewNop())
	p.workers = []*worker{{}}
	attacker, visitor := origin{"", "203.0.113.7:40000"}, origin{"198.51.100.1", ""}
	post := httptest.NewRequest(http.MethodPost, "/chat", nil)
	for i := range 4 {
		if err := p.streamsPastBound(post, attacker); err != nil {
			t.Fatalf("POST %d, within twice the share: %v", i+1, err)
		}
		if _, err := p.admit(streamedResponse, false, attacker); err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
	}
	err := p.streamsPastBound(post, attacker)
	if FailureOf(err) != TooManyRequests || refusalReason(err) != "client_streams" {
		t.Errorf("a POST from a client holding twice its share of streams: %v, want TooManyRequests (client_streams)", err)
	}
	if err := p.streamsPastBound(httptest.NewRequest(http.MethodGet, "/events", nil), attacker); err != nil {
		t.Errorf("a GET (refused at admit, with nothing done): %v", err)
	}
	if err := p.streamsPastBound(post, visitor); err != nil {
		t.Errorf("another client's POST: %v", err)
	}
	wsgi := New(Options{Name: "site", Kind: "wsgi", Workers: 1, Threads: 1}, zap.NewNop())
	if err := wsgi.streamsPastBound(post, attacker); err != nil {
		t.Errorf("a WSGI app's POST: %v", err)
	}
}
