package engine

import (
	"context"
	"io"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// oneChannelPool is a running pool of opts with one worker of one idle
// channel, whose other end drops what it is sent; both ends close when t
// ends.
func oneChannelPool(t *testing.T, opts Options) (*Pool, *channel) {
	p := New(opts, zap.NewNop())
	p.state = supervisor.Running
	conn, peer, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); peer.Close() })
	go io.Copy(io.Discard, peer)
	w := &worker{}
	s := &channel{worker: w, conn: conn, frames: protocol.NewReader(conn)}
	w.channels = []*channel{s}
	p.mu.Lock()
	p.addWorkerLocked(w)
	p.mu.Unlock()
	return p, s
}

// TestPauseHoldsRequests: Pause waits for the request in flight, then
// hands no channel out (a new request waits in the queue, an idle worker
// notwithstanding) until Resume, which gives it the free channel.
func TestPauseHoldsRequests(t *testing.T) {
	p, s := oneChannelPool(t, Options{Name: "paused", Kind: "wsgi", Pipeline: "off", Threads: 1, MaxQueue: 10, QueueTimeout: time.Minute})
	p.mu.Lock()
	running := p.takeIdleLocked("/slow") // a request in flight
	p.mu.Unlock()
	if running != s {
		t.Fatal("no channel for the first request")
	}

	paused := make(chan error, 1)
	go func() { paused <- p.Pause(context.Background()) }()
	select {
	case err := <-paused:
		t.Fatalf("Pause returned (%v) while a request was running", err)
	case <-time.After(100 * time.Millisecond):
	}
	p.release(s) // the request ends
	select {
	case err := <-paused:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pause did not return once nothing ran")
	}

	got := make(chan grant, 1)
	go func() {
		g, err := p.acquire(context.Background(), origin{}, "/next", true, nil, false, 0)
		if err != nil {
			t.Error(err)
		}
		got <- g
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		queued, idle := len(p.waiters), len(p.idle)
		p.mu.Unlock()
		if queued == 1 {
			if idle != 1 {
				t.Fatalf("%d idle channels while paused, want the one", idle)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request did not queue while paused")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-got:
		t.Fatal("a request got a channel while the pool was paused")
	case <-time.After(100 * time.Millisecond):
	}
	p.mu.Lock()
	busy := p.busyChannels
	p.mu.Unlock()
	if busy != 0 {
		t.Fatalf("busy %d while paused", busy)
	}
	p.Resume()
	select {
	case g := <-got:
		if g.channel != s {
			t.Errorf("after Resume the request got %v, want the free channel", g.channel)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Resume did not hand the free channel to the waiting request")
	}
}
