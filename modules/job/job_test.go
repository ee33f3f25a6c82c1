package job

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// TestScheduleNext: cron expressions (ranges, steps, lists, descriptors)
// and intervals give the right next times, in the machine's time zone.
func TestScheduleNext(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04:05", s, time.Local)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		schedule string
		from     string
		want     []string // the next times, each after the one before
	}{
		{"0 3 * * *", "2026-12-01 10:00:00", []string{"2026-12-02 03:00:00", "2026-12-03 03:00:00"}},
		{"0 3 * * *", "2026-12-01 02:59:59", []string{"2026-12-01 03:00:00"}},
		// every quarter hour from 9 to 17 on weekdays: Friday evening → Monday
		{"*/15 9-17 * * 1-5", "2026-12-04 17:50:00", []string{"2026-12-07 09:00:00", "2026-12-07 09:15:00"}},
		{"0 0 1,15 * *", "2026-12-01 00:00:00", []string{"2026-12-15 00:00:00", "2027-01-01 00:00:00"}},
		{"30 2 * * 0", "2026-12-01 12:00:00", []string{"2026-12-06 02:30:00", "2026-12-13 02:30:00"}},
		{"5-10/5 * * * *", "2026-12-01 12:07:00", []string{"2026-12-01 12:10:00", "2026-12-01 13:05:00"}},
		{"@hourly", "2026-12-01 10:20:00", []string{"2026-12-01 11:00:00", "2026-12-01 12:00:00"}},
		{"@daily", "2026-12-01 10:20:00", []string{"2026-12-02 00:00:00"}},
		{"every 90s", "2026-12-01 10:00:00", []string{"2026-12-01 10:01:30", "2026-12-01 10:03:00"}},
		{"every 6h", "2026-12-01 23:00:00", []string{"2026-12-02 05:00:00"}},
	} {
		s, err := ParseSchedule(tc.schedule)
		if err != nil {
			t.Errorf("%q: %v", tc.schedule, err)
			continue
		}
		prev := at(tc.from)
		for _, w := range tc.want {
			got := s.Next(prev)
			if !got.Equal(at(w)) {
				t.Errorf("%q after %s: %s, want %s", tc.schedule, prev.Format(time.DateTime), got.Format(time.DateTime), w)
				break
			}
			prev = got
		}
	}
	for _, bad := range []string{"", "61 * * * *", "* * * *", "* * * * * *", "0 25 * * *", "every 500ms", "every soon", "every", "TZ=UTC 0 3 * * *", "CRON_TZ=UTC 0 3 * * *", "@fortnightly", "0 0 30 2 *", "0 0 31 4 *", "@every 0s", "@every 1ms", "@every -5s", "@every 1h"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		} else if !strings.Contains(err.Error(), "schedule") {
			t.Errorf("%q: the error does not say what is wrong: %v", bad, err)
		}
	}
}

// fakeClock is time that moves only when the test says.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	return ch
}

// waiting is the time the schedule waits for, once it waits.
func (c *fakeClock) waiting(t *testing.T) time.Time {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		if len(c.waiters) > 0 {
			at := c.waiters[len(c.waiters)-1].at
			c.mu.Unlock()
			return at
		}
		c.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the schedule never waited")
	return time.Time{}
}

// advance moves the clock to at and wakes who waited for it.
func (c *fakeClock) advance(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = at
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(at) {
			w.ch <- at
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// TestScheduleFiresAndSkipsOverlaps drives a job's schedule with a fake
// clock: it fires at each time of its schedule, runs the real command,
// and a run due while the previous one still goes is skipped and counted.
func TestScheduleFiresAndSkipsOverlaps(t *testing.T) {
	start, _ := time.ParseInLocation(time.DateTime, "2026-12-01 02:00:00", time.Local)
	clock := &fakeClock{now: start}
	release := t.TempDir() + "/release"
	spec, err := (&Config{Name: "nightly", Command: []string{"/bin/sh", "-c", "echo ran at $MARK; while [ ! -e " + release + " ]; do sleep 0.05; done"}, Schedule: "0 3 * * *"}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	spec.Env = append(spec.Env, "MARK=three")
	j := newJob(spec, zap.NewNop(), clock)
	defer j.Destruct()
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	clock.waiting(t)
	first := j.Next()
	if want := start.Add(time.Hour); !first.Equal(want) {
		t.Fatalf("first run at %s, want %s", first, want)
	}
	clock.advance(first)
	waitFor(t, "the run to start", func() bool { return j.Status().Running })

	// pretend the run takes a day: the next 03:00 comes while it runs
	var second time.Time
	waitFor(t, "the schedule to wait for the next day", func() bool {
		clock.waiting(t)
		second = j.Next()
		return second.Equal(first.Add(24 * time.Hour))
	})
	clock.advance(second)
	waitFor(t, "the overlapping run to be skipped", func() bool { return j.Status().Skipped == 1 })
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the run to end", func() bool { return !j.Status().Running })
	st := j.Status()
	if st.Runs != 1 || st.Failures != 0 || st.LastResult != OK || len(st.Recent) != 1 || st.LastSuccess == nil {
		t.Fatalf("status after one run: %+v", st)
	}
	if r := st.Recent[0]; r.Trigger != "schedule" || !strings.Contains(r.Output, "ran at three") || r.Exit != "exit status 0" {
		t.Errorf("the run: %+v", r)
	}
	// the day after, it runs again
	waitFor(t, "the schedule to wait for the day after", func() bool { return j.Next().Equal(second.Add(24 * time.Hour)) })
}

// never is a schedule that never comes (as robfig/cron says of 30 February).
type never struct{}

func (never) Next(time.Time) time.Time { return time.Time{} }

// A schedule that never comes never runs the job (its zero time would
// have fired at once, forever).
func TestScheduleThatNeverComes(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	spec, err := (&Config{Name: "never", Command: []string{"/bin/true"}, Schedule: "every 1h"}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	spec.schedule = never{}
	j := newJob(spec, zap.NewNop(), clock)
	defer j.Destruct()
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() { j.loop.Wait(); close(ended) }()
	select {
	case <-ended: // the schedule loop ends at once
	case <-time.After(5 * time.Second):
		t.Fatalf("the schedule loop still runs (%d runs)", j.Status().Runs)
	}
	if st := j.Status(); st.Runs != 0 || st.Running {
		t.Fatalf("a schedule that never comes ran the job: %+v", st)
	}
}

// TestRunResults: a failing command, a command past its timeout (killed
// with its child), a manual run while one runs, and the kept runs.
func TestRunResults(t *testing.T) {
	spec, err := (&Config{Name: "results", Command: []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, Schedule: "every 1h"}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	j := New(spec, zap.NewNop())
	defer j.Destruct()
	if _, err := j.RunNow(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failing run to end", func() bool { return j.Status().LastResult != "" })
	st := j.Status()
	if r := st.Recent[0]; r.Result != Failed || !strings.Contains(r.Exit, "exit status 3") || !strings.Contains(r.Output, "out") || !strings.Contains(r.Output, "err") || st.Failures != 1 || st.LastSuccess != nil {
		t.Errorf("failing run: %+v, status %+v", r, st)
	}

	pidFile := t.TempDir() + "/child"
	spec2, _ := (&Config{Name: "slow", Command: []string{"/bin/sh", "-c", "sleep 60 & echo $! > " + pidFile + "; wait"}, Schedule: "every 1h"}).Resolve(nil)
	spec2.Timeout = 3 * time.Second
	slow := New(spec2, zap.NewNop())
	defer slow.Destruct()
	if _, err := slow.RunNow(); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.RunNow(); err != ErrRunning {
		t.Errorf("a second run while one runs: %v, want ErrRunning", err)
	}
	waitFor(t, "the slow run to time out", func() bool { return slow.Status().LastResult != "" })
	st = slow.Status()
	if r := st.Recent[0]; r.Result != TimedOut || !strings.Contains(r.Exit, "timeout") || r.Duration > 10 {
		t.Errorf("timed-out run: %+v", r)
	}
	if st.Skipped != 0 {
		t.Errorf("a manual run refused while one runs is not a skipped scheduled run: %d", st.Skipped)
	}
	assertGone(t, pidFile)

	for range keptRuns + 3 {
		id, err := j.RunNow()
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a run to end", func() bool { st := j.Status(); return !st.Running && st.Recent[0].ID == id })
	}
	if st := j.Status(); len(st.Recent) != keptRuns || st.Runs != keptRuns+4 || st.Recent[0].ID != keptRuns+4 {
		t.Errorf("kept %d runs of %d, newest %d", len(st.Recent), st.Runs, st.Recent[0].ID)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// assertGone checks that the process whose pid is in file has ended.
func assertGone(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the run did not write its child's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the timed-out run's child to end", func() bool {
		return !supervisor.Alive(pid)
	})
}

// TestRunAfterClose: a job a reload has taken out of the running config
// answers ErrClosed (the admin API's 409: ask again, the new config's job
// answers), not an error of its own kind.
func TestRunAfterClose(t *testing.T) {
	spec, err := (&Config{Name: "closed", Command: []string{"/bin/true"}, Schedule: "every 1h"}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	j := New(spec, zap.NewNop())
	j.Destruct()
	if _, err := j.RunNow(); !errors.Is(err, ErrClosed) {
		t.Errorf("running a closed job: %v, want ErrClosed", err)
	}
}

// TestFailedRunLogsItsOutputAsText: the log of a failed run quotes the end
// of its output with control characters as '?': Caddy's console log (the
// terminal of whoever runs caddy run) writes a C1 control or a
// bidirectional one as it is, where JSON escapes only C0.
func TestFailedRunLogsItsOutputAsText(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	spec, err := (&Config{Name: "noisy", Command: []string{"/bin/sh", "-c", `printf 'a\302\233' ; printf '2Jb\342\200\256c\033]52;c;QQ==\007\n'; exit 1`}, Schedule: "every 1h"}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	j := New(spec, zap.New(core))
	defer j.Destruct()
	if _, err := j.RunNow(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failing run to end", func() bool { return j.Status().LastResult != "" })
	failed := logs.FilterMessage("job failed").All()
	if len(failed) != 1 {
		t.Fatalf("logged: %v", logs.All())
	}
	tail, _ := failed[0].ContextMap()["output_tail"].(string)
	if tail != "a?2Jb?c?]52;c;QQ==?\n" {
		t.Errorf("the failed run's output is logged as %q, want its control characters as '?'", tail)
	}
}

// TestHoldAppStopsItsJobs: while a restore holds an app (HoldApp), its
// jobs start no run (a manual one is refused with ErrHeld, a scheduled
// one skipped); another app's jobs run; once released, they run again.
func TestHoldAppStopsItsJobs(t *testing.T) {
	spec, err := (&Config{Name: "held", Command: []string{"/bin/true"}, Schedule: "every 1h"}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	spec.App = "blog"
	j := New(spec, zap.NewNop())
	defer j.Destruct()
	other, _ := (&Config{Name: "other", Command: []string{"/bin/true"}, Schedule: "every 1h"}).Resolve(nil)
	other.App = "shop"
	o := New(other, zap.NewNop())
	defer o.Destruct()

	release, running := HoldApp("blog")
	if len(running) != 0 {
		t.Errorf("runs of blog's jobs under way: %v, want none", running)
	}
	if _, err := j.RunNow(); !errors.Is(err, ErrHeld) {
		t.Errorf("a manual run of a held app's job: %v, want ErrHeld", err)
	}
	if _, err := j.start("schedule", spec.Args, nil); !errors.Is(err, ErrHeld) || j.Status().Skipped != 1 {
		t.Errorf("a scheduled run of a held app's job: %v, skipped %d; want ErrHeld, counted", err, j.Status().Skipped)
	}
	if _, err := o.RunNow(); err != nil {
		t.Errorf("another app's job: %v", err)
	}
	release()
	release() // (once)
	id, err := j.RunNow()
	if err != nil {
		t.Fatalf("once released: %v", err)
	}
	waitFor(t, "the run to end", func() bool { st := j.Status(); return !st.Running && st.Recent[0].ID == id })

	// a run under way is named by the next hold, whether or not its Job is
	// still in the running config (a reload lets a dropped job's run end)
	slowSpec, _ := (&Config{Name: "import", Command: []string{"/bin/sleep", "1"}, Schedule: "every 1h"}).Resolve(nil)
	slowSpec.App = "blog"
	slow := New(slowSpec, zap.NewNop())
	if _, err := slow.RunNow(); err != nil {
		t.Fatal(err)
	}
	slow.Destruct() // (as a reload that dropped it)
	release, running = HoldApp("blog")
	if len(running) != 1 || running[0] != "job import" {
		t.Errorf("runs of blog's jobs under way: %v, want [job import]", running)
	}
	release()
	waitFor(t, "the dropped job's run to end", func() bool {
		release, running := HoldApp("blog")
		release()
		return len(running) == 0
	})
}

// TestRunOutlivesItsJob: a reload that drops a job while it runs, and one
// that brings it back before the run ends, give the new Job the running
// run's history: a second run is refused while the first goes on (it
// started beside it, in a history of its own, before), and the first
// run's result is the new Job's to show.
func TestRunOutlivesItsJob(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	spec, err := (&Config{Name: "import", Command: []string{"/bin/sh", "-c", "while [ ! -e " + release + " ]; do sleep 0.05; done; echo imported"}, Schedule: "every 1h"}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	first := New(spec, zap.NewNop())
	id, err := first.RunNow()
	if err != nil {
		t.Fatal(err)
	}
	first.Destruct() // a reload drops the job; its run goes on
	again, _ := (&Config{Name: "import", Command: []string{"/bin/sh", "-c", "while [ ! -e " + release + " ]; do sleep 0.05; done; echo imported"}, Schedule: "every 1h"}).Resolve(nil)
	second := New(again, zap.NewNop()) // and the next one brings it back
	defer second.Destruct()
	if _, err := second.RunNow(); !errors.Is(err, ErrRunning) {
		t.Errorf("a run of the job brought back while its first run goes on: %v, want ErrRunning", err)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first run's result", func() bool {
		r, ok := second.Run(id)
		return ok && r.Result == OK
	})
}
