package loglimit

import (
	"testing"
	"time"
)

// A warning scanners can provoke at will is let through once per period,
// with how many were held back since.
func TestLogLimit(t *testing.T) {
	l := Limit{Every: time.Hour}
	if ok, skipped := l.Allow(); !ok || skipped != 0 {
		t.Fatalf("the first warning: %v, %d", ok, skipped)
	}
	for range 3 {
		if ok, _ := l.Allow(); ok {
			t.Fatal("a second warning within the period was let through")
		}
	}
	l.last.Store(time.Now().Add(-2 * time.Hour).UnixNano()) // the period has passed
	if ok, skipped := l.Allow(); !ok || skipped != 3 {
		t.Errorf("after the period: %v, %d held back, want true, 3", ok, skipped)
	}
}
