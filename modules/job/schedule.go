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
	s, err := cron.ParseStandard(text)
	if err != nil {
		return nil, fmt.Errorf("schedule %q is not a cron expression (five fields: minute hour day-of-month month day-of-week, like \"0 3 * * *\" for 03:00 every day) nor `every <duration>`: %v", text, err)
	}
	// a date no month has (30 February, 31 April): the parser takes it,
	// and its Next is the zero time, which would fire at once, forever
	if s.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("schedule %q never comes: no month has that day (like 30 February or 31 April)", text)
	}
	return s, nil
}

// every runs at a fixed interval.
type every time.Duration

// Next is one interval after after.
func (e every) Next(after time.Time) time.Time { return after.Add(time.Duration(e)) }
