package supervisor

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The budget: a burst, then lines at the rate; the count of the dropped
// ones reported with the first line let through a second after the last
// report; the last dropped ones kept, and forgotten once a line gets
// through after them.
func TestOutputBudget(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	t0 := time.Unix(1000, 0)
	b := newOutputBudget(t0, zap.New(core))
	for i := 0; i < outputBurst; i++ {
		if !b.take(t0, "stdout", []byte("x")) {
			t.Fatalf("line %d of the burst dropped", i)
		}
	}
	for i := 0; i < 50; i++ {
		if b.take(t0, "stderr", []byte(fmt.Sprint("dropped ", i))) {
			t.Fatal("a line past the burst was let through")
		}
	}
	if len(b.last) != keptDropped || b.last[keptDropped-1].text != "dropped 49" || b.last[0].text != fmt.Sprint("dropped ", 50-keptDropped) {
		t.Errorf("the last dropped lines kept: %d, %+v … %+v", len(b.last), b.last[0], b.last[len(b.last)-1])
	}
	t1 := t0.Add(time.Second / outputLinesPerSecond) // one line's worth
	if !b.take(t1, "stdout", []byte("y")) || b.take(t1, "stdout", []byte("z")) {
		t.Error("after a hundredth of a second: not exactly one more line")
	}
	if n := logs.FilterMessageSnippet("lines were dropped").All(); len(n) != 1 || n[0].ContextMap()["lines_dropped"] != int64(50) {
		t.Errorf("reports after the first dropped run: %v", n)
	}
	if len(b.last) != 1 || b.last[0].text != "z" {
		t.Errorf("after a line got through, the kept lines: %+v, want only the one dropped since", b.last)
	}
	t2 := t1.Add(time.Second / 2) // 50 lines' worth, but under a second since the report
	for i := 0; i < 60; i++ {
		b.take(t2, "stdout", []byte("w"))
	}
	if n := len(logs.FilterMessageSnippet("lines were dropped").All()); n != 1 {
		t.Errorf("%d reports within a second", n)
	}
	b.reportRest()
	reports := logs.FilterMessageSnippet("lines were dropped").All()
	if len(reports) != 2 || reports[1].ContextMap()["lines_dropped"] != int64(11) {
		t.Errorf("the report at the end: %v", reports)
	}
	// "z" was dropped, then 50 lines got through: only the 10 dropped after them are kept
	if kept := logs.FilterField(zap.Bool("dropped_then_kept", true)).All(); len(kept) != 10 || kept[0].Message != "w" {
		t.Errorf("the kept lines at the end: %d", len(kept))
	}
}

// A process that writes without pause gets a burst and then its rate
// into the log; every line is either logged or counted as dropped, and
// the last ones it wrote before it ended are logged.
func TestOutputFloodReachesTheLogAtItsRate(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	script := `
import sys, time
for i in range(20000):
    print("flood", i)
sys.stdout.flush()
time.sleep(1.2)
print("after the pause", flush=True)
for i in range(3000):
    sys.stderr.write("end %d\n" % i)
`
	start := time.Now()
	p, err := Start(Command{Path: "/usr/bin/python3", Args: []string{"-c", script}, Env: os.Environ()}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		p.Stop(9, 0)
		t.Fatal("the process did not end")
	}
	elapsed := time.Since(start)
	logged, dropped, kept := 0, int64(0), []string{}
	sawPause := false
	for _, e := range logs.All() {
		switch {
		case strings.Contains(e.Message, "lines were dropped"):
			dropped += e.ContextMap()["lines_dropped"].(int64)
		case e.ContextMap()["dropped_then_kept"] == true:
			kept = append(kept, e.Message)
		default:
			logged++
			sawPause = sawPause || e.Message == "after the pause"
		}
	}
	if int64(logged)+dropped != 23001 {
		t.Errorf("%d lines logged and %d counted as dropped; want 23001 in all", logged, dropped)
	}
	if most := outputBurst + int(elapsed.Seconds()*outputLinesPerSecond) + 1; logged > most {
		t.Errorf("%d lines logged in %s; want at most %d", logged, elapsed, most)
	}
	if !sawPause {
		t.Error("the line after the pause was dropped")
	}
	if len(kept) != keptDropped || kept[len(kept)-1] != "end 2999" {
		t.Errorf("the last lines kept: %d, ending %q", len(kept), kept[len(kept)-1:])
	}
}
