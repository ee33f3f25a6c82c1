package job

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule says when a job runs next after a moment.
type Schedule interface {
	Next(after time.Time) time.Time
}

// MinEvery is the shortest `every` interval.
const MinEvery = time.Second

// ParseSchedule reads a schedule: a standard five-field cron expression
// (minute hour day-of-month month day-of-week, with ranges, steps and
// lists, or a descriptor such as @daily), in the machine's time zone, or
// "every <duration>" (at least a second), counted from the previous run's
// due time (the first one interval after the job first starts on this
// machine: see lastrun.go).
func ParseSchedule(text string) (Schedule, error) {
	text = strings.TrimSpace(text)
	if rest, ok := strings.CutPrefix(text, "every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %q is not a duration like 90s, 15m or 6h", text, strings.TrimSpace(rest))
		}
		if d < MinEvery {
			return nil, fmt.Errorf("schedule %q: the interval must be at least %s", text, MinEvery)
		}
		return every(d), nil
	}
	if text == "" {
		return nil, fmt.Errorf("a job needs a schedule: a cron expression like \"0 3 * * *\" (03:00 every day) or `every 1h`")
	}
	if strings.HasPrefix(text, "TZ=") || strings.HasPrefix(text, "CRON_TZ=") {
		return nil, fmt.Errorf("schedule %q: schedules are in the machine's time zone; a TZ= prefix is not taken", text)
	}
	if rest, ok := strings.CutPrefix(text, "@every"); ok {
		// (the cron parser's own form takes any interval, 0s and -5s too)
		return nil, fmt.Errorf("schedule %q: write `every %s` (at least %s) instead of @every", text, strings.TrimSpace(rest), MinEvery)
	}
	s, err := cron.ParseStandard(text)
	if err != nil {
		return nil, fmt.Errorf("schedule %q is not a cron expression (five fields: minute hour day-of-month month day-of-week, like \"0 3 * * *\" for 03:00 every day) nor `every <duration>`: %v", text, err)
	}
	// a date no month has (30 February, 31 April): the parser takes it,
	// and its Next is the zero time, which would fire at once, forever
	if s.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("schedule %q never comes: no month has that day (like 30 February or 31 April)", text)
	}
	return cronSchedule{s}, nil
}

// cronSchedule is a cron expression read on the machine's clock, with
// cron's own rules for the days daylight saving time changes it, for a
// schedule at set hours: a time that comes twice (the hour repeated when
// the clocks go back) runs once, not twice, and a time that never comes
// (the hour skipped when they go forward) runs when the clock would have
// shown it, an hour late, instead of not at all that day. A schedule of
// every hour goes by the clock as it is.
type cronSchedule struct{ cron.Schedule }

// allHours are the hour bits of a schedule that runs every hour.
const allHours = 1<<24 - 1

// Next is the schedule's next time after after.
func (c cronSchedule) Next(after time.Time) time.Time {
	next := c.Schedule.Next(after)
	if spec, ok := c.Schedule.(*cron.SpecSchedule); next.IsZero() || !ok || spec.Hour&allHours == allHours {
		return next
	}
	loc := after.Location()
	// the repeated hour: what the clock shows again, it ran (or passed) already
	for i := 0; i < 24*60 && wallClock(next, loc) <= wallClock(after, loc); i++ {
		if next = c.Schedule.Next(next); next.IsZero() {
			return next
		}
	}
	// read in the offset after has, a time the day skipped comes first
	_, offset := after.Zone()
	if skipped := c.Schedule.Next(after.In(time.FixedZone("", offset))); !skipped.IsZero() && skipped.Before(next) {
		y, mo, d := skipped.Date()
		h, mi, _ := skipped.Clock()
		if local := time.Date(y, mo, d, h, mi, 0, 0, loc); local.Hour() != h || local.Minute() != mi { // no such time here
			return skipped.In(loc)
		}
	}
	return next
}

// wallClock is what a clock in loc shows at t, to the minute.
func wallClock(t time.Time, loc *time.Location) string { return t.In(loc).Format("2006-01-02 15:04") }

// every runs at a fixed interval.
type every time.Duration

// Next is one interval after after.
func (e every) Next(after time.Time) time.Time { return after.Add(time.Duration(e)) }
