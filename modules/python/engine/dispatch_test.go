package engine

import (
	"testing"
	"time"
)

// A channel's read deadline is never earlier than the request's timeout and
// at most 1% (at most a second) later; a shorter timeout re-arms it.
func TestChannelDeadlineStaysWithinSlack(t *testing.T) {
	conn, peer, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	defer peer.Close()
	s := &channel{conn: conn}
	for _, timeout := range []time.Duration{30 * time.Second, 30 * time.Second, time.Second, 10 * time.Minute, time.Second} {
		before := time.Now()
		s.setDeadline(timeout)
		after := time.Now()
		if s.deadline.Before(before.Add(timeout)) || s.deadline.After(after.Add(timeout+deadlineSlack(timeout))) {
			t.Errorf("timeout %v: deadline %v after the call, want within [%v, %v + slack %v]",
				timeout, s.deadline.Sub(before), timeout, timeout, deadlineSlack(timeout))
		}
	}
	s.setDeadline(-1)
	if !s.deadline.IsZero() {
		t.Errorf("a negative timeout left a deadline: %v", s.deadline)
	}
	if deadlineSlack(10*time.Minute) != time.Second || deadlineSlack(30*time.Second) != 300*time.Millisecond {
		t.Errorf("slack: %v for 10m, %v for 30s", deadlineSlack(10*time.Minute), deadlineSlack(30*time.Second))
	}
}
