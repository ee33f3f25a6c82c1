package engine

import (
	"fmt"
	"sync/atomic"
)

// longLived is a kind of exchange that holds one of an ASGI worker's
// channels past one request and its answer, for as long as its client and
// the app keep it going. Channels are what every request needs too: one
// client that opened as many of them as the app had channels (200 on two
// workers, by default) left every request waiting for its queue_timeout,
// then 503. So they are counted, and one past the limit is refused.
type longLived int

const (
	// webSocket is a WebSocket, open or opening (ServeWebSocket).
	webSocket longLived = iota
	// streamedResponse is an ASGI response that did not come whole with
	// its head: server-sent events, a download, a body sent in pieces
	// (streamASGI).
	streamedResponse
	longLivedKinds
)

// longLivedCounts are the exchanges of each kind a pool holds now.
type longLivedCounts [longLivedKinds]atomic.Int64

// longLivedNames are what messages, options and metrics call each kind.
var longLivedNames = [longLivedKinds]struct {
	setting          string // the option that bounds the kind on its own
	singular, plural string // in messages
	reason           string // in hearth_refused_requests_total
}{
	webSocket:        {"max_websockets", "WebSocket", "WebSockets", "websockets"},
	streamedResponse: {"max_streams", "streamed response", "streamed responses", "streams"},
}

// sum is how many long-lived exchanges of either kind are open.
func (c *longLivedCounts) sum() int64 {
	return c[webSocket].Load() + c[streamedResponse].Load()
}

// ownLimit is the option bounding exchanges of kind k on their own, 0
// when unset.
func (o *Options) ownLimit(k longLived) int {
	if k == webSocket {
		return o.MaxWebSockets
	}
	return o.MaxStreams
}

// longLivedLimitLocked is how many exchanges of kind k the pool holds at
// once, and whether that bounds both kinds together: the kind's own
// option when set (max_websockets, max_streams); else WebSockets and
// streamed responses together take at most half the channels of the
// workers the pool runs now (as many as its minimum, or those an
// autoscaled pool grew to), at least one. The limit follows the pool's
// size: computed from the largest size an autoscaled pool may reach,
// WebSockets took every channel of the pool at its minimum (the pool then
// grew for the requests that queued), and after a scale-down through the
// admin API every channel of the smaller pool.
func (p *Pool) longLivedLimitLocked(k longLived) (limit int, shared bool) {
	if own := p.opts.ownLimit(k); own > 0 {
		return own, false
	}
	return max(1, max(len(p.workers), p.minWorkers)*max(1, p.opts.Threads)/2), true
}

// admit counts one more exchange of kind k, or refuses it (Unavailable)
// past its limit when it is refusable (else it is counted past it).
// release gives its place back when the exchange ends.
func (p *Pool) admit(k longLived, refusable bool) (release func(), err error) {
	p.mu.Lock()
	limit, shared := p.longLivedLimitLocked(k)
	p.mu.Unlock()
	// counted first, then checked: two exchanges admitted at once each see
	// the other, so the limit is never passed
	open := p.longLived[k].Add(1)
	if shared {
		open = p.longLived.sum()
	}
	if open <= int64(limit) || !refusable {
		return func() { p.longLived[k].Add(-1) }, nil
	}
	p.longLived[k].Add(-1)
	// as queued requests do, demand beyond the limit grows an autoscaled
	// pool (one worker at a time, up to max_workers): the limit follows
	// its size, so the client's next try may get in
	p.mu.Lock()
	p.growLocked()
	p.mu.Unlock()
	if !shared {
		return nil, Failed(Unavailable, &longLivedRefusal{k, fmt.Sprintf("app %s already holds %d %s open, its %s: refused another (raise %[4]s, max_concurrency or workers if that many clients are expected)",
			p.opts.Name, open-1, longLivedNames[k].plural, longLivedNames[k].setting)})
	}
	return nil, Failed(Unavailable, &longLivedRefusal{k, fmt.Sprintf("app %s already holds %d WebSockets and %d streamed responses open, half its channels: refused another %s (set %s, or raise max_concurrency or workers, if that many clients are expected)",
		p.opts.Name, p.longLived[webSocket].Load(), p.longLived[streamedResponse].Load(), longLivedNames[k].singular, longLivedNames[k].setting)})
}

// longLivedRefusal is an exchange of kind refused past its limit.
type longLivedRefusal struct {
	kind    longLived
	message string
}

func (e *longLivedRefusal) Error() string { return e.message }
