package engine

import (
	"fmt"
	"net/http"
	"net/netip"
	"sync/atomic"

	"github.com/hearth-dev/hearth/modules/internal/clientnet"
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

// longLivedHeld are the exchanges of each kind one client holds open.
type longLivedHeld [longLivedKinds]int

// of is how many of them count against the limit of kind k: that kind's,
// or both kinds' while they share their limit (longLivedLimitLocked).
func (h longLivedHeld) of(k longLived, shared bool) int {
	if shared {
		return h[webSocket] + h[streamedResponse]
	}
	return h[k]
}

// MinOpenPerClient is the least that max_open_per_client defaults to: a
// visitor with a few tabs open, or a household behind one address, is not
// refused by a small app's quarter.
const MinOpenPerClient = 8

// openPerClientLimit is how many exchanges that count against limit one
// client may hold open: max_open_per_client when set, else a quarter of
// limit, at least MinOpenPerClient. Like max_queue_per_client, it keeps one
// client from taking every place while others are refused.
func (o *Options) openPerClientLimit(limit int) int {
	if o.MaxOpenPerClient > 0 {
		return o.MaxOpenPerClient
	}
	return max(MinOpenPerClient, limit/4)
}

// admit counts one more exchange of kind k, from the client at from, or
// refuses it: TooManyRequests (429) past the client's share
// (openPerClientLimit), Unavailable (503) past the app's limit
// (longLivedLimitLocked). An exchange that is not refusable (a POST's
// stream: its app has done its work) is counted past both, but for a
// client past its share while the app is at its limit (the one client
// holding more than its share, while others are refused, is refused too)
// or at twice its share.
// release gives its places back when the exchange ends (once, however
// often it is called). Clients without an address (clientOf) have no
// share of their own.
func (p *Pool) admit(k longLived, refusable bool, from origin) (release func(), err error) {
	client := clientOf(from.ip, from.remote)
	p.mu.Lock()
	limit, shared := p.longLivedLimitLocked(k)
	perClient := p.opts.openPerClientLimit(limit)
	held := p.openBy[client]
	overShare := client.IsValid() && held.of(k, shared) >= perClient
	// a stream that may not be refused passes the client's share by one
	// share at most: POSTs to a streaming endpoint filled the app's whole
	// limit from one client, and every other client's WebSocket got 503
	if overShare && (refusable || held.of(k, shared) >= 2*perClient) {
		p.mu.Unlock()
		// no growth for it: the client has its share, and a larger pool
		// would not let it take more
		return nil, Failed(TooManyRequests, &longLivedRefusal{k, true, p.clientRefusal(k, client, held, shared, perClient)})
	}
	p.holdLocked(client, k)
	p.mu.Unlock()
	// counted first, then checked: two exchanges admitted at once each see
	// the other, so the limit is never passed
	open := p.longLived[k].Add(1)
	if shared {
		open = p.longLived.sum()
	}
	if open <= int64(limit) || (!refusable && !overShare) {
		var released atomic.Bool
		return func() {
			if !released.Swap(true) {
				p.longLived[k].Add(-1)
				p.letGo(client, k)
			}
		}, nil
	}
	p.longLived[k].Add(-1)
	p.mu.Lock()
	p.letGoLocked(client, k)
	if !overShare {
		// as queued requests do, demand beyond the limit grows an
		// autoscaled pool (one worker at a time, up to max_workers): the
		// limit follows its size, so the client's next try may get in
		p.growLocked()
	}
	p.mu.Unlock()
	if overShare {
		return nil, Failed(TooManyRequests, &longLivedRefusal{k, true, p.clientRefusal(k, client, held, shared, perClient)})
	}
	if !shared {
		return nil, Failed(Unavailable, &longLivedRefusal{k, false, fmt.Sprintf("app %s already holds %d %s open, its %s: refused another (raise %[4]s, max_concurrency or workers if that many clients are expected)",
			p.opts.Name, open-1, longLivedNames[k].plural, longLivedNames[k].setting)})
	}
	return nil, Failed(Unavailable, &longLivedRefusal{k, false, fmt.Sprintf("app %s already holds %d WebSockets and %d streamed responses open, half its channels: refused another %s (set %s, or raise max_concurrency or workers, if that many clients are expected)",
		p.opts.Name, p.longLived[webSocket].Load(), p.longLived[streamedResponse].Load(), longLivedNames[k].singular, longLivedNames[k].setting)})
}

// streamsPastBound refuses, before its app is asked, a request of an ASGI
// app that may not be refused once its answer streams (not GET or HEAD)
// from a client that holds twice its share of streamed responses
// already: admit would refuse its stream once the app had done its work.
// (Requests sent at once, before any of their streams is counted, still
// reach admit's refusal.)
func (p *Pool) streamsPastBound(r *http.Request, from origin) error {
	if p.opts.Kind != "asgi" || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	client := clientOf(from.ip, from.remote)
	if !client.IsValid() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	held, ok := p.openBy[client]
	if !ok {
		return nil
	}
	limit, shared := p.longLivedLimitLocked(streamedResponse)
	perClient := p.opts.openPerClientLimit(limit)
	if held.of(streamedResponse, shared) < 2*perClient {
		return nil
	}
	return Failed(TooManyRequests, &longLivedRefusal{streamedResponse, true, p.clientRefusal(streamedResponse, client, held, shared, perClient)})
}

// holdLocked counts one exchange of kind k in client's (admit).
func (p *Pool) holdLocked(client netip.Prefix, k longLived) {
	if client.IsValid() {
		held := p.openBy[client]
		held[k]++
		p.openBy[client] = held
	}
}

// letGo counts one exchange of kind k out of client's, when it ended.
func (p *Pool) letGo(client netip.Prefix, k longLived) {
	if client.IsValid() { // (no lock taken for a client without an address)
		p.mu.Lock()
		p.letGoLocked(client, k)
		p.mu.Unlock()
	}
}

// letGoLocked counts one exchange of kind k out of client's (admit).
func (p *Pool) letGoLocked(client netip.Prefix, k longLived) {
	if !client.IsValid() {
		return
	}
	held := p.openBy[client]
	held[k]--
	if held == (longLivedHeld{}) {
		delete(p.openBy, client)
		return
	}
	p.openBy[client] = held
}

// clientRefusal says why client, holding held, was refused another
// exchange of kind k past its share, and logs it (warnClientShare).
func (p *Pool) clientRefusal(k longLived, client netip.Prefix, held longLivedHeld, shared bool, perClient int) string {
	holds := fmt.Sprintf("%d %s", held[k], longLivedNames[k].plural)
	if shared {
		holds = fmt.Sprintf("%d WebSockets and %d streamed responses", held[webSocket], held[streamedResponse])
	}
	refusal := fmt.Sprintf("app %s: client %s already holds %s open, its max_open_per_client (%d): refused another %s with 429%s",
		p.opts.Name, clientnet.Name(client), holds, perClient, longLivedNames[k].singular, clientShareHint("max_open_per_client"))
	p.warnClientShare(refusal)
	return refusal
}

// longLivedRefusal is an exchange of kind refused past its limit, or past
// its client's share of it (perClient).
type longLivedRefusal struct {
	kind      longLived
	perClient bool
	message   string
}

func (e *longLivedRefusal) Error() string { return e.message }
