package job

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// jump sets the wall clock to at and wakes every waiter, as a timer of
// Go's monotonic clock does when its time comes whatever the wall clock
// says (a clock set back or forward, a machine that slept).
func (c *fakeClock) jump(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = at
	for _, w := range c.waiters {
		w.ch <- at
	}
	c.waiters = nil
}

func localTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.ParseInLocation(time.DateTime, s, time.Local)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// startJob starts a job of schedule at now, keeping its last due time in
// dir, and returns it once its schedule waits.
func startJob(t *testing.T, schedule, dir string, now time.Time) (*Job, *fakeClock) {
	t.Helper()
	return startNamedJob(t, "nightly", schedule, dir, now)
}

// startNamedJob is startJob for a job of another name.
func startNamedJob(t *testing.T, name, schedule, dir string, now time.Time) (*Job, *fakeClock) {
	t.Helper()
	spec, err := (&Config{Name: name, Command: []string{"/bin/true"}, Schedule: schedule}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: now}
	j := newJob(spec, zap.NewNop(), clock)
	j.lastDueDir = dir
	t.Cleanup(func() { _ = j.Destruct() })
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	clock.waiting(t)
	return j, clock
}

// TestScheduleCountsFromTheLastDueTime: neither a restart of Caddy nor a
// reload that makes the job anew starts its count again (a machine off
// every night would never reach an `every 24h` backup, nor a 03:00 job),
// and a time due while Caddy was not running is made up once, shortly
// after the start.
func TestScheduleCountsFromTheLastDueTime(t *testing.T) {
	for _, c := range []struct {
		name, schedule string
		kept           string // the last due time on disk ("": none)
		now            string
		want           string // the next run
	}{
		{"a new job counts from now", "every 24h", "", "2026-12-01 18:00:00", "2026-12-02 18:00:00"},
		{"a restart keeps the count", "every 24h", "2026-12-01 18:00:00", "2026-12-02 09:00:00", "2026-12-02 18:00:00"},
		{"missed while off: made up", "every 24h", "2026-12-01 18:00:00", "2026-12-03 09:00:00", "2026-12-03 09:00:30"},
		{"cron, before its time", "0 3 * * *", "2026-12-01 03:00:00", "2026-12-02 02:00:00", "2026-12-02 03:00:00"},
		{"cron, missed while off: made up", "0 3 * * *", "2026-12-01 03:00:00", "2026-12-02 09:00:00", "2026-12-02 09:00:30"},
		{"cron, missed for days: made up once", "0 3 * * *", "2026-11-01 03:00:00", "2026-12-02 09:00:00", "2026-12-02 09:00:30"},
		// kept while the clock was ahead: not postponed by the jump
		{"kept in the future", "every 24h", "2027-06-01 18:00:00", "2026-12-01 18:00:00", "2026-12-02 18:00:00"},
		{"cron, kept in the future", "0 3 * * *", "2027-06-01 03:00:00", "2026-12-01 18:00:00", "2026-12-02 03:00:00"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			now := localTime(t, c.now)
			probe := &Spec{Kind: KindJob, Name: "nightly"}
			if c.kept != "" {
				if err := probe.saveLastDue(dir, localTime(t, c.kept)); err != nil {
					t.Fatal(err)
				}
			}
			j, clock := startJob(t, c.schedule, dir, now)
			want := localTime(t, c.want)
			if !j.Next().Equal(want) {
				t.Fatalf("next run %s, want %s", j.Next(), want)
			}
			if c.kept == "" {
				if kept, ok, err := probe.loadLastDue(dir); !ok || !kept.Equal(now) {
					t.Errorf("a new job's count not kept from now: %s %v %v", kept, ok, err)
				}
			}
			// it runs then, and the time it was due is kept
			clock.advance(want)
			waitFor(t, "the run", func() bool { return j.Status().Runs == 1 })
			if kept, ok, err := probe.loadLastDue(dir); !ok || !kept.Equal(want) {
				t.Errorf("kept %s (%v, %v) after the run, want %s", kept, ok, err, want)
			}
		})
	}
}

// TestScheduleAfterTheClockMoves: a machine that slept through its job's
// time (or whose clock was set forward past it) makes the run up once; a
// clock set back does not postpone the job by the jump.
func TestScheduleAfterTheClockMoves(t *testing.T) {
	for _, c := range []struct {
		name, schedule, start, jump string
		runs                        int64
		next                        string
	}{
		{"slept past an every", "every 1h", "2026-12-01 10:00:00", "2026-12-01 15:20:00", 1, "2026-12-01 16:20:00"},
		{"slept past a cron", "0 * * * *", "2026-12-01 10:30:00", "2026-12-01 15:20:00", 1, "2026-12-01 16:00:00"},
		{"set back under a cron", "0 * * * *", "2026-12-01 10:30:00", "2026-12-01 02:10:00", 0, "2026-12-01 03:00:00"},
		{"set back under an every", "every 1h", "2026-12-01 10:30:00", "2026-12-01 02:10:00", 0, "2026-12-01 03:10:00"},
	} {
		t.Run(c.name, func(t *testing.T) {
			j, clock := startJob(t, c.schedule, t.TempDir(), localTime(t, c.start))
			// Go's timers do not see the jump: the schedule reads the wall
			// clock at least once a minute
			if at := clock.waiting(t); at.After(localTime(t, c.start).Add(time.Minute)) {
				t.Fatalf("the schedule sleeps until %s without reading the clock", at)
			}
			clock.jump(localTime(t, c.jump))
			next := localTime(t, c.next)
			waitFor(t, "the schedule to wait for "+c.next, func() bool { return j.Next().Equal(next) })
			waitFor(t, "the runs to end", func() bool { return !j.Status().Running })
			if st := j.Status(); st.Runs != c.runs {
				t.Errorf("%d runs, want %d", st.Runs, c.runs)
			}
			// a run made up is kept as made then: a restart does not make
			// it up again
			want := localTime(t, c.start)
			if c.runs > 0 {
				want = localTime(t, c.jump)
			}
			if kept, _, _ := j.spec.loadLastDue(j.lastDueDir); !kept.Equal(want) {
				t.Errorf("kept %s, want %s", kept, want)
			}
		})
	}
}

// TestLastDueUnreadable: a kept time that cannot be read (garbage, a
// directory) is said, and the schedule counts from now, never at once.
func TestLastDueUnreadable(t *testing.T) {
	for name, write := range map[string]func(path string) error{
		"garbage":     func(path string) error { return os.WriteFile(path, []byte("yesterday\n"), 0o600) },
		"huge":        func(path string) error { return os.WriteFile(path, []byte(strings.Repeat("9", 1<<20)), 0o600) },
		"a directory": func(path string) error { return os.Mkdir(path, 0o700) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			probe := &Spec{Kind: KindJob, Name: "nightly"}
			if err := write(probe.lastDueFile(dir)); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := probe.loadLastDue(dir); ok || err == nil || !strings.Contains(err.Error(), "counts from now") {
				t.Fatalf("loaded: %v %v", ok, err)
			}
			now := localTime(t, "2026-12-01 18:00:00")
			j, _ := startJob(t, "every 24h", dir, now)
			if want := now.Add(24 * time.Hour); !j.Next().Equal(want) {
				t.Errorf("next run %s, want %s", j.Next(), want)
			}
		})
	}
}

// TestScheduleAcrossDaylightSaving: a schedule at set hours runs once when
// the clocks go back (02:30 comes twice), and runs an hour late rather than
// not at all the day they go forward (02:30 never comes); an hourly one
// goes by the clock as it is.
func TestScheduleAcrossDaylightSaving(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string, zone string) time.Time {
		v, err := time.Parse("2006-01-02 15:04 -0700", s+" "+zone)
		if err != nil {
			t.Fatal(err)
		}
		return v.In(berlin)
	}
	for _, c := range []struct {
		schedule string
		from     time.Time
		want     []time.Time
	}{
		// 25 October 2026: 03:00 CEST becomes 02:00 CET
		{"30 2 * * *", at("2026-10-25 00:00", "+0200"), []time.Time{at("2026-10-25 02:30", "+0200"), at("2026-10-26 02:30", "+0100")}},
		{"0 2 * * *", at("2026-10-24 12:00", "+0200"), []time.Time{at("2026-10-25 02:00", "+0200"), at("2026-10-26 02:00", "+0100")}},
		{"0,30 2 * * *", at("2026-10-25 01:00", "+0200"), []time.Time{at("2026-10-25 02:00", "+0200"), at("2026-10-25 02:30", "+0200"), at("2026-10-26 02:00", "+0100")}},
		// a run made up late in the repeated hour (02:35 CEST) is not run again at 02:30 CET
		{"30 2 * * *", at("2026-10-25 02:35", "+0200"), []time.Time{at("2026-10-26 02:30", "+0100")}},
		// 29 March 2026: 02:00 CET becomes 03:00 CEST
		{"30 2 * * *", at("2026-03-28 12:00", "+0100"), []time.Time{at("2026-03-29 03:30", "+0200"), at("2026-03-30 02:30", "+0200")}},
		{"0 3 * * *", at("2026-03-28 12:00", "+0100"), []time.Time{at("2026-03-29 03:00", "+0200"), at("2026-03-30 03:00", "+0200")}},
		// every hour: the repeated hour runs again, the skipped one not
		{"0 * * * *", at("2026-10-25 01:30", "+0200"), []time.Time{at("2026-10-25 02:00", "+0200"), at("2026-10-25 02:00", "+0100"), at("2026-10-25 03:00", "+0100")}},
		{"0 * * * *", at("2026-03-29 01:30", "+0100"), []time.Time{at("2026-03-29 03:00", "+0200")}},
	} {
		s, err := ParseSchedule(c.schedule)
		if err != nil {
			t.Fatal(err)
		}
		prev := c.from
		for _, want := range c.want {
			got := s.Next(prev)
			if !got.Equal(want) {
				t.Errorf("%q after %s: %s, want %s", c.schedule, prev, got, want)
				break
			}
			prev = got
		}
	}
}

// A restart of Caddy in the repeated hour does not run a job at set hours
// a second time: its last due time, kept with an offset, is read in the
// machine's zone.
func TestRestartInTheRepeatedHour(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ran := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC).In(berlin) // 02:30 CEST
	if err := (&Spec{Kind: KindJob, Name: "nightly"}).saveLastDue(dir, ran); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 10, 25, 1, 10, 0, 0, time.UTC).In(berlin) // 02:10 CET, after it
	j, _ := startJob(t, "30 2 * * *", dir, now)
	if want := time.Date(2026, 10, 26, 1, 30, 0, 0, time.UTC); !j.Next().Equal(want) {
		t.Errorf("next run %s, want %s (02:30 CET the day after)", j.Next().In(berlin), want.In(berlin))
	}
}

// Running through the night the clocks go back, a job at set hours runs
// once: the repeated hour is no clock set back.
func TestRunningThroughTheRepeatedHour(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC).In(berlin) // 02:00 CEST
	j, clock := startJob(t, "30 2 * * *", t.TempDir(), start)
	first := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC) // 02:30 CEST
	if !j.Next().Equal(first) {
		t.Fatalf("next run %s, want %s", j.Next().In(berlin), first.In(berlin))
	}
	clock.advance(first.In(berlin))
	waitFor(t, "the run", func() bool { return j.Status().Runs == 1 })
	second := time.Date(2026, 10, 26, 1, 30, 0, 0, time.UTC) // 02:30 CET the day after
	waitFor(t, "the next run the day after", func() bool { return j.Next().Equal(second) })
	// the clocks go back: 02:10 CET, 40 minutes later; the timer wakes
	clock.jump(time.Date(2026, 10, 25, 1, 10, 0, 0, time.UTC).In(berlin))
	clock.waiting(t) // the schedule looked at the clock and waits again
	if !j.Next().Equal(second) || j.Status().Runs != 1 {
		t.Errorf("in the repeated hour: next run %s, %d runs; want %s, 1", j.Next().In(berlin), j.Status().Runs, second.In(berlin))
	}
}

// Across a reload the old config's Job and the new one's are alive at
// once; a time both reach runs once.
func TestReloadRunsATimeOnce(t *testing.T) {
	dir := t.TempDir()
	start := localTime(t, "2026-12-01 02:00:00")
	old, oldClock := startJob(t, "0 3 * * *", dir, start)
	reloaded, newClock := startJob(t, "0 3 * * *", dir, start) // same name: the history is shared
	due := localTime(t, "2026-12-01 03:00:00")
	if !old.Next().Equal(due) || !reloaded.Next().Equal(due) {
		t.Fatalf("next runs %s and %s, want %s", old.Next(), reloaded.Next(), due)
	}
	oldClock.advance(due)
	waitFor(t, "the old Job's run", func() bool { return old.Status().Runs == 1 && !old.Status().Running })
	newClock.advance(due)
	waitFor(t, "the new Job to wait for the next day", func() bool { return reloaded.Next().Equal(due.Add(24 * time.Hour)) })
	if runs := reloaded.Status().Runs; runs != 1 {
		t.Errorf("%d runs of the time both Jobs reached, want 1", runs)
	}
}

// A schedule of a few seconds or minutes keeps no due time on disk (a home
// board's SD card is written every few seconds otherwise); a longer one does.
func TestShortPeriodsNotWritten(t *testing.T) {
	i := 0
	for schedule, kept := range map[string]bool{"every 30s": false, "*/5 * * * *": false, "every 10m": true, "0 * * * *": true} {
		dir := t.TempDir()
		i++
		name := fmt.Sprintf("short%d", i)
		j, clock := startNamedJob(t, name, schedule, dir, localTime(t, "2026-12-01 02:00:00"))
		runs := j.Status().Runs
		clock.advance(j.Next()) // and after a run
		waitFor(t, "a run of "+schedule, func() bool { return j.Status().Runs > runs })
		if _, ok, _ := (&Spec{Kind: KindJob, Name: name}).loadLastDue(dir); ok != kept {
			t.Errorf("%s: due time kept %v, want %v", schedule, ok, kept)
		}
	}
}

// The real clock is read without Go's monotonic reading: a clock set back
// must compare as earlier, which the monotonic reading never does.
func TestRealClockIsTheWallClock(t *testing.T) {
	if now := (realClock{}).Now(); strings.Contains(now.String(), "m=") {
		t.Errorf("the real clock carries a monotonic reading: %s", now)
	}
}

// A time claimed while the clock was ahead does not stop the runs to come
// once it is set right and the config reloaded.
func TestClaimAfterTheClockWasAhead(t *testing.T) {
	ahead := localTime(t, "2026-12-05 02:00:00")
	first, clock := startNamedJob(t, "ahead", "0 3 * * *", t.TempDir(), ahead)
	clock.advance(localTime(t, "2026-12-05 03:00:00"))
	waitFor(t, "the run while ahead", func() bool { return first.Status().Runs == 1 && !first.Status().Running })
	right := localTime(t, "2026-12-01 02:00:00")
	reloaded, clock2 := startNamedJob(t, "ahead", "0 3 * * *", t.TempDir(), right) // same name: the history is shared
	due := localTime(t, "2026-12-01 03:00:00")
	if !reloaded.Next().Equal(due) {
		t.Fatalf("next run %s, want %s", reloaded.Next(), due)
	}
	clock2.advance(due)
	waitFor(t, "the run after the clock was set right", func() bool { return reloaded.Status().Runs == 2 })
}
