package engine

import (
	"errors"
	"fmt"
	"testing"
)

// TestFailureOf: a failure is found through any wrapping, and only the
// failures that break a channel say so.
func TestFailureOf(t *testing.T) {
	plain := errors.New("not the engine's")
	if FailureOf(plain) != 0 || FailureOf(nil) != 0 {
		t.Error("an error the engine did not make has a failure")
	}
	for f := Failure(1); f <= LastFailure; f++ {
		err := fmt.Errorf("relaying: %w", Failed(f, plain))
		if FailureOf(err) != f || !errors.Is(err, plain) {
			t.Errorf("failure %d: FailureOf says %d", f, FailureOf(err))
		}
		if want := f == WorkerBroken || f == TimedOut; brokeChannel(err) != want {
			t.Errorf("failure %d: brokeChannel %v, want %v", f, !want, want)
		}
	}
}
