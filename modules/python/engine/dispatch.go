package engine

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/clientnet"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// waiter is a request queued for a free channel. frames, when set, are the
// request's complete frames: whoever frees a channel sends them to the worker
// right away, so the worker does not wait for the waiting goroutine to be
// scheduled. A waiter may also be pipelined behind the request running on
// a channel (see pipelineLocked); it then leaves the queue.
type waiter struct {
	ch         chan grant // receives a channel, or why it gets none
	path       string
	idempotent bool // its method may be sent again after a worker failure
	frames     []byte
	timeout    time.Duration // its request's timeout, for the channel it gets (0: none)
	deadline   time.Time     // end of its queue_timeout
	turn       uint64        // its place in the queue's order (fairqueue.go)
	sendErr    error         // writing its frames to the channel it was pipelined on failed
}

// grant is what a request gets from the dispatcher: a channel to a worker
// and whether its frames are already on their way there (written by whoever
// handed the channel over, or pipelined earlier), or why it gets none:
// errQueueTimeout, errPoolStopped, or errPipelineAbandoned for a pipelined
// request that is not idempotent whose worker failed in a way that does not
// prove it never started it.
type grant struct {
	channel *channel
	sent    bool  // the request's frames were written to the worker
	sendErr error // writing them failed (the worker is broken)
	err     error // no channel, and why
}

// waiters are recycled: one is allocated per queued request otherwise.
var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan grant, 1)} }}

// Pipelining: when requests queue, the channel that frees up also gets the
// next waiting requests written behind the one it starts, so the worker
// reads its next request as soon as it answers instead of sleeping until
// Caddy hands it one, and Caddy finds answers ready when it reads. A
// request pipelined behind a slow one waits for it even if another worker
// frees up first, so the depth is bounded by the work it commits: at most
// pipelineBudget of the pool's mean request time is put behind a running
// request (for a 40 µs hello world, pipelineMaxDepth requests; for 1 ms
// requests, 2; beyond 2 ms, none), and by the channel's share of what
// waits or is pipelined (pipelineShareLocked), so that a queue is spread
// over the workers rather than taken by the first to free up. Only
// requests whose frames are small are pipelined, and no more than
// pipelineMaxBytes per channel, so writing them never waits for the
// worker (they fit the socket's buffer). Only WSGI pools with pipeline
// auto pipeline.
//
// A pipeline is topped up when at least two places are free in it (or it
// is empty), so the requests added go to the worker together, in one
// system call, and the worker reads them in one.
const (
	pipelineBudget    = 2 * time.Millisecond // expected work queued behind a running request, at most
	pipelineMaxDepth  = 8                    // requests pipelined behind one on a channel, at most
	pipelineMaxFrames = 16 << 10             // larger requests are never pipelined
	pipelineMaxBytes  = 64 << 10             // frames pipelined on one channel, at most
	// pipelineSampleCap bounds one request's weight in the mean request
	// time: a single slow request lowers the depth for a while, it does
	// not turn pipelining off for the next few hundred.
	pipelineSampleCap = 8 * pipelineBudget
)

// pipelineDepthLocked is how many requests may wait behind a running one
// on a channel, given the pool's mean request time.
func (p *Pool) pipelineDepthLocked() int {
	if !p.opts.pipelining() {
		return 0
	}
	if p.meanDuration <= 0 {
		return 0 // nothing measured yet
	}
	return int(min(pipelineBudget/p.meanDuration, pipelineMaxDepth))
}

// acquire takes a free channel for a request to path, waiting in the queue up
// to queue_timeout. A queued request may make an autoscaled pool grow.
func (p *Pool) acquire(ctx context.Context, from origin, path string, idempotent bool, frames []byte, complete bool, timeout time.Duration) (grant, error) {
	p.mu.Lock()
	if !p.paused {
		if s := p.takeIdleLocked(path); s != nil {
			p.mu.Unlock()
			p.queueWait.Observe(0)
			return grant{channel: s}, nil
		}
	}
	if !p.state.Serving() {
		p.mu.Unlock()
		return grant{}, errPoolStopped
	}
	if len(p.waiters)+p.pipelined >= p.opts.MaxQueue {
		p.mu.Unlock()
		return grant{}, errQueueFull
	}
	client := clientOf(from.ip, from.remote) // (parsed only for a request that queues)
	if p.opts.MaxQueuePerClient > 0 && client.IsValid() && p.waiting[client].requests >= p.opts.MaxQueuePerClient {
		p.mu.Unlock()
		p.warnClientShare(fmt.Sprintf("app %s: client %s already has %d requests waiting for a worker, its max_queue_per_client: refused another with 429%s",
			p.opts.Name, clientnet.Name(client), p.opts.MaxQueuePerClient, clientShareHint("max_queue_per_client")))
		return grant{}, errClientQueueFull
	}
	queued := time.Now()
	w := waiterPool.Get().(*waiter)
	w.path, w.idempotent, w.frames, w.sendErr, w.deadline, w.timeout = path, idempotent, nil, nil, queued.Add(p.opts.QueueTimeout), timeout
	if complete {
		w.frames = frames
	}
	p.enqueueLocked(w, client)
	if len(p.waiters) == 1 {
		p.armQueueTimerLocked(p.opts.QueueTimeout)
	}
	p.growLocked()
	p.mu.Unlock()

	var g grant
	select {
	case g = <-w.ch:
		p.mu.Lock()
		p.leaveQueueLocked(client)
		p.mu.Unlock()
	case <-ctx.Done():
		p.mu.Lock()
		if i := slices.Index(p.waiters, w); i >= 0 {
			p.waiters = slices.Delete(p.waiters, i, i+1)
			p.leaveQueueLocked(client)
			p.noteDrainLocked()
			p.mu.Unlock()
			waiterPool.Put(w)
			return grant{}, ctx.Err()
		}
		p.mu.Unlock()
		// a channel was handed to us (and the request maybe sent, or it was
		// pipelined) as the client left: serve the request after all, and
		// count it until then (a pipelined one still waits its turn)
		g = <-w.ch
		p.mu.Lock()
		p.leaveQueueLocked(client)
		p.mu.Unlock()
	}
	w.frames, w.sendErr = nil, nil
	waiterPool.Put(w)
	if g.err != nil {
		return grant{}, g.err
	}
	p.queueWait.Observe(time.Since(queued).Seconds())
	return g, nil
}

// origin is where a request comes from, as acquire is told it: the
// client's address as Caddy determined it (ip, honouring trusted_proxies;
// may be empty) and its connection's peer (remote, host:port).
type origin struct{ ip, remote string }

// clientOf is the client a request counts for in max_queue_per_client and
// max_open_per_client: its address as Caddy determined it (ip, honouring
// trusted_proxies), or else its connection's peer (remote, host:port); an
// IPv6 client by its /64, the least a network hands one host. A request
// with no address (a Unix socket's peers) gets the zero prefix, which has
// no bound of its own: those clients cannot be told apart, and one of them
// must not have them all refused.
func clientOf(ip, remote string) netip.Prefix {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		ap, perr := netip.ParseAddrPort(remote)
		if perr != nil {
			return netip.Prefix{}
		}
		a = ap.Addr()
	}
	return clientnet.Of(a)
}

// warnClientShare logs refusal, the message of a client refused past its
// share, at most once a minute with how many were held back: Caddy logs a
// 4xx only at its debug level, and a site behind a proxy it does not trust
// sees every visitor as one client, refused long before the app is busy.
func (p *Pool) warnClientShare(refusal string) {
	if ok, heldBack := p.clientShareWarnings.Allow(); ok {
		p.logger.Warn(refusal, zap.Int64("like_warnings_held_back", heldBack))
	}
}

// clientShareHint ends the message of a client refused past its share of
// option: how to tell clients behind a proxy apart, or else what to raise.
func clientShareHint(option string) string {
	hint := ". If that address is a proxy or CDN in front of the site, list it in the server's trusted_proxies (with trusted_proxies_strict, so that a client cannot name itself someone else), so that its visitors count apart"
	if option == "" { // a share with no option of its own
		return hint
	}
	return hint + "; else raise " + option + " if one client is expected to need that many"
}

// requestsWaiting reports whether requests wait for a channel in the
// queue, or for s behind its request (pipelined).
func (p *Pool) requestsWaiting(s *channel) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiters) > 0 || s.queued.len() > 0
}

// armQueueTimerLocked makes expireWaiters run in d. One timer serves the
// whole queue.
func (p *Pool) armQueueTimerLocked(d time.Duration) {
	if p.queueTimer == nil {
		p.queueTimer = time.AfterFunc(d, p.expireWaiters)
		return
	}
	p.queueTimer.Reset(d)
}

// takeIdleLocked pops the idle channel of the least busy worker.
func (p *Pool) takeIdleLocked(path string) *channel {
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	best := n - 1 // most recently used: warm caches, and extra workers stay idle
	if p.opts.Threads > 1 || p.idle[best].worker.state == workerRecycling {
		// the least busy worker; one waiting for its replacement only
		// when no other is free
		for i := n - 2; i >= 0; i-- {
			if less(p.idle[i].worker, p.idle[best].worker) {
				best = i
			}
		}
	}
	s := p.idle[best]
	copy(p.idle[best:], p.idle[best+1:])
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	p.occupyLocked(s, path)
	return s
}

// less orders workers for dispatch: not being recycled first, then the
// fewest requests in flight.
func less(a, b *worker) bool {
	if ar, br := a.state == workerRecycling, b.state == workerRecycling; ar != br {
		return !ar
	}
	return a.busy < b.busy
}

// occupyLocked and vacateLocked are the only places a channel becomes
// busy or free, and the busy counts of its worker and of the pool change.

// occupyLocked marks s busy with a request to path.
func (p *Pool) occupyLocked(s *channel, path string) {
	now := time.Now()
	if s.worker.busy == 0 {
		s.worker.busySince = p.busyBeginLocked(now)
	}
	s.worker.busy++
	p.busyChannels++
	s.path, s.since = path, now
}

// vacateLocked marks s free.
func (p *Pool) vacateLocked(s *channel) {
	s.worker.busy--
	if s.worker.busy == 0 {
		p.busyEndLocked(s.worker.busySince, time.Now())
	}
	p.busyChannels--
	s.path = ""
}

// busyClock is where the pools' busy spells are measured from.
var busyClock = time.Now()

// busyBeginLocked starts a spell of a worker's busy time (a request, or
// starting the worker: importing the app takes a CPU too) and returns
// its start, for busyEndLocked.
func (p *Pool) busyBeginLocked(now time.Time) time.Time {
	p.busySpells++
	p.busyStarts += now.Sub(busyClock)
	return now
}

// busyEndLocked ends the spell that began at since.
func (p *Pool) busyEndLocked(since, now time.Time) {
	p.busySpells--
	p.busyStarts -= since.Sub(busyClock)
	p.busyTime += now.Sub(since)
}

// BusyTime is how long the pool's workers have had a request or been
// starting, summed over the workers (two workers busy for a second make
// two seconds), since the pool started: an ASGI worker with several
// requests, or one websocket, counts once for that time. It never
// decreases: a spell counts until it ends, whatever became of its worker.
func (p *Pool) BusyTime() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	elapsed := time.Since(busyClock)
	return p.busyTime + time.Duration(p.busySpells)*elapsed - p.busyStarts
}

// release gives a channel back after a complete exchange. A worker that has
// served max_requests asks its replica for a replacement; it keeps serving
// until the replacement is ready.
func (p *Pool) release(s *channel) {
	s.frames.Shrink() // while the channel is still this caller's alone
	p.mu.Lock()
	w := s.worker
	now := time.Now()
	took := now.Sub(s.since)
	p.duration.Observe(took.Seconds())
	if sample := min(took, pipelineSampleCap); p.meanDuration == 0 {
		p.meanDuration = max(sample, 1)
	} else {
		p.meanDuration += (sample - p.meanDuration) / 32
	}
	w.served++
	w.lastUsed = now
	if !w.retired() && w.limit > 0 && w.served >= w.limit {
		w.requestRecycle("max_requests")
	}
	if next := p.runPipelinedLocked(s); next != nil {
		// the worker already has the pipelined request: it runs next
		s.path, s.since = next.path, now
		piped := p.pipelineLocked(s)
		p.mu.Unlock()
		// next's frames were sent when it was pipelined
		p.deliver(s, next, grant{channel: s, sent: true, sendErr: next.sendErr}, nil, piped)
		return
	}
	p.vacateLocked(s)
	var next *waiter
	var piped []*waiter
	if w.retired() {
		if w.busy == 0 {
			w.finishDrain()
		}
	} else if next = p.giveLocked(s); next != nil && next.frames != nil {
		piped = p.pipelineLocked(s)
	}
	p.noteDrainLocked()
	p.mu.Unlock()
	if next != nil {
		p.handOff(s, next, piped)
	}
}

// handOff gives channel s to a waiting request, sending its frames first
// when they are ready, so the worker starts on it at once; piped, when
// set, is sent right behind it, in the same system call.
func (p *Pool) handOff(s *channel, next *waiter, piped []*waiter) {
	p.deliver(s, next, grant{channel: s, sent: next.frames != nil}, next.frames, piped)
}

// deliver writes first (next's frames, unless the worker already has them)
// and the newly pipelined requests' frames, then gives next its grant g of
// s. A failed write is reported to each request it carried.
func (p *Pool) deliver(s *channel, next *waiter, g grant, first []byte, piped []*waiter) {
	// next's exchange starts here: the channel's deadline is its, not that
	// of the last request on s, which may have passed (an idle channel, a
	// pool paused longer than the timeout), and writes obey it too
	s.setDeadline(next.timeout)
	if first != nil || len(piped) > 0 {
		err := s.send(first, piped)
		if first != nil {
			g.sendErr = err
		}
		for _, w := range piped {
			w.sendErr = err
		}
	}
	next.ch <- g
}

// pipelineLocked moves the next requests in the queue onto s, which has just
// started a request, when pipelining applies, and returns those it added;
// the caller writes their frames (in deliver) before it hands s over, so
// nothing else can be sent on s in between.
func (p *Pool) pipelineLocked(s *channel) []*waiter {
	if p.paused {
		return nil
	}
	depth := min(p.pipelineDepthLocked(), p.pipelineShareLocked())
	free := depth - s.queued.len()
	if free <= 0 || (free < 2 && s.queued.len() > 0) || s.worker.state != workerServing {
		return nil
	}
	first := s.queued.len()
	for s.queued.len() < depth && len(p.waiters) > 0 && s.queued.fits(p.waiters[0].frames) {
		p.pipelineOntoLocked(s, p.dequeueLocked())
	}
	return s.queued.waiters[first:]
}

// pipelineShareLocked is how many requests one channel may have pipelined
// behind its running one, of those waiting or pipelined now: an equal
// share among the channels of the workers in service, rounded down (while
// requests wait, every one of those channels is busy; a retiring worker's
// are not counted, since they take no more requests). When a burst has
// queued requests (a pause of the machine, a slow request), the first
// channel to free up takes its share, not the whole queue while the others
// run dry, and the requests left waiting, fewer than the channels, go to
// whichever channel frees up first, as from one queue. Under a steady
// overload the share is past the depth, which then decides alone.
func (p *Pool) pipelineShareLocked() int {
	return (len(p.waiters) + p.pipelined) / max(len(p.workers)*max(1, p.opts.Threads), 1)
}

// pipeline is the requests pipelined behind the one running on a channel,
// in order; their frames are with the worker. It keeps its frames' size.
type pipeline struct {
	waiters []*waiter
	bytes   int
}

func (q *pipeline) len() int { return len(q.waiters) }

// fits reports whether a request of these frames may join the pipeline:
// they are known, small, and keep the pipeline within what a socket's
// buffer takes.
func (q *pipeline) fits(frames []byte) bool {
	return frames != nil && len(frames) <= pipelineMaxFrames && q.bytes+len(frames) <= pipelineMaxBytes
}

// The pool's count of pipelined requests (p.pipelined, the sum of its
// channels' pipelines) changes only in the three methods below.

// pipelineOntoLocked pipelines w behind the request running on s.
func (p *Pool) pipelineOntoLocked(s *channel, w *waiter) {
	s.queued.waiters = append(s.queued.waiters, w)
	s.queued.bytes += len(w.frames)
	p.pipelined++
	p.pipelinedTotal++
}

// runPipelinedLocked takes the first request pipelined on s, which the
// worker runs next, or returns nil.
func (p *Pool) runPipelinedLocked(s *channel) *waiter {
	q := &s.queued
	if len(q.waiters) == 0 {
		return nil
	}
	next := q.waiters[0]
	n := copy(q.waiters, q.waiters[1:])
	q.waiters[n] = nil
	q.waiters = q.waiters[:n]
	q.bytes -= len(next.frames)
	p.pipelined--
	return next
}

// unpipelineLocked takes every request pipelined on s off it, in order.
func (p *Pool) unpipelineLocked(s *channel) []*waiter {
	taken := s.queued.waiters
	s.queued = pipeline{}
	p.pipelined -= len(taken)
	return taken
}

// giveLocked assigns a free channel to the request whose turn is next, which
// the caller must then hand it to (handOff, after unlocking), or idles it.
func (p *Pool) giveLocked(s *channel) *waiter {
	if len(p.waiters) > 0 && !p.paused && (p.state == supervisor.Running || p.state == supervisor.Draining) {
		w := p.dequeueLocked()
		p.occupyLocked(s, w.path)
		return w
	}
	p.idle = append(p.idle, s)
	return nil
}

// discard takes a channel whose worker broke or hung mid-exchange out of
// service with its worker; the caller ends the process and its replica starts
// a replacement. The requests pipelined on the channel are dispatched again
// when gone (the worker's channel ended before the current response did,
// so the worker never reached them), else only the idempotent ones.
func (p *Pool) discard(s *channel, reason string, gone bool) {
	w := s.worker
	p.mu.Lock()
	if w.exitReason == "" {
		w.exitReason = reason
	}
	p.retireLocked(w, reason, false)
	handOffs := p.requeueLocked(p.unpipelineLocked(s), gone)
	p.vacateLocked(s)
	p.noteDrainLocked()
	p.mu.Unlock()
	for _, h := range handOffs {
		p.handOff(h.channel, h.waiter, nil)
	}
}

// handOffTo is a channel given to a waiting request under the pool's lock,
// to be handed over after it is released.
type handOffTo struct {
	channel *channel
	waiter  *waiter
}

// requeueLocked puts requests that were pipelined on a broken worker back
// at the head of the queue in their order, and gives them the idle channels
// there are. Unless the worker provably never started them (gone), those
// that are not idempotent are answered with 502 instead.
func (p *Pool) requeueLocked(queued []*waiter, gone bool) []handOffTo {
	if len(queued) == 0 {
		return nil
	}
	resend := make([]*waiter, 0, len(queued))
	for _, q := range queued {
		switch {
		case !gone && !q.idempotent:
			q.ch <- grant{err: errPipelineAbandoned}
		case !p.state.Serving():
			q.ch <- grant{err: errPoolStopped}
		default:
			resend = append(resend, q)
		}
	}
	if len(resend) == 0 {
		return nil
	}
	p.waiters = append(resend, p.waiters...) // their turns are past already
	p.armForEarliestLocked()
	return p.handOutLocked()
}

// handOutLocked takes the waiting requests, in their turns, off the queue
// onto the idle channels there are (none while paused); the caller hands
// each over once the lock is released.
func (p *Pool) handOutLocked() []handOffTo {
	var handOffs []handOffTo
	for len(p.waiters) > 0 && !p.paused {
		s := p.takeIdleLocked(p.waiters[0].path)
		if s == nil {
			break
		}
		handOffs = append(handOffs, handOffTo{s, p.dequeueLocked()})
	}
	return handOffs
}

func (p *Pool) failWaitersLocked() {
	for _, w := range p.waiters {
		w.ch <- grant{err: errPoolStopped}
	}
	p.waiters = nil
}
