package engine

import (
	"io"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// TestBusyTime: a worker counts while it has a request, once however many
// of its threads are busy; two busy workers count twice; nothing is added
// while no worker has a request, and what was counted stays once a spell
// ends.
func TestBusyTime(t *testing.T) {
	p := New(Options{Name: "busy", Kind: "wsgi", Pipeline: "off", Threads: 2, MaxQueue: 10, QueueTimeout: time.Minute}, zap.NewNop())
	p.state = supervisor.Running
	var workers [2]*worker
	for i := range workers {
		w := &worker{}
		for range 2 {
			conn, peer, err := socketPair()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(); peer.Close() })
			go io.Copy(io.Discard, peer)
			w.channels = append(w.channels, &channel{worker: w, conn: conn, frames: protocol.NewReader(conn)})
		}
		workers[i] = w
		p.mu.Lock()
		p.addWorkerLocked(w)
		p.mu.Unlock()
	}
	if got := p.BusyTime(); got != 0 {
		t.Fatalf("BusyTime of a pool that served nothing: %v, want 0", got)
	}

	// one worker, both of its threads busy: counted once
	start := time.Now()
	p.mu.Lock()
	a, b := workers[0].channels[0], workers[0].channels[1]
	p.occupyLocked(a, "/a")
	p.occupyLocked(b, "/b")
	p.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	got := p.BusyTime()
	if elapsed := time.Since(start); got < 50*time.Millisecond || got > elapsed {
		t.Errorf("one worker with two requests for %v: BusyTime %v, want between 50ms and %v", elapsed, got, elapsed)
	}
	p.release(a)
	p.release(b)
	ended := time.Since(start)
	spell := p.BusyTime()
	if spell < 50*time.Millisecond || spell > ended {
		t.Errorf("after the spell (%v): BusyTime %v", ended, spell)
	}
	time.Sleep(30 * time.Millisecond)
	if got := p.BusyTime(); got != spell {
		t.Errorf("idle for 30ms: BusyTime went from %v to %v", spell, got)
	}

	// both workers busy: counted twice
	start = time.Now()
	p.mu.Lock()
	c, d := workers[0].channels[0], workers[1].channels[0]
	p.occupyLocked(c, "/c")
	p.occupyLocked(d, "/d")
	p.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	got = p.BusyTime() - spell
	if elapsed := time.Since(start); got < 100*time.Millisecond || got > 2*elapsed {
		t.Errorf("two workers with a request each for %v: BusyTime grew by %v, want between 100ms and %v", elapsed, got, 2*elapsed)
	}
	p.release(c)
	p.release(d)

	// a worker taken out of service (it crashed or timed out) while its
	// two threads are busy: its spell counts until the last one ends
	before := p.BusyTime()
	p.mu.Lock()
	e, f := workers[1].channels[0], workers[1].channels[1]
	p.occupyLocked(e, "/e")
	p.occupyLocked(f, "/f")
	p.workers = without(p.workers, workers[1])
	p.idle = nil
	p.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	if got := p.BusyTime() - before; got < 20*time.Millisecond {
		t.Errorf("a worker out of service with two requests for 20ms: BusyTime grew by %v", got)
	}
	p.mu.Lock()
	p.vacateLocked(e)
	p.vacateLocked(f)
	p.mu.Unlock()
	after := p.BusyTime()
	time.Sleep(10 * time.Millisecond)
	if got := p.BusyTime(); got != after {
		t.Errorf("nothing busy: BusyTime went from %v to %v", after, got)
	}
}
