package engine

import (
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// TestCountersFollowTheChannels drives the dispatcher through random
// sequences of what requests do (arrive and queue, take an idle channel,
// finish, break their worker) on real socket pairs, and checks after every
// step that the pool's counters agree with the channels they count: busy
// channels, pipelined requests and each pipeline's bytes, that every
// channel of a worker in service is either idle or busy, never both, and
// that no request waits while a channel in service is idle.
func TestCountersFollowTheChannels(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		p := New(Options{Name: "counters", Kind: "wsgi", Pipeline: "auto", Threads: 2, MaxQueue: 1000, QueueTimeout: time.Hour}, zap.NewNop())
		p.state = supervisor.Running
		p.meanDuration = 100 * time.Microsecond // pipelining on: depth 8
		var all []*channel
		for range 3 {
			w := &worker{}
			for range p.opts.Threads {
				conn, peer, err := socketPair()
				if err != nil {
					t.Fatal(err)
				}
				go io.Copy(io.Discard, peer) // the worker reads what it is sent
				t.Cleanup(func() { conn.Close(); peer.Close() })
				w.channels = append(w.channels, &channel{worker: w, conn: conn, frames: protocol.NewReader(conn)})
			}
			p.mu.Lock()
			p.addWorkerLocked(w)
			p.mu.Unlock()
			all = append(all, w.channels...)
		}
		for step := range 300 {
			busy := func(inService bool) []*channel {
				var out []*channel
				for _, s := range all {
					if s.path != "" && (!inService || !s.worker.retired()) {
						out = append(out, s)
					}
				}
				return out
			}
			switch op := rng.IntN(10); {
			case op < 4: // a request arrives: an idle channel, or the queue
				frames := make([]byte, 1+rng.IntN(4096))
				p.mu.Lock()
				if s := p.takeIdleLocked("/r"); s == nil {
					p.waiters = append(p.waiters, &waiter{ch: make(chan grant, 1), path: "/q", frames: frames, deadline: time.Now().Add(time.Hour)})
				}
				p.mu.Unlock()
			case op < 8: // a request finishes
				if b := busy(true); len(b) > 0 {
					p.release(b[rng.IntN(len(b))])
				}
			case op < 9: // a worker breaks mid-request (at most two of three)
				if b := busy(false); len(b) > 0 && p.countRetired(all) < 2 {
					s := b[rng.IntN(len(b))]
					p.discard(s, "crash", rng.IntN(2) == 0)
					if s.path != "" {
						t.Fatalf("seed %d step %d: a discarded channel is still busy", seed, step)
					}
				}
			default: // a broken worker's other requests fail too
				for _, s := range busy(false) {
					if s.worker.retired() {
						p.discard(s, "crash", true)
						if s.path != "" {
							t.Fatalf("seed %d step %d: a discarded channel is still busy", seed, step)
						}
						break
					}
				}
			}
			p.mu.Lock()
			checkCounters(t, p, all, seed, step)
			p.mu.Unlock()
			if t.Failed() {
				return
			}
		}
	}
}

func (p *Pool) countRetired(all []*channel) int {
	seen := map[*worker]bool{}
	for _, s := range all {
		if s.worker.retired() {
			seen[s.worker] = true
		}
	}
	return len(seen)
}

// checkCounters compares the pool's counters with the channels; the
// pool's mutex is held.
func checkCounters(t *testing.T, p *Pool, all []*channel, seed uint64, step int) {
	t.Helper()
	busy, pipelined, workerBusy := 0, 0, 0
	workers := map[*worker]bool{}
	idle := map[*channel]bool{}
	for _, s := range p.idle {
		idle[s] = true
	}
	for _, s := range all {
		if s.path != "" {
			busy++
		}
		if !workers[s.worker] {
			workers[s.worker] = true
			workerBusy += s.worker.busy
		}
		pipelined += s.queued.len()
		bytes := 0
		for _, w := range s.queued.waiters {
			bytes += len(w.frames)
		}
		if bytes != s.queued.bytes {
			t.Errorf("seed %d step %d: a pipeline counts %d bytes, holds %d", seed, step, s.queued.bytes, bytes)
		}
		if !s.worker.retired() && idle[s] == (s.path != "") {
			t.Errorf("seed %d step %d: a channel in service is idle %v and busy %v", seed, step, idle[s], s.path != "")
		}
		if s.path == "" && s.queued.len() > 0 {
			t.Errorf("seed %d step %d: a free channel has %d requests pipelined", seed, step, s.queued.len())
		}
	}
	if busy != p.busyChannels || workerBusy != busy {
		t.Errorf("seed %d step %d: the pool counts %d busy channels, its workers %d, and %d are", seed, step, p.busyChannels, workerBusy, busy)
	}
	if pipelined != p.pipelined {
		t.Errorf("seed %d step %d: the pool counts %d pipelined requests, the channels hold %d", seed, step, p.pipelined, pipelined)
	}
	if len(p.waiters) > 0 && len(p.idle) > 0 && !p.paused {
		t.Errorf("seed %d step %d: %d requests wait while %d channels in service are idle", seed, step, len(p.waiters), len(p.idle))
	}
}
