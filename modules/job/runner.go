package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/internal/termsafe"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// keptRuns is how many runs of a job are kept; outputTail how much of
// each run's output.
const (
	keptRuns   = 20
	outputTail = 4 << 10
)

// Result is how a run ended.
type Result string

// The results of a run.
const (
	Running  Result = "running"
	OK       Result = "ok"        // exit status 0
	Failed   Result = "failed"    // another exit status, or it could not start
	TimedOut Result = "timed_out" // killed (with its process group) at timeout
	Stopped  Result = "stopped"   // killed because Caddy stopped
)

// Run is one run of a job.
type Run struct {
	ID        int64     `json:"id"`
	Trigger   string    `json:"trigger"` // "schedule", "manual" or (a backup's) TriggerRestore
	StartedAt time.Time `json:"started_at"`
	// Duration is how long it ran, in seconds (so far, while it runs).
	Duration float64 `json:"duration_seconds"`
	Result   Result  `json:"result"`
	// Exit describes the end: "exit status 0", "exit status 2", a signal,
	// or why it could not start.
	Exit string `json:"exit,omitempty"`
	// Output is the tail of what it wrote to stdout and stderr.
	Output string `json:"output_tail"`
}

// history is what is kept of one job name across reloads (a job whose
// block changed keeps its runs): its runs, whether one is running, and
// totals. It lives in the histories pool while a config has the job.
type history struct {
	mu       sync.Mutex
	runs     []Run // oldest first, at most keptRuns
	running  bool
	nextID   int64
	total    int64
	failures int64
	skipped  int64
	// lastDue is the latest due time a run was started for by any Job of
	// this name: of two Jobs alive across a reload, only one runs a time
	lastDue     time.Time
	lastSuccess time.Time
}

// Destruct lets go of the history (caddy.Destructor).
func (*history) Destruct() error { return nil }

// histories holds the history of every job name some loaded config has.
var histories = caddy.NewUsagePool()

// ErrRunning is the answer to running a job that is running.
var ErrRunning = errors.New("the job is running; a job runs once at a time")

// ErrClosed is the answer to running a job that a reload has just taken
// out of the running config (the new config's job answers the next ask).
var ErrClosed = errors.New("the job is no longer in the running config (a reload replaced it); ask again")

// ErrHeld is the answer to running a job of an app whose database is
// being restored (HoldApp).
var ErrHeld = errors.New("a restore of the app's database is under way; the job runs once it has ended")

// apps holds, per app, the holds on its jobs (HoldApp: none starts a run)
// and its jobs' runs under way, wherever their Job is (a run a reload's
// Destruct lets finish counts too): a run would write to the database a
// restore is replacing, and what it wrote between the copy aside and the
// restore would be in neither.
var apps struct {
	sync.Mutex
	held    map[string]int            // app → holds
	running map[string]map[string]int // app → "kind name" → runs
}

// HoldApp keeps the jobs of app (those with `app` app) from starting a
// run until release is called: a scheduled run is skipped (counted and
// logged), a manual one refused with ErrHeld; a backup's restore runs.
// running names ("job import", "backup site") the runs of app's jobs
// under way as the hold began, which it does not stop.
func HoldApp(app string) (release func(), running []string) {
	apps.Lock()
	if apps.held == nil {
		apps.held = map[string]int{}
	}
	apps.held[app]++
	for name := range apps.running[app] {
		running = append(running, name)
	}
	apps.Unlock()
	slices.Sort(running)
	var once sync.Once
	return func() {
		once.Do(func() {
			apps.Lock()
			defer apps.Unlock()
			if apps.held[app]--; apps.held[app] <= 0 {
				delete(apps.held, app)
			}
		})
	}, running
}

// backupRuns names the backups with a run (a copy or a restore) under
// way, wherever their Job is: a reload that drops a backup lets its run
// finish, and one that brings it back makes a new history, whose first
// run would otherwise write into the same directory at the same time
// (each removing the other's partial copy and workspace).
var backupRuns struct {
	sync.Mutex
	names map[string]bool
}

// startBackupRun marks a run of the backup name under way, unless one is.
func startBackupRun(name string) bool {
	backupRuns.Lock()
	defer backupRuns.Unlock()
	if backupRuns.names[name] {
		return false
	}
	if backupRuns.names == nil {
		backupRuns.names = map[string]bool{}
	}
	backupRuns.names[name] = true
	return true
}

// endBackupRun ends what startBackupRun marked.
func endBackupRun(name string) {
	backupRuns.Lock()
	defer backupRuns.Unlock()
	delete(backupRuns.names, name)
}

// startForApp counts a run of the job named as kind and name, of app,
// unless app is held (HoldApp): then false.
func startForApp(app, name string) bool {
	apps.Lock()
	defer apps.Unlock()
	if apps.held[app] > 0 {
		return false
	}
	if apps.running == nil {
		apps.running = map[string]map[string]int{}
	}
	if apps.running[app] == nil {
		apps.running[app] = map[string]int{}
	}
	apps.running[app][name]++
	return true
}

// endForApp ends what startForApp counted.
func endForApp(app, name string) {
	apps.Lock()
	defer apps.Unlock()
	if apps.running[app][name]--; apps.running[app][name] <= 0 {
		delete(apps.running[app], name)
		if len(apps.running[app]) == 0 {
			delete(apps.running, app)
		}
	}
}

// clock is time, replaceable in tests.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now().Round(0) } // the wall clock alone: schedules go by it, and a clock set back must compare as earlier
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Job runs one job's command on its schedule. It is kept across reloads
// by its spec's hash, like a pool.
type Job struct {
	spec   *Spec
	logger *zap.Logger
	clock  clock
	hist   *history

	ctx    context.Context // ends the schedule (the job left the config)
	cancel context.CancelFunc
	// runCtx ends running runs: only when Caddy exits (a reload lets a
	// run finish, within its timeout)
	runCtx    context.Context
	runCancel context.CancelFunc
	runs      sync.WaitGroup
	loop      sync.WaitGroup

	startOnce  sync.Once
	stopOnce   sync.Once
	generation uint64 // the order in which jobs were made

	// lastDueDir keeps the time the schedule counts from ("": not kept)
	lastDueDir string
	// keepDue: the schedule's period is long enough for its due times to
	// be written down (not every few seconds, on a home board's SD card)
	keepDue bool

	mu     sync.Mutex
	next   time.Time // the next scheduled run
	closed bool      // Destruct began: no run starts any more
}

// generations numbers the jobs as they are made.
var generations atomic.Uint64

// New makes the job of spec; Start starts its schedule.
func New(spec *Spec, logger *zap.Logger) *Job {
	j := newJob(spec, logger, realClock{})
	j.lastDueDir = lastDueDir()
	return j
}

func newJob(spec *Spec, logger *zap.Logger, c clock) *Job {
	if spec.schedule == nil { // a spec decoded, not resolved
		spec.schedule, _ = ParseSchedule(spec.Schedule)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runCtx, runCancel := context.WithCancel(context.Background())
	h, _, _ := histories.LoadOrNew(spec.historyKey(), func() (caddy.Destructor, error) { return &history{}, nil })
	return &Job{spec: spec, logger: logger.With(zap.String("job", spec.Name)), clock: c, hist: h.(*history),
		ctx: ctx, cancel: cancel, runCtx: runCtx, runCancel: runCancel, generation: generations.Add(1)}
}

// Name is the job's name.
func (j *Job) Name() string { return j.spec.Name }

// Kind is what the job is: a job or a backup.
func (j *Job) Kind() Kind { return j.spec.Kind }

// historyKey names the history of a job's runs: a job and a backup may
// share a name.
func (s *Spec) historyKey() string { return string(s.Kind) + ":" + s.Name }

// Generation orders jobs by when they were made: of two jobs of a name
// during a reload, the higher is the new config's.
func (j *Job) Generation() uint64 { return j.generation }

// Start starts the job's schedule. It counts from the last time the job
// was due on this machine (see lastrun.go), or from now for a job new to
// it; a time due while Caddy was not running is made up once, shortly
// after the start.
func (j *Job) Start() error {
	j.startOnce.Do(func() {
		if j.spec.schedule == nil {
			return
		}
		now := j.clock.Now()
		if first := j.spec.schedule.Next(now); !first.IsZero() {
			j.keepDue = j.spec.schedule.Next(first).Sub(first) >= minKeptPeriod
		}
		last, ok := now, false
		if j.lastDueDir != "" && j.keepDue {
			var err error
			if last, ok, err = j.spec.loadLastDue(j.lastDueDir); err != nil {
				j.logger.Warn("job's last due time unreadable", zap.Error(err))
			}
			if !ok {
				last = now
				j.keepLastDue(now)
			}
			last = last.In(now.Location()) // kept with its offset only: cron reads the clock's zone
		}
		j.hist.mu.Lock()
		if l := j.hist.lastDue; l.After(last) && !l.After(now) { // a Job of this name ran since it was written (a reload)
			last = l
		}
		j.hist.mu.Unlock()
		next := j.due(last, now)
		if next.Before(now) && !next.IsZero() {
			j.logger.Warn("job missed a run while Caddy was not running: making it up", zap.Time("missed", next),
				zap.Duration("in", catchUpDelay))
			next = now.Add(catchUpDelay)
		}
		j.mu.Lock()
		j.next = next
		j.mu.Unlock()
		j.loop.Add(1)
		panics.Go(j.logger, "scheduling a job", func() {
			defer j.loop.Done()
			j.schedule(next)
		})
		j.logger.Info("job scheduled", zap.String("schedule", j.spec.Schedule), zap.Time("next_run", next))
		if j.spec.Backup != nil {
			// said now, not at the first copy a day later
			if err := checkCopies(j.spec.Backup.To); err != nil {
				j.logger.Warn("backup directory refused: the copies will fail until it is fixed", zap.Error(err))
			}
		}
	})
	return nil
}

// due is the schedule's next time after last, seen at now: when now is
// before last (a clock set back, or a last time kept while the clock was
// ahead), never later than its next time after now, so that the job is
// not postponed by the jump.
func (j *Job) due(last, now time.Time) time.Time {
	next := j.spec.schedule.Next(last)
	if !now.Before(last) {
		return next
	}
	if fromNow := j.spec.schedule.Next(now); !fromNow.IsZero() && fromNow.Before(next) {
		next = fromNow
	}
	return next
}

// maxWait is the longest the schedule sleeps without reading the wall
// clock: Go's timers do not count a machine's sleep, nor see the clock set.
const maxWait = time.Minute

// schedule fires the job at next, then at each time of its schedule, until
// it stops. A time passed while the machine slept (or the clock was set
// forward past it) is made up once, not once per time missed.
func (j *Job) schedule(next time.Time) {
	for {
		if next.IsZero() { // refused by ParseSchedule: never a run at once, forever
			j.logger.Error("job not scheduled: its schedule never comes", zap.String("schedule", j.spec.Schedule))
			return
		}
		j.mu.Lock()
		j.next = next
		j.mu.Unlock()
		for now := j.clock.Now(); now.Before(next); {
			select {
			case <-j.ctx.Done():
				return
			case <-j.clock.After(min(next.Sub(now), maxWait)):
			}
			woke := j.clock.Now()
			if woke.Before(now) { // the clock was set back while the timer ran forward
				if n := j.spec.schedule.Next(woke); !n.IsZero() && n.Before(next) {
					next = n
					j.mu.Lock()
					j.next = next
					j.mu.Unlock()
				}
			}
			now = woke
		}
		select {
		case <-j.ctx.Done():
			return
		default:
		}
		now, due := j.clock.Now(), next
		if now.Sub(next) > maxWait+time.Second {
			j.logger.Warn("job's time passed while the machine slept or the clock moved: making it up once", zap.Time("missed", next))
			due = now // made up now: a restart does not make it up again
		}
		if j.claim(next, due) {
			j.keepLastDue(due)
			switch _, err := j.start("schedule", j.spec.Args, nil); {
			case errors.Is(err, ErrRunning):
				j.logger.Warn("job skipped: its previous run is still going", zap.Time("due", next))
			case errors.Is(err, ErrHeld):
				j.logger.Warn("job skipped: a restore of its app's database is under way", zap.Time("due", next), zap.String("app", j.spec.App))
			}
		}
		if next = j.due(due, now); !next.After(now) && !next.IsZero() { // more than one time missed: the next from now
			next = j.spec.schedule.Next(now)
		}
	}
}

// claim takes the run due at next (made at due) for this Job, unless a Job
// of its name already ran it: across a reload the old config's Job and the
// new one's may both reach a time.
func (j *Job) claim(next, due time.Time) bool {
	j.hist.mu.Lock()
	defer j.hist.mu.Unlock()
	// a time claimed later than now was claimed while the clock was ahead:
	// it says nothing of the times to come
	if last := j.hist.lastDue; !last.IsZero() && !next.After(last) && !last.After(j.clock.Now()) {
		return false
	}
	j.hist.lastDue = due
	return true
}

// minKeptPeriod is the shortest period whose due times are kept on disk:
// a restart costs a shorter schedule at most that much.
const minKeptPeriod = 10 * time.Minute

// keepLastDue keeps t as the time the schedule counts from, on this
// machine; a failure is logged, and the schedule goes on from memory.
func (j *Job) keepLastDue(t time.Time) {
	if j.lastDueDir == "" || !j.keepDue {
		return
	}
	if err := j.spec.saveLastDue(j.lastDueDir, t); err != nil {
		j.logger.Warn("job's last due time not kept: a restart of Caddy will count its schedule from then", zap.Error(err))
	}
}

// Next is the time of the next scheduled run.
func (j *Job) Next() time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.next
}

// RunNow starts a run at once (`caddy hearth jobs run`) and returns its
// id; ErrRunning if one is running.
func (j *Job) RunNow() (int64, error) { return j.start("manual", j.spec.Args, nil) }

// start starts a run with args unless one of this job's name is running
// (a skipped scheduled run is counted). copy is a restore's copy, closed
// once the run has ended (when start returns an error, the caller's).
func (j *Job) start(trigger string, args []string, copy *os.File) (int64, error) {
	j.mu.Lock()
	defer j.mu.Unlock() // held until the run is counted in j.runs: Destruct waits for it
	if j.closed {
		return 0, fmt.Errorf("job %s: %w", j.spec.Name, ErrClosed)
	}
	h := j.hist
	h.mu.Lock()
	if h.running {
		if trigger == "schedule" {
			h.skipped++
		}
		h.mu.Unlock()
		return 0, ErrRunning
	}
	backup := j.spec.Kind == KindBackup
	if backup && !startBackupRun(j.spec.Name) {
		if trigger == "schedule" {
			h.skipped++
		}
		h.mu.Unlock()
		return 0, fmt.Errorf("a run of backup %s that a reload took out of the config is finishing: %w", j.spec.Name, ErrRunning)
	}
	forApp := ""
	if trigger != TriggerRestore && j.spec.App != "" {
		forApp = string(j.spec.Kind) + " " + j.spec.Name
		if !startForApp(j.spec.App, forApp) {
			if backup {
				endBackupRun(j.spec.Name)
			}
			if trigger == "schedule" {
				h.skipped++
			}
			h.mu.Unlock()
			return 0, fmt.Errorf("job %s: %w", j.spec.Name, ErrHeld)
		}
	}
	h.running = true
	h.nextID++
	run := Run{ID: h.nextID, Trigger: trigger, StartedAt: time.Now(), Result: Running}
	h.runs = append(h.runs, run)
	if len(h.runs) > keptRuns {
		h.runs = h.runs[len(h.runs)-keptRuns:]
	}
	h.mu.Unlock()
	// ended with the run's record (execute), so that a run seen ended
	// holds nothing; at the latest when the goroutine ends (a panic)
	var once sync.Once
	release := func() {
		once.Do(func() {
			if backup {
				endBackupRun(j.spec.Name)
			}
			if forApp != "" {
				endForApp(j.spec.App, forApp)
			}
		})
	}
	// the run holds its history until it is recorded: a reload that drops
	// the job and one that brings it back meanwhile give the new Job this
	// history, running, not a new one that would start a second run
	// beside this one, and lose this one's result
	key := j.spec.historyKey()
	_, _, _ = histories.LoadOrNew(key, func() (caddy.Destructor, error) { return h, nil })
	j.runs.Add(1)
	panics.Go(j.logger, "running a job", func() {
		defer j.runs.Done()
		defer func() { _, _ = histories.Delete(key) }()
		defer release()
		j.execute(run, args, copy, release)
	})
	return run.ID, nil
}

// TriggerRestore is the trigger of a backup's run that restores a copy.
const TriggerRestore = "restore"

// execute runs the command with args to its end (or its timeout) and
// records it, calling release as it does (what start counted).
func (j *Job) execute(run Run, args []string, copy *os.File, release func()) {
	ctx, cancel := context.WithTimeout(j.runCtx, j.spec.Timeout)
	defer cancel()
	if copy != nil {
		defer copy.Close()
	}
	j.logger.Info("job started", zap.Int64("run", run.ID), zap.String("trigger", run.Trigger))
	result, exit := OK, "exit status 0"
	var out []byte
	err := panics.Call(j.logger, "running a job", func() error {
		cmd := supervisor.Command{Path: j.spec.Path, Args: args, Dir: j.spec.Dir,
			Env: j.spec.Env, Credential: j.spec.Credential, Umask: j.spec.Umask}
		var in *intake
		if j.spec.Backup != nil {
			// a backup's copies are Caddy's to write (copies.go)
			var err error
			if in, err = openIntake(j.spec.Backup, j.spec.Name, copy != nil, j.logger); err != nil {
				out = []byte(err.Error() + "\n")
				return errors.New("Caddy could not prepare to keep the copy")
			}
			defer in.close() // (after finish, or a panic)
			cmd.ExtraFiles = []*os.File{in.theirs}
			if copy != nil {
				cmd.ExtraFiles = append(cmd.ExtraFiles, copy)
			}
		}
		var err error
		out, err = supervisor.Run(ctx, cmd, j.logger)
		if in != nil {
			lines, kept := in.finish(err == nil)
			switch {
			case in.restore && err != nil:
				// first: the last line is why the restore failed (the status's last_error)
				out = append([]byte(lines), out...)
			default:
				if len(out) > 0 && out[len(out)-1] != '\n' && lines != "" {
					out = append(out, '\n') // Caddy's lines are whole: the last is what lastBackup reads
				}
				out = append(out, lines...)
			}
			if err == nil && kept != nil {
				err = errors.New("Caddy could not keep the copy")
			}
		}
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		result, exit = TimedOut, fmt.Sprintf("killed with its process group after its timeout (%s)", j.spec.Timeout)
	case errors.Is(err, context.Canceled):
		result, exit = Stopped, "killed with its process group: Caddy stopped"
	default:
		result, exit = Failed, err.Error()
	}
	took := time.Since(run.StartedAt)
	tail := out
	if len(tail) > outputTail {
		tail = tail[len(tail)-outputTail:]
	}
	h := j.hist
	h.mu.Lock()
	h.running = false
	release()
	// a restore is listed with the backup's runs, but is not a backup:
	// its success must not tell a monitor (last_success, the metrics)
	// that a copy was made
	if run.Trigger != TriggerRestore {
		h.total++
		if result == OK {
			h.lastSuccess = time.Now()
		} else {
			h.failures++
		}
	}
	for i := range h.runs {
		if h.runs[i].ID == run.ID {
			h.runs[i].Duration, h.runs[i].Result, h.runs[i].Exit, h.runs[i].Output = took.Seconds(), result, exit, string(tail)
		}
	}
	h.mu.Unlock()
	fields := []zap.Field{zap.Int64("run", run.ID), zap.String("result", string(result)), zap.String("exit", exit), zap.Duration("duration", took)}
	if result == OK {
		j.logger.Info("job finished", fields...)
	} else {
		j.logger.Error("job failed", append(fields, zap.String("output_tail", termsafe.Lines(lastLines(string(tail), 10))))...)
	}
}

// lastLines is at most the last n lines of s.
func lastLines(s string, n int) string {
	end := len(s)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' && i < end-1 {
			n--
			if n == 0 {
				return s[i+1:]
			}
		}
	}
	return s
}

// Destruct stops the job's schedule once no config has it. A run in
// progress finishes (within its timeout) unless Caddy is exiting: then it
// is killed with its process group, and Destruct waits for that.
func (j *Job) Destruct() error {
	j.stopOnce.Do(func() {
		j.cancel()
		j.loop.Wait()
		j.mu.Lock()
		j.closed = true
		j.mu.Unlock()
		if caddy.Exiting() {
			j.runCancel()
			j.runs.Wait()
		}
		_, _ = histories.Delete(j.spec.historyKey())
	})
	return nil
}

// Status is a job in GET /hearth/jobs.
type Status struct {
	Name        string     `json:"name"`
	Kind        Kind       `json:"kind"`
	App         string     `json:"app,omitempty"`
	Command     []string   `json:"command"`
	Schedule    string     `json:"schedule"`
	Timeout     float64    `json:"timeout_seconds"`
	NextRun     *time.Time `json:"next_run,omitempty"`
	Running     bool       `json:"running"`
	Runs        int64      `json:"runs"`
	Failures    int64      `json:"failures"`
	Skipped     int64      `json:"skipped"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// LastResult is the result of the latest finished run ("" before one);
	// LastError says why it failed (its exit and the last line it wrote).
	LastResult Result `json:"last_result,omitempty"`
	LastError  string `json:"last_error,omitempty"`
	// Recent are the last runs, newest first.
	Recent []Run `json:"recent_runs"`
	// Backup (a backup): what it copies, where, and its newest copy.
	Backup     *BackupTarget `json:"backup,omitempty"`
	LastBackup *BackupFile   `json:"last_backup,omitempty"`
}

// Status reports the job.
func (j *Job) Status() Status {
	st := Status{Name: j.spec.Name, Kind: j.spec.Kind, App: j.spec.App, Command: j.command(), Backup: j.spec.Backup,
		Schedule: j.spec.Schedule, Timeout: j.spec.Timeout.Seconds(), Recent: []Run{}}
	if next := j.Next(); !next.IsZero() {
		st.NextRun = &next
	}
	h := j.hist
	h.mu.Lock()
	defer h.mu.Unlock()
	st.Running, st.Runs, st.Failures, st.Skipped = h.running, h.total, h.failures, h.skipped
	if !h.lastSuccess.IsZero() {
		ls := h.lastSuccess
		st.LastSuccess = &ls
	}
	now := time.Now()
	for i := len(h.runs) - 1; i >= 0; i-- {
		r := h.runs[i]
		if r.Result == Running {
			r.Duration = now.Sub(r.StartedAt).Seconds()
		} else if st.LastResult == "" {
			st.LastResult = r.Result
			if r.Result != OK {
				st.LastError = r.Exit
				if line := lastLines(strings.TrimSpace(r.Output), 1); line != "" {
					st.LastError += ": " + line
				}
			}
		}
		st.Recent = append(st.Recent, r)
	}
	if j.spec.Kind == KindBackup {
		st.LastBackup = lastBackup(st.Recent)
	}
	return st
}

// command is the job's command line as status shows it (a backup's is
// Hearth's own script: named, not printed).
func (j *Job) command() []string {
	if j.spec.Kind == KindBackup {
		return []string{j.spec.Path, "(Hearth's SQLite backup)"}
	}
	return append([]string{j.spec.Path}, j.spec.Args...)
}

// Metrics are the job's counters: runs, failures, skipped runs, the last
// success (zero: none) and whether it runs now.
func (j *Job) Metrics() (runs, failures, skipped int64, lastSuccess time.Time, running bool) {
	h := j.hist
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total, h.failures, h.skipped, h.lastSuccess, h.running
}

// Run returns the run id of this job, as kept (ok false once it is no
// longer among the last runs).
func (j *Job) Run(id int64) (Run, bool) {
	for _, r := range j.Status().Recent {
		if r.ID == id {
			return r, true
		}
	}
	return Run{}, false
}

// Scheduled reports whether the job's schedule runs (it has not been
// stopped).
func (j *Job) Scheduled() bool { return j.ctx.Err() == nil }
