package engine

import (
	"net/netip"
	"slices"
	"sort"
	"time"
)

// The queue's order: turns among clients.
//
// Requests wait for a worker in turns, not strictly oldest first: each
// request that queues gets a turn one past its client's previous request
// (while that client has any in flight) and past the turn of the last
// request taken off the queue, and the queue is kept in turn order (ties:
// oldest first). A client with many requests waiting (a script hammering a
// slow page) so holds up another client's next request by one request of
// its own at most (besides those already pipelined behind a running one,
// which pipelining bounds to a few milliseconds of work), where a plain
// first-in-first-out queue put it behind all of them: behind a client's 256 queued one-second requests (its
// default share of the queue) on one worker, another visitor's request
// waited out queue_timeout (30 s) and got 503. The requests of one client keep their order, and so do those
// of one address behind a proxy that is not in trusted_proxies (they count
// as one client, as for max_queue_per_client), which is how the queue
// behaved before for everyone. The price of turns: all the visitors behind
// one address (a NAT, such a proxy) share one client's turns, and a
// client's tenth request in a burst waits for nine turns of every other
// client with requests waiting.

// queuedClient is what the pool keeps of a client with requests between
// queueing and their answer (acquire).
type queuedClient struct {
	requests int    // counted against max_queue_per_client
	lastTurn uint64 // the turn of its latest request to queue
}

// enqueueLocked queues w for client in its turn, and counts it for the
// client until leaveQueueLocked.
func (p *Pool) enqueueLocked(w *waiter, client netip.Prefix) {
	c := p.waiting[client]
	c.requests++
	c.lastTurn = max(c.lastTurn, p.turn) + 1
	p.waiting[client] = c
	w.turn = c.lastTurn
	i := len(p.waiters)
	if i > 0 && p.waiters[i-1].turn > w.turn { // else it goes last, as a lone client's always do
		i = sort.Search(i, func(j int) bool { return p.waiters[j].turn > w.turn })
	}
	p.waiters = slices.Insert(p.waiters, i, w)
}

// dequeueLocked takes the request whose turn is next off the queue.
func (p *Pool) dequeueLocked() *waiter {
	w := p.waiters[0]
	p.waiters[0] = nil
	p.waiters = p.waiters[1:]
	p.turn = max(p.turn, w.turn)
	return w
}

// leaveQueueLocked counts a request of client out of the queue: acquire
// counts it from the moment it queues until it has its answer (a channel,
// or why none), however it left the queue (handed a channel, pipelined,
// sent back to it by a broken worker, timed out, or its client gone).
func (p *Pool) leaveQueueLocked(client netip.Prefix) {
	if c := p.waiting[client]; c.requests > 1 {
		c.requests--
		p.waiting[client] = c
	} else {
		delete(p.waiting, client)
	}
}

// expireWaiters answers the requests queued for longer than queue_timeout
// and re-arms the timer for the next one to expire. The queue is in turn
// order, so expired requests may be anywhere in it: one pass finds them and
// the earliest deadline of the rest.
func (p *Pool) expireWaiters() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	expired := false
	var earliest time.Time
	p.waiters = slices.DeleteFunc(p.waiters, func(w *waiter) bool {
		if w.deadline.After(now) {
			if earliest.IsZero() || w.deadline.Before(earliest) {
				earliest = w.deadline
			}
			return false
		}
		w.ch <- grant{err: errQueueTimeout}
		expired = true
		return true
	})
	if expired {
		p.noteDrainLocked()
	}
	if !earliest.IsZero() {
		p.armQueueTimerLocked(earliest.Sub(now))
	}
}

// armForEarliestLocked arms the queue's timer for the waiter whose
// queue_timeout ends first, if any.
func (p *Pool) armForEarliestLocked() {
	if len(p.waiters) == 0 {
		return
	}
	earliest := p.waiters[0].deadline
	for _, w := range p.waiters[1:] {
		if w.deadline.Before(earliest) {
			earliest = w.deadline
		}
	}
	p.armQueueTimerLocked(time.Until(earliest))
}
