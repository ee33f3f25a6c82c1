package keeper

import (
	"encoding/binary"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestAwaitLimitedStopsAtItsDeadline: the wait for a step's report ends at
// its deadline even while another process holds the report pipe's write
// end open (one of the app's account can open the step's descriptor
// through /proc while the step is its to read): a read alone waited for
// it for good, and with it every start under a limit.
func TestAwaitLimitedStopsAtItsDeadline(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1]) // held, as the app's process would
	done := make(chan error, 1)
	go func() { done <- awaitLimited(p[0], time.Now().Add(200*time.Millisecond)) }()
	select {
	case err := <-done:
		if err != syscall.ETIMEDOUT {
			t.Errorf("a held report pipe: %v, want ETIMEDOUT", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait for a step's report outlived its deadline while its pipe was held open")
	}
}

// TestAwaitLimitedReads: the step's report as it comes: its end closed
// with nothing written (the program runs), or an errno.
func TestAwaitLimitedReads(t *testing.T) {
	for _, tc := range []struct {
		write []byte
		want  error
	}{
		{nil, nil},
		{binary.NativeEndian.AppendUint32(nil, uint32(syscall.EAGAIN)), syscall.EAGAIN},
		{[]byte{1, 2}, syscall.EIO},
	} {
		var p [2]int
		if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		syscall.Write(p[1], tc.write)
		syscall.Close(p[1])
		if err := awaitLimited(p[0], time.Now().Add(5*time.Second)); err != tc.want {
			t.Errorf("report %v: %v, want %v", tc.write, err, tc.want)
		}
		syscall.Close(p[0])
	}
}

// TestStepSlotsPerAccount: one step at a time per account; an account's
// starts queue behind its step in order while another account's start
// goes at once, and a slot given back passes to the next in its queue.
func TestStepSlotsPerAccount(t *testing.T) {
	var s stepSlots
	start := func(id uint64) receivedRequest { return receivedRequest{req: Request{ID: id}} }
	if !s.take(1001, start(1)) || !s.take(1002, start(2)) {
		t.Fatal("the first start of each account did not take its slot")
	}
	if s.take(1001, start(3)) || s.take(1001, start(4)) {
		t.Fatal("a second start of an account took the slot its step holds")
	}
	if next, ok := s.give(1002); ok {
		t.Errorf("account 1002's slot passed to %v, queued for another account", next.req.ID)
	}
	for _, want := range []uint64{3, 4} {
		if next, ok := s.give(1001); !ok || next.req.ID != want {
			t.Fatalf("the slot passed to %v (%v), want start %d", next.req.ID, ok, want)
		}
	}
	if _, ok := s.give(1001); ok {
		t.Error("an empty queue passed the slot on")
	}
	if !s.take(1001, start(5)) {
		t.Error("a free slot was not taken")
	}
}

// TestAFailedQueuedStartDoesNotBlockTheMainLoop: a start taken from its
// account's queue that fails before its step runs (a directory that does
// not exist) gives the slot to the next start queued without waiting for
// the main loop, which it runs on: it waited for itself, and the keeper
// served nothing more, not even Caddy's end.
func TestAFailedQueuedStartDoesNotBlockTheMainLoop(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	old := syscall.Umask(0o22)
	defer syscall.Umask(old)
	k := &keeper{conn: fds[0], started: map[int]bool{}, stepping: map[int]bool{}, steppedEnds: map[int]int{},
		resume: make(chan receivedRequest), done: make(chan struct{})}
	defer close(k.done)
	uid := uint32(os.Getuid())
	failing := Request{ID: 1, Path: "/bin/true", Argv: []string{"true"}, Dir: "/nonexistent-hearth-test", MaxProcesses: 100}
	next := Request{ID: 2, Path: "/bin/true", Argv: []string{"true"}, Dir: "/", MaxProcesses: 100}
	if !k.steps.take(uid, receivedRequest{req: failing}) || k.steps.take(uid, receivedRequest{req: next}) {
		t.Fatal("the slots did not take the first start and queue the second")
	}
	ended := make(chan struct{})
	go func() { // as the main loop
		k.start(receivedRequest{req: failing, holdsStep: true})
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the main loop waits for itself after a queued start failed")
	}
	select {
	case r := <-k.resume:
		if r.req.ID != 2 || !r.holdsStep {
			t.Errorf("the slot went to %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the next start queued was not handed to the main loop")
	}
}
