package engine

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestQueueTurns: waiting requests are taken one client's after another's,
// each client's in their order, so a client with many waiting holds up
// another's by one of its own at most; a lone client's queue, and the
// requests of clients without an address, stay first in, first out.
func TestQueueTurns(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  string // "a": client a queues a request; "-": the next one is taken; "a.": a's requests have all had their answer
		want string // the requests taken, by the order each client queued them
	}{
		{"a lone client: first in, first out", "a a a a - - - -", "a1 a2 a3 a4"},
		{"another client behind a flood goes second", "a a a a b - - - - -", "a1 b1 a2 a3 a4"},
		{"two floods take turns", "a a a b b b - - - - - -", "a1 b1 a2 b2 a3 b3"},
		{"three clients", "a a a b b c - - - - - -", "a1 b1 c1 a2 b2 a3"},
		{"a client arriving later waits for the turn under way", "a a a - b - - -", "a1 a2 b1 a3"},
		{"a client whose requests were answered starts at the current turn", "a - a. a a b - - -", "a1 a2 b1 a3"},
		{"a client still served keeps its turns", "a a - - b a b - - -", "a1 a2 b1 a3 b2"},
		{"clients without an address count as one", "_ _ _ b - - - -", "_1 b1 _2 _3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Pool{waiting: map[netip.Prefix]queuedClient{}}
			names := map[*waiter]string{}
			counts := map[string]int{}
			var taken []string
			for _, op := range strings.Fields(tc.ops) {
				switch {
				case op == "-":
					if len(p.waiters) == 0 {
						t.Fatalf("nothing to take at %q", op)
					}
					taken = append(taken, names[p.dequeueLocked()])
				case strings.HasSuffix(op, "."):
					for range counts[op[:1]] {
						p.leaveQueueLocked(testClient(op[:1]))
					}
				default:
					counts[op]++
					w := &waiter{}
					names[w] = op + string(rune('0'+counts[op]))
					p.enqueueLocked(w, testClient(op))
				}
			}
			if got := strings.Join(taken, " "); got != tc.want {
				t.Errorf("taken %s, want %s", got, tc.want)
			}
		})
	}
}

// testClient is client a, b, c… of TestQueueTurns as an address's prefix;
// "_" has no address.
func testClient(name string) netip.Prefix {
	if name == "_" {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, name[0]}), 32)
}

// TestExpireWaitersAnywhere: in turn order, the requests past
// queue_timeout may be anywhere in the queue; they are answered, the rest
// keep their order, and the timer is armed for the earliest left.
func TestExpireWaitersAnywhere(t *testing.T) {
	p := &Pool{waiting: map[netip.Prefix]queuedClient{}}
	now := time.Now()
	var ws []*waiter
	for i, client := range []string{"a", "a", "a", "b", "b"} {
		w := &waiter{ch: make(chan grant, 1), deadline: now.Add(time.Duration(i+1) * time.Hour)}
		if client == "b" {
			w.deadline = now.Add(-time.Second) // queued since, and past its queue_timeout
		}
		p.enqueueLocked(w, testClient(client))
		ws = append(ws, w)
	}
	p.expireWaiters()
	defer p.queueTimer.Stop()
	for i, w := range ws {
		var g grant
		select {
		case g = <-w.ch:
		default:
		}
		if expired := g.err == errQueueTimeout; expired != (i >= 3) {
			t.Errorf("waiter %d: expired %v", i, expired)
		}
	}
	if len(p.waiters) != 3 || p.waiters[0] != ws[0] || p.waiters[1] != ws[1] || p.waiters[2] != ws[2] {
		t.Errorf("left waiting: %v, want the first client's three in order", p.waiters)
	}
}

// TestQueueTimerFollowsTheEarliest: in turn order the head of the queue
// need not be the oldest request; the queue's timer still answers the
// oldest when its queue_timeout ends.
func TestQueueTimerFollowsTheEarliest(t *testing.T) {
	p := &Pool{waiting: map[netip.Prefix]queuedClient{}}
	now := time.Now()
	// a1 a2 a3 of one client, then b1 of another: a1 b1 a2 a3
	deadlines := map[string]time.Duration{"a1": time.Hour, "a2": 50 * time.Millisecond, "a3": time.Hour, "b1": time.Hour}
	ws := map[string]*waiter{}
	for _, name := range []string{"a1", "a2", "a3", "b1"} {
		w := &waiter{ch: make(chan grant, 1), deadline: now.Add(deadlines[name])}
		p.mu.Lock()
		p.enqueueLocked(w, testClient(name[:1]))
		p.mu.Unlock()
		ws[name] = w
	}
	p.mu.Lock()
	if taken := p.dequeueLocked(); taken != ws["a1"] || p.waiters[0] != ws["b1"] {
		t.Fatalf("the queue is not a1 b1 a2 a3")
	}
	p.mu.Unlock()
	p.expireWaiters() // nothing is due yet; arms the timer
	defer func() {
		p.mu.Lock()
		p.queueTimer.Stop()
		p.mu.Unlock()
	}()
	select {
	case g := <-ws["a2"].ch:
		if g.err != errQueueTimeout {
			t.Errorf("a2 got %+v, want errQueueTimeout", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("a2 was not answered when its queue_timeout ended (the timer follows the head, b1?)")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) != 2 || p.waiters[0] != ws["b1"] || p.waiters[1] != ws["a3"] {
		t.Errorf("left waiting: %d, want b1 a3", len(p.waiters))
	}
}
