package panics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestCall(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	logger := zap.New(core)
	plain := errors.New("plain")
	for _, tc := range []struct {
		name string
		f    func() error
		want string // in the error; "" for none
	}{
		{"no panic", func() error { return nil }, ""},
		{"an error", func() error { return plain }, "plain"},
		{"a nil map", func() error { var m map[string]int; m["x"] = 1; return nil }, "assignment to entry in nil map"},
		{"a value", func() error { panic(42) }, "42"},
	} {
		err := Call(logger, "testing "+tc.name, tc.f)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if n := logs.FilterMessage("recovered from a panic").Len(); n != 2 {
		t.Errorf("%d panics logged, want 2", n)
	}
	for _, e := range logs.All() {
		if !strings.Contains(e.ContextMap()["stack"].(string), "panics_test.go") {
			t.Errorf("no stack of the panic: %v", e.ContextMap())
		}
	}
}

// TestAbortPassesThrough: net/http's deliberate abort is not a bug and
// must reach the server.
func TestAbortPassesThrough(t *testing.T) {
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", v)
		}
	}()
	_ = Call(zap.NewNop(), "aborting", func() error { panic(http.ErrAbortHandler) })
	t.Error("the abort did not go on")
}

func TestGo(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	done := make(chan struct{})
	Go(zap.New(core), "a goroutine", func() {
		defer close(done)
		panic("boom")
	})
	<-done
	deadline := time.Now().Add(5 * time.Second)
	for logs.Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if e := logs.All(); len(e) != 1 || e[0].ContextMap()["while"] != "a goroutine" {
		t.Errorf("logged %v", e)
	}
}

// TestKeep: a loop that panics runs again, and ends when it returns or
// when stop is closed.
func TestKeep(t *testing.T) {
	old := keepPause
	keepPause = time.Millisecond
	defer func() { keepPause = old }()
	runs := 0
	Keep(zap.NewNop(), "a loop", nil, func() {
		runs++
		if runs < 3 {
			panic("again")
		}
	})
	if runs != 3 {
		t.Errorf("%d runs, want 3", runs)
	}
	stop := make(chan struct{})
	close(stop)
	runs = 0
	Keep(zap.NewNop(), "a stopped loop", stop, func() { runs++; panic("once") })
	if runs != 1 {
		t.Errorf("%d runs after stop, want 1", runs)
	}
}

// RecoverRequest names the request a panic happened in, and recovers like
// Recover.
func TestRecoverRequest(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	logger := zap.New(core)
	r := httptest.NewRequest(http.MethodPost, "/boom", nil)
	serve := func() (err error) {
		defer RecoverRequest(logger, "serving", r, &err)
		panic("oops")
	}
	err := serve()
	if err == nil || !strings.Contains(err.Error(), "serving POST /boom") || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("error %v", err)
	}
	if n := logs.FilterMessage("recovered from a panic").Len(); n != 1 {
		t.Errorf("%d panics logged, want 1", n)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		func() (err error) {
			defer RecoverRequest(logger, "serving", r, &err)
			return nil
		}()
	}); allocs > 0 {
		t.Errorf("%v allocations without a panic", allocs)
	}
}
