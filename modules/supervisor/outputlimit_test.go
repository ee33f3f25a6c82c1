package supervisor

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
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
	freshAllOutput(t, t0)
	b := newOutputBudget(t0, zap.New(core))
	for i := 0; i < outputBurst; i++ {
		if !b.take(t0, 0, []byte("x")) {
			t.Fatalf("line %d of the burst dropped", i)
		}
	}
	for i := 0; i < 50; i++ {
		if b.take(t0, 1, []byte(fmt.Sprint("dropped ", i))) {
			t.Fatal("a line past the burst was let through")
		}
	}
	if kept := keptLines(&b.last[1]); len(kept) != keptDropped || kept[keptDropped-1] != "dropped 49" || kept[0] != fmt.Sprint("dropped ", 50-keptDropped) {
		t.Errorf("the last dropped lines kept: %q", kept)
	}
	t1 := t0.Add(time.Second / outputLinesPerSecond) // one line's worth
	if !b.take(t1, 1, []byte("y")) || b.take(t1, 1, []byte("z")) {
		t.Error("after a hundredth of a second: not exactly one more line")
	}
	if n := logs.FilterMessageSnippet("lines were dropped").All(); len(n) != 1 || n[0].ContextMap()["lines_dropped"] != int64(50) {
		t.Errorf("reports after the first dropped run: %v", n)
	}
	if kept := keptLines(&b.last[1]); len(kept) != 1 || kept[0] != "z" {
		t.Errorf("after a line got through, the kept lines: %q, want only the one dropped since", kept)
	}
	t2 := t1.Add(time.Second / 2) // 50 lines' worth, but under a second since the report
	for i := 0; i < 60; i++ {
		b.take(t2, 1, []byte("w"))
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
// the last ones it wrote before it ended are logged. (That its budget
// comes back after a pause is TestOutputBudget's: here the pipe still
// holds thousands of lines when the pause begins.)
func TestOutputFloodReachesTheLogAtItsRate(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	freshAllOutput(t, time.Now())
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
	for _, e := range logs.All() {
		switch {
		case strings.Contains(e.Message, "lines were dropped"):
			dropped += e.ContextMap()["lines_dropped"].(int64)
		case e.ContextMap()["dropped_then_kept"] == true:
			if e.ContextMap()["stream"] == "stderr" {
				kept = append(kept, e.Message)
			}
		default:
			logged++
		}
	}
	if int64(logged)+dropped != 23001 {
		t.Errorf("%d lines logged and %d counted as dropped; want 23001 in all", logged, dropped)
	}
	if most := outputBurst + int(elapsed.Seconds()*outputLinesPerSecond) + 1; logged > most {
		t.Errorf("%d lines logged in %s; want at most %d", logged, elapsed, most)
	}
	if len(kept) != keptDropped || kept[len(kept)-1] != "end 2999" {
		t.Errorf("the last lines kept: %d, ending %q", len(kept), kept[len(kept)-1:])
	}
}

// freshAllOutput gives the budget of all processes its whole burst at now
// for the test, and its state back after it.
func freshAllOutput(t *testing.T, now time.Time) {
	allOutput.Lock()
	saved := allOutput.tokenBucket
	allOutput.tokens, allOutput.refilled = allOutput.burst, now
	allOutput.Unlock()
	t.Cleanup(func() {
		allOutput.Lock()
		allOutput.tokenBucket = saved
		allOutput.Unlock()
	})
}

// keptLines lists a ring's lines, oldest first.
func keptLines(r *lineRing) []string {
	var lines []string
	r.each(func(line []byte) { lines = append(lines, string(line)) })
	return lines
}

// The output of all processes together has its own budget: a process
// within its own is still dropped past it.
func TestAllOutputBudget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	freshAllOutput(t, t0)
	logged := 0
	for range 3 {
		b := newOutputBudget(t0, zap.NewNop())
		for range outputBurst {
			if b.take(t0, 0, []byte("x")) {
				logged++
			}
		}
	}
	if logged != allOutputBurst {
		t.Errorf("three processes logged %d lines of their bursts together, want %d", logged, allOutputBurst)
	}
}

// TestDroppedLinesChargeTheBudgetBoundedly: the last lines an ending
// process had dropped, logged at its end, are charged to every process's
// budget below nothing, but by at most a second's worth: an app whose
// processes keep crashing with floods of output kept every other app's
// lines out of the log for as long as its debt took to refill.
func TestDroppedLinesChargeTheBudgetBoundedly(t *testing.T) {
	t0 := time.Unix(1000, 0)
	freshAllOutput(t, t0)
	for range 100 { // 100 crashes, 64 lines kept of each
		b := newOutputBudget(t0, zap.NewNop())
		for i := range keptDropped {
			b.last[0].add([]byte{byte(i)})
			b.last[1].add([]byte{byte(i)})
		}
		b.reportRest()
	}
	allOutput.Lock()
	tokens := allOutput.tokens
	allOutput.Unlock()
	if tokens < -allOutputLinesPerSecond {
		t.Errorf("all processes' budget is %v lines in debt: more than a second's worth (%d)", tokens, allOutputLinesPerSecond)
	}
	// and another app logs again within two seconds
	other := newOutputBudget(t0, zap.NewNop())
	if !other.take(t0.Add(2*time.Second), 0, []byte("x")) {
		t.Error("another app's line was dropped two seconds after the crashes")
	}
}

// TestOutputFloodIsReadAtABoundedRate: a process that writes without
// pause (`yes`) is read at most readBytesPerSecond: past what is logged,
// its lines were read and dropped as fast as it wrote them, a CPU of
// Caddy's for as long as it ran. How much it could write is the bound
// (what Caddy read, plus a pipe's buffer), whatever the machine's speed.
func TestOutputFloodIsReadAtABoundedRate(t *testing.T) {
	for _, how := range []string{"logged", "run"} {
		t.Run(how, func(t *testing.T) {
			start := time.Now()
			var pid int
			var stop func()
			switch how {
			case "logged":
				p, err := Start(Command{Path: "/usr/bin/yes", Args: []string{"y"}}, zap.NewNop())
				if err != nil {
					t.Fatal(err)
				}
				pid, stop = p.Pid(), func() { p.Stop(syscall.SIGKILL, time.Second) }
			case "run":
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					_, _ = Run(ctx, Command{Path: "/bin/sh", Args: []string{"-c", "exec yes y"}}, zap.NewNop())
					close(done)
				}()
				stop = func() { cancel(); <-done }
				for deadline := time.Now().Add(10 * time.Second); pid == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
					for _, c := range descendants(os.Getpid()) {
						if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(c) + "/comm"); string(comm) == "yes\n" {
							pid = c
						}
					}
				}
				if pid == 0 {
					stop()
					t.Fatal("yes did not start")
				}
			}
			time.Sleep(2 * time.Second) // the flood runs (what is measured is how much it wrote meanwhile)
			io, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
			elapsed := time.Since(start)
			stop()
			var written int64
			for _, line := range strings.Split(string(io), "\n") {
				if v, ok := strings.CutPrefix(line, "wchar: "); ok {
					written, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			if written == 0 {
				t.Fatalf("no count of yes's writes in /proc: %q", io)
			}
			if bound := int64(readBytesPerSecond*(elapsed.Seconds()+1)) + 1<<20; written > bound {
				t.Errorf("yes wrote %d bytes in %v: more than Caddy reads at its bound (%d)", written, elapsed, bound)
			}
		})
	}
}

// countingReader counts the reads made of r.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(b []byte) (int, error) {
	c.reads++
	return c.r.Read(b)
}

// TestPacedReaderReadsInQuanta: a reader in debt waits for a quantum's
// worth before it reads again: it waited for a single byte, and read a
// few bytes at a time, a million reads a second (a CPU of Caddy's, the
// bound on bytes kept all the same).
func TestPacedReaderReadsInQuanta(t *testing.T) {
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	counted := &countingReader{r: zero}
	paced := &pacedReader{r: counted, bytes: newPacer(readBytesPerSecond, readBytesQuantum, time.Now(), nil)}
	buf := make([]byte, 32<<10)
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond; {
		if _, err := paced.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	// a second's worth at once (in reads of the buffer's size), then a
	// quantum at a time: about 256 + 1.5 × 512
	if counted.reads > 3000 {
		t.Errorf("%d reads in 1.5 s: the reader does not wait for a quantum when in debt", counted.reads)
	}
}

// TestLastLinesOfAFloodAreLogged: once a process that flooded its output
// has ended, what is left in its pipe is read at once: its last line (a
// traceback, an exit message) is logged, among the last lines dropped,
// where reading it at the flood's rate took longer than the output's
// drain and lost it.
func TestLastLinesOfAFloodAreLogged(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	p, err := Start(Command{Path: "/bin/sh", Args: []string{"-c", "timeout 1 yes ''; echo LAST-LINE"}, Env: []string{"PATH=/usr/bin:/bin"}}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the process did not end")
	}
	if logs.FilterMessage("LAST-LINE").Len() == 0 {
		t.Error("the last line of a process that flooded its output was not logged")
	}
}
