package supervisor

import (
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/termsafe"
)

// A process's output reaches Caddy's log at most outputLinesPerSecond
// lines a second, after a burst of outputBurst; the lines past that are
// read and dropped, and their count logged. An app that writes without
// pause (a loop that prints, a warning a client can cause with every
// request) would otherwise spend Caddy's CPU on log lines and fill its
// log, and under systemd exhaust journald's rate limit for the whole
// unit (by default 10,000 messages in 30 s), which then drops Caddy's own
// messages with the app's.
const (
	outputLinesPerSecond = 100
	outputBurst          = 1000
)

// When lines are dropped, the last keptDropped of them (each cut to
// keptDroppedBytes) are kept and logged when the process's output ends:
// what a process wrote last before it died (a traceback) is what tells why.
const (
	keptDropped      = 32
	keptDroppedBytes = 1 << 10
)

// heldReportEvery is the least time between two lines that report output
// held back.
const heldReportEvery = time.Second

// outputBudget is a process's allowance of log lines, shared by its
// stdout and stderr: a token bucket.
type outputBudget struct {
	mu       sync.Mutex
	tokens   float64
	refilled time.Time   // when tokens was last brought up to date
	held     int64       // lines dropped since the last report
	reported time.Time   // when held was last reported
	logger   *zap.Logger // the process's (its pid), for the reports
	// last are the last lines dropped (at most keptDropped), oldest first
	last []droppedLine
}

// droppedLine is a line of output dropped, and its stream.
type droppedLine struct {
	stream string
	text   string
}

func newOutputBudget(now time.Time, logger *zap.Logger) *outputBudget {
	return &outputBudget{tokens: outputBurst, refilled: now, logger: logger}
}

// take reports whether line, of stream, may be logged at now (else it
// is dropped, and kept among the last). When one may, the count of lines
// dropped since the last report is logged first, if there are some and
// the last report is heldReportEvery old.
func (b *outputBudget) take(now time.Time, stream string, line []byte) bool {
	ok, report := b.spend(now, stream, line)
	if report > 0 {
		b.reportHeld(report)
	}
	return ok
}

// spend takes a token, if there is one, and says what to report.
func (b *outputBudget) spend(now time.Time, stream string, line []byte) (ok bool, report int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if elapsed := now.Sub(b.refilled); elapsed > 0 {
		b.tokens = min(outputBurst, b.tokens+elapsed.Seconds()*outputLinesPerSecond)
		b.refilled = now
	}
	if b.tokens < 1 {
		b.held++
		if len(b.last) == keptDropped {
			b.last = append(b.last[:0], b.last[1:]...)
		}
		b.last = append(b.last, droppedLine{stream, string(line[:min(len(line), keptDroppedBytes)])})
		return false, 0
	}
	b.tokens--
	b.last = b.last[:0] // a line logged after them: they were not the last
	if b.held > 0 && now.Sub(b.reported) >= heldReportEvery {
		report, b.held, b.reported = b.held, 0, now
	}
	return true, report
}

// reportRest logs, at the end of the process's output, the count of
// lines dropped and not yet reported, then the last lines dropped.
func (b *outputBudget) reportRest() {
	b.mu.Lock()
	report, last := b.held, b.last
	b.held, b.last = 0, nil
	b.mu.Unlock()
	if report > 0 {
		b.reportHeld(report)
	}
	for _, l := range last {
		b.logger.Info(termsafe.Line(l.text), zap.String("stream", l.stream), zap.Bool("dropped_then_kept", true))
	}
}

// reportHeld logs that n lines of output were dropped.
func (b *outputBudget) reportHeld(n int64) {
	b.logger.Warn("the process wrote faster than its output reaches the log: lines were dropped (each process may log 100 lines a second, after a burst of 1000)",
		zap.Int64("lines_dropped", n))
}
