// Package rawiotest counts, with Go's execution tracer, the system calls
// a function's goroutine entered Go's system-call state for: what the
// tests of rawio and of its users check is zero.
package rawiotest

import (
	"bytes"
	"context"
	"io"
	"runtime/trace"
	"testing"

	xtrace "golang.org/x/exp/trace"
)

// SystemCalls runs each of fns on the calling goroutine under the
// execution tracer and returns, for each, how many times the goroutine
// entered the system-call state while it ran. It skips the test when the
// tracer is in use.
func SystemCalls(t testing.TB, fns ...func()) []int {
	t.Helper()
	var out bytes.Buffer
	if err := trace.Start(&out); err != nil {
		t.Skipf("the execution tracer is in use: %v", err)
	}
	names := make([]string, len(fns))
	for i, fn := range fns {
		names[i] = string(rune('a' + i))
		trace.WithRegion(context.Background(), names[i], fn)
	}
	trace.Stop()

	counts := map[string]int{}
	region := map[xtrace.GoID]string{}
	rd, err := xtrace.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := rd.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind() {
		case xtrace.EventRegionBegin:
			region[ev.Goroutine()] = ev.Region().Type
		case xtrace.EventRegionEnd:
			delete(region, ev.Goroutine())
		case xtrace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != xtrace.ResourceGoroutine {
				continue
			}
			if _, to := st.Goroutine(); to == xtrace.GoSyscall {
				if name, ok := region[st.Resource.Goroutine()]; ok {
					counts[name]++
				}
			}
		}
	}
	got := make([]int, len(fns))
	for i, name := range names {
		got[i] = counts[name]
	}
	return got
}
