package tests

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Issue 15, point 3: a pool has exactly its configured workers after any
// crash, kill or recycle, under load; an autoscaled pool stays within its
// bounds. A worker SIGKILLed under load used to be replaced twice: while
// its replacement started, requests queued and the growth meant for
// autoscaled pools counted one worker too few and added a seat.

// inService counts the app's workers in service (not retiring) and all
// its workers.
func inService(c *caddyProc) (serving, all int, pids []int) {
	c.t.Helper()
	a := c.mustApps()[0]
	for _, w := range a.Workers {
		if w.State != "retiring" {
			serving++
			pids = append(pids, w.Pid)
		}
	}
	return serving, len(a.Workers), pids
}

// stopLoad ends l without judging its requests: the requests in flight on
// a SIGKILLed worker may fail (that is not what these tests check).
func stopLoad(t *testing.T, l *load, minOK int64) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if l.ok.Load() < minOK {
		t.Errorf("only %d requests succeeded, want at least %d", l.ok.Load(), minOK)
	}
}

// killAndCount SIGKILLs one worker in service, waits until the pool is
// back to want workers in service with the victim gone, and watches the
// pool for a while after, failing if it ever holds more than most workers
// in service or settles on anything but want.
func killAndCount(t *testing.T, c *caddyProc, l *load, round, want, most int) {
	t.Helper()
	l.waitServed(t, 20)
	_, _, pids := inService(c)
	if len(pids) == 0 {
		t.Fatalf("round %d: no worker in service", round)
	}
	victim := pids[len(pids)-1]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	peak := 0
	waitFor(t, 30*time.Second, fmt.Sprintf("round %d: the pool back to %d workers without %d", round, want, victim), func() bool {
		serving, _, pids := inService(c)
		peak = max(peak, serving)
		return serving == want && !contains(pids, victim) && c.mustApps()[0].State == "running"
	})
	// a second replacement (the bug) shows up once its worker is ready:
	// watch for longer than a worker takes to start
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		serving, _, _ := inService(c)
		peak = max(peak, serving)
		time.Sleep(20 * time.Millisecond)
	}
	if peak > most {
		t.Errorf("round %d: %d workers in service after a SIGKILL under load, want at most %d", round, peak, most)
	}
	l.waitServed(t, 20)
	if serving, _, pids := inService(c); serving != want {
		t.Errorf("round %d: the pool settled on %d workers %v, want %d", round, serving, pids, want)
	}
}

// holdsAt fails unless the pool keeps exactly want workers in service for
// longer than a worker takes to start (a second replacement or an extra
// seat would show up within it).
func holdsAt(t *testing.T, c *caddyProc, want int, what string) {
	t.Helper()
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if serving, _, pids := inService(c); serving != want {
			t.Errorf("%s: %d workers in service %v, want %d", what, serving, pids, want)
			return
		}
	}
}

// TestKilledWorkerAtTheMinimumIdle: an idle autoscaled pool at its
// minimum replaces a SIGKILLed worker once and does not grow.
func TestKilledWorkerAtTheMinimumIdle(t *testing.T) {
	t.Parallel()
	config, _ := site(t, "hello:application", "workers 1\n\t\tmax_workers 3")
	c := startCaddy(t, config)
	for round := 1; round <= 3; round++ {
		_, _, pids := inService(c)
		if len(pids) != 1 {
			t.Fatalf("round %d: %d workers in service, want the minimum 1", round, len(pids))
		}
		syscall.Kill(pids[0], syscall.SIGKILL)
		waitFor(t, 30*time.Second, fmt.Sprintf("round %d: the worker replaced", round), func() bool {
			serving, _, now := inService(c)
			return serving == 1 && !contains(now, pids[0])
		})
		holdsAt(t, c, 1, fmt.Sprintf("round %d, idle after a kill", round))
	}
	if a := c.mustApps()[0]; a.Restarts["crash"] != 3 || a.Restarts["scale"] != 0 {
		t.Errorf("restarts %v, want 3 crashes and no scaling", a.Restarts)
	}
}

func TestKilledWorkersUnderLoadKeepPoolSize(t *testing.T) {
	t.Parallel()
	c, _, l := underLoad(t, "fail:application", "workers 2", "/slow?0.01", 8)
	for round := 1; round <= 5; round++ {
		killAndCount(t, c, l, round, 2, 2)
	}
	stopLoad(t, l, 200)
	a := c.mustApps()[0]
	if a.Restarts["crash"] != 5 || a.Restarts["scale"] != 0 {
		t.Errorf("restarts %v, want 5 crashes and nothing else", a.Restarts)
	}
	// and idle: still exactly two
	time.Sleep(1500 * time.Millisecond)
	if serving, all, _ := inService(c); serving != 2 || all != 2 {
		t.Errorf("idle after the kills: %d workers in service, %d in all; want 2", serving, all)
	}
}

func TestKilledWorkersDuringRecyclingKeepPoolSize(t *testing.T) {
	t.Parallel()
	c, _, l := underLoad(t, "fail:application", "workers 2\n\t\tmax_requests 30", "/slow?0.005", 8)
	for round := 1; round <= 5; round++ {
		waitFor(t, 30*time.Second, "max_requests recycles", func() bool {
			return c.mustApps()[0].Restarts["max_requests"] >= 2*round
		})
		killAndCount(t, c, l, round, 2, 2)
	}
	stopLoad(t, l, 300)
	a := c.mustApps()[0]
	if a.Restarts["crash"] != 5 || a.Restarts["scale"] != 0 {
		t.Errorf("restarts %v, want 5 crashes, max_requests recycles and nothing else", a.Restarts)
	}
	waitFor(t, 20*time.Second, "the retiring workers gone", func() bool {
		serving, all, _ := inService(c)
		return serving == 2 && all == 2
	})
}

func TestAutoscaledPoolStaysWithinBoundsUnderKills(t *testing.T) {
	t.Parallel()
	config, url := site(t, "hang:application", "workers 1\n\t\tmax_workers 3\n\t\tidle_timeout 30s")
	c := startCaddy(t, config)
	if serving, _, _ := inService(c); serving != 1 {
		t.Fatalf("autoscaled pool starts with %d workers, want the minimum 1", serving)
	}
	l := startLoad(url+"/slow?0.1", 8)
	waitFor(t, 30*time.Second, "scale up to the maximum", func() bool {
		serving, _, _ := inService(c)
		return serving == 3
	})
	for round := 1; round <= 4; round++ {
		// busy and queueing: the pool is at its maximum and must stay there
		killAndCount(t, c, l, round, 3, 3)
	}
	stopLoad(t, l, 50)
	if a := c.mustApps()[0]; a.Restarts["crash"] != 4 {
		t.Errorf("restarts %v, want 4 crashes", a.Restarts)
	}
}
