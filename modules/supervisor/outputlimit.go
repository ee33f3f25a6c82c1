package supervisor

import (
	"io"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/termsafe"
)

// A process's output reaches Caddy's log at most outputLinesPerSecond
// lines a second, after a burst of outputBurst, and the output of all
// processes together at most allOutputLinesPerSecond after allOutputBurst;
// the lines past that are read and dropped, and their count logged. An
// app that writes without pause (a loop that prints, a warning a client
// can cause with every request) would otherwise spend Caddy's CPU on log
// lines and fill its log, and under systemd exhaust journald's rate limit
// for the whole unit (by default 10,000 messages in 30 s, 333 a second),
// which then drops Caddy's own messages with the app's.
const (
	outputLinesPerSecond    = 100
	outputBurst             = 1000
	allOutputLinesPerSecond = 250
	allOutputBurst          = 2500
)

// A process's output (its two streams together) is read at most
// readBytesPerSecond bytes and readLinesPerSecond lines a second (after a
// second's worth at once), until the process has ended: past what is
// logged, lines are read and dropped, and a process that writes without
// pause (`yes`, a loop that prints) would otherwise keep one of Caddy's
// CPUs reading them for as long as it ran. Past these its writes wait, as
// they would on a full disk or terminal. Once it has ended, what is left
// in its pipes is read at once (its last lines, a traceback, and its end
// reported without delay).
const (
	readBytesPerSecond = 8 << 20
	readLinesPerSecond = 20000
	// what a reader in debt waits for, at least: a few milliseconds' worth,
	// so that it wakes a few hundred times a second, not for every byte
	readBytesQuantum = 16 << 10
	readLinesQuantum = 100
)

// pacer lets readers through at most rate units a second, after a burst
// of one second's worth, until off is closed.
type pacer struct {
	mu      sync.Mutex
	bucket  tokenBucket
	quantum float64
	off     <-chan struct{} // nil: never
}

func newPacer(rate, quantum float64, now time.Time, off <-chan struct{}) *pacer {
	return &pacer{bucket: tokenBucket{rate: rate, burst: rate, tokens: rate, refilled: now}, quantum: quantum, off: off}
}

// room returns how many units may be spent now, first waiting, while
// fewer than want (at most quantum) are left, until they are back (or off
// is closed: then as many as wanted). A reader in debt so waits for a
// quantum's worth: waiting only for what the time since its last read
// brought, it read a few bytes at a time, a million times a second.
func (p *pacer) room(want float64) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bucket.refill(time.Now())
	want = min(want, p.quantum)
	if p.bucket.tokens < want {
		wait := time.Duration((want - p.bucket.tokens) / p.bucket.rate * float64(time.Second))
		select {
		case <-time.After(wait):
		case <-p.off:
		}
		p.bucket.refill(time.Now())
	}
	select {
	case <-p.off:
		return math.Inf(1)
	default:
	}
	return p.bucket.tokens
}

// spend takes n units.
func (p *pacer) spend(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bucket.tokens -= float64(n)
}

// pacedReader reads r at most its pacer's rate of bytes a second.
type pacedReader struct {
	r     io.Reader
	bytes *pacer
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if room := p.bytes.room(float64(len(b))); room < float64(len(b)) {
		b = b[:max(1, int(room))]
	}
	n, err := p.r.Read(b)
	p.bytes.spend(n)
	return n, err
}

// When lines are dropped, the last keptDropped of each stream (each cut
// to keptDroppedBytes) are kept and logged when the process's output
// ends: what a process wrote last before it died (a traceback) is what
// tells why.
const (
	keptDropped      = 32
	keptDroppedBytes = 1 << 10
)

// heldReportEvery is the least time between two lines that report output
// held back.
const heldReportEvery = time.Second

// tokenBucket lets through rate lines a second after a burst.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	refilled    time.Time // when tokens was last brought up to date
}

// refill brings the tokens up to date at now.
func (b *tokenBucket) refill(now time.Time) {
	if elapsed := now.Sub(b.refilled); elapsed > 0 {
		b.tokens = min(b.burst, b.tokens+elapsed.Seconds()*b.rate)
		b.refilled = now
	}
}

// take spends a token at now, if there is one.
func (b *tokenBucket) take(now time.Time) bool {
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// allOutput is the budget of every process's output together.
var allOutput = struct {
	sync.Mutex
	tokenBucket
}{tokenBucket: tokenBucket{rate: allOutputLinesPerSecond, burst: allOutputBurst, tokens: allOutputBurst, refilled: time.Now()}}

// outputBudget is a process's allowance of log lines, shared by its
// stdout and stderr.
type outputBudget struct {
	mu       sync.Mutex
	own      tokenBucket
	held     int64       // lines dropped since the last report
	reported time.Time   // when held was last reported
	logger   *zap.Logger // the process's (its pid), for the reports
	// last are the last lines dropped of each stream (stdout, stderr)
	last [2]lineRing
}

// lineRing keeps the last keptDropped lines added, in buffers it reuses.
type lineRing struct {
	lines [keptDropped][]byte
	next  int // where the next line goes
	n     int // how many it holds
}

func (r *lineRing) add(line []byte) {
	r.lines[r.next] = append(r.lines[r.next][:0], line[:min(len(line), keptDroppedBytes)]...)
	r.next = (r.next + 1) % keptDropped
	r.n = min(r.n+1, keptDropped)
}

// each calls f with the lines held, oldest first.
func (r *lineRing) each(f func([]byte)) {
	for i := range r.n {
		f(r.lines[(r.next-r.n+i+keptDropped)%keptDropped])
	}
}

// streams are the names of a process's output streams, by their index in
// outputBudget.last.
var streams = [2]string{"stdout", "stderr"}

func newOutputBudget(now time.Time, logger *zap.Logger) *outputBudget {
	return &outputBudget{own: tokenBucket{rate: outputLinesPerSecond, burst: outputBurst, tokens: outputBurst, refilled: now}, logger: logger}
}

// take reports whether line, of stream (0 stdout, 1 stderr), may be
// logged at now (else it is dropped, and kept among the last). When one
// may, the count of lines dropped since the last report is logged first,
// if there are some and the last report is heldReportEvery old.
func (b *outputBudget) take(now time.Time, stream int, line []byte) bool {
	ok, report := b.spend(now, stream, line)
	if report > 0 {
		b.reportHeld(report)
	}
	return ok
}

// spend takes a token, if there is one, and says what to report.
func (b *outputBudget) spend(now time.Time, stream int, line []byte) (ok bool, report int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ok = b.own.take(now)
	if ok {
		allOutput.Lock()
		ok = allOutput.take(now)
		allOutput.Unlock()
		if !ok {
			b.own.tokens++ // not spent: the line is not logged
		}
	}
	if !ok {
		b.held++
		b.last[stream].add(line)
		return false, 0
	}
	b.last[stream].n = 0 // a line logged after them: they were not the last
	if b.held > 0 && now.Sub(b.reported) >= heldReportEvery {
		report, b.held, b.reported = b.held, 0, now
	}
	return true, report
}

// reportRest logs, at the end of the process's output, the count of
// lines dropped and not yet reported, then the last lines dropped.
func (b *outputBudget) reportRest() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held > 0 {
		b.reportHeld(b.held)
		b.held = 0
	}
	// charged to all processes' budget, even below nothing: processes
	// that keep crashing would otherwise log past it; but by at most a
	// second's worth, so that one app that keeps crashing does not keep
	// every other app's output out of the log for long
	kept := 0
	for i := range b.last {
		kept += b.last[i].n
	}
	allOutput.Lock()
	allOutput.tokens = max(allOutput.tokens-float64(kept), -allOutputLinesPerSecond)
	allOutput.Unlock()
	for i := range b.last {
		b.last[i].each(func(line []byte) {
			b.logger.Info(termsafe.Line(string(line)), zap.String("stream", streams[i]), zap.Bool("dropped_then_kept", true))
		})
		b.last[i] = lineRing{}
	}
}

// reportHeld logs that n lines of output were dropped.
func (b *outputBudget) reportHeld(n int64) {
	b.logger.Warn("the process wrote faster than its output reaches the log: lines were dropped (each process may log 100 lines a second after a burst of 1000, all of them together 250 a second after 2500)",
		zap.Int64("lines_dropped", n))
}
