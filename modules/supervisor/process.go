// Package supervisor starts, watches and stops child processes for Hearth:
// every child runs in its own process group, is ended with everything it
// started when Caddy dies (even on SIGKILL: see internal/keeper), has its
// stdout and stderr forwarded line by
// line into Caddy's structured log, and is stopped with a signal followed by
// SIGKILL after a grace period. Restart policy (Backoff) lives here too, so
// every kind of pool supervises its processes the same way.
package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/internal/keeper"
	"github.com/hearth-dev/hearth/modules/internal/termsafe"
)

// Command describes a process to launch.
type Command struct {
	// Path is the program; Args excludes it.
	Path string
	Args []string
	// Dir is the working directory.
	Dir string
	// Env is the complete environment ("KEY=value"); of two variables of
	// the same name, the later one is passed.
	Env []string
	// ExtraFiles become fds 3, 4, … in the child; the caller closes its
	// copies after Start returns.
	ExtraFiles []*os.File
	// Credential, if set, runs the child as another user (Caddy must be
	// root or hold CAP_SETUID and CAP_SETGID).
	Credential *syscall.Credential
	// Umask is the child's file mode creation mask; 0 is DefaultUmask.
	Umask uint32
}

// UID is the account the child runs as: Credential's, or Caddy's own.
func (c Command) UID() int {
	if c.Credential != nil {
		return int(c.Credential.Uid)
	}
	return os.Geteuid()
}

// Process is a running process: a child started by Start, or a process
// forked by another and adopted with Adopt.
type Process struct {
	pid     int
	started time.Time
	done    chan struct{}
	logs    sync.WaitGroup
	exitErr error
	adopted bool
	// ended is set as soon as the process is known to have ended, before
	// its output is drained (done closes after that), and gone closed
	ended atomic.Bool
	gone  chan struct{}
	// pidfd names an adopted process until it has ended (-1 after, and
	// for a child of the keeper): signalled through it, a process another
	// reaped (the fork server reaps its workers) is never mistaken for one
	// that took its pid
	pidfdMu sync.Mutex
	pidfd   int
}

// Start launches c through the keeper (see internal/keeper), in its own process
// group, forwarding its output to logger (fields "pid" and "stream" are
// added).
func Start(c Command, logger *zap.Logger) (*Process, error) {
	stdout, stderr, err := OutputPipes()
	if err != nil {
		return nil, err
	}
	pid, end, err := spawn(c, stdout.Write, stderr.Write, logger)
	stdout.Write.Close()
	stderr.Write.Close()
	if err != nil {
		stdout.Read.Close()
		stderr.Read.Close()
		return nil, fmt.Errorf("starting %s: %w", c.Path, err)
	}
	p := &Process{pid: pid, started: time.Now(), done: make(chan struct{}), gone: make(chan struct{}), pidfd: -1}
	if c.Credential != nil {
		childCreds.Store(p.pid, c.Credential)
	}
	p.watch(logger, stdout.Read, stderr.Read, func() { p.exitErr = endError(<-end) })
	return p, nil
}

// Run runs c to its end and returns what it wrote to stdout and stderr
// (interleaved; of more than maxRunOutput bytes, the first and the last
// halves, with a line saying how much was left out between). When ctx
// ends first, c's whole process group is killed and ctx's error returned.
// When c ends, what is left of its process group is killed: a run leaves
// nothing behind (a job's `task &` would otherwise outlive every run, one
// more each time, beyond its timeout and its one-run-at-a-time). A
// descendant that left the group and keeps the output open delays the
// return by at most outputDrain. logger receives what concerns the keeper.
func Run(ctx context.Context, c Command, logger *zap.Logger) ([]byte, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	pid, end, err := spawn(c, w, w, logger)
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("starting %s: %w", c.Path, err)
	}
	out := headTail{half: maxRunOutput / 2}
	read := make(chan struct{})
	go func() {
		defer close(read)
		_, _ = io.Copy(&out, &pacedReader{r: r, bytes: newPacer(readBytesPerSecond, readBytesQuantum, time.Now(), nil)})
	}()
	var result keeper.Reply
	select {
	case result = <-end:
	case <-ctx.Done():
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL) // a leader that left its group (setpgid) is not in it
		<-end
		result.Status = -2
	}
	// the group outlives its leader while a member is left; once empty
	// its id is free (ESRCH), and a new group of that id would need the
	// pid handed out again in between
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-read:
	case <-time.After(outputDrain):
	}
	r.Close()
	<-read
	if result.Status == -2 {
		return out.Bytes(), ctx.Err()
	}
	return out.Bytes(), endError(result)
}

// maxRunOutput bounds the output Run keeps.
const maxRunOutput = 1 << 20

// headTail keeps the first half bytes written to it and the last half:
// a command's output starts with what it set out to do and ends with why
// it failed (a traceback).
type headTail struct {
	half    int
	head    []byte
	tail    []byte // a ring of half bytes once full; next is where the oldest is
	next    int
	dropped int64 // bytes between head and tail no longer kept
}

func (h *headTail) Write(p []byte) (int, error) {
	n := len(p)
	if room := h.half - len(h.head); room > 0 {
		k := min(room, len(p))
		h.head = append(h.head, p[:k]...)
		p = p[k:]
	}
	for len(p) > 0 {
		if len(h.tail) < h.half {
			k := min(h.half-len(h.tail), len(p))
			h.tail = append(h.tail, p[:k]...)
			p = p[k:]
			continue
		}
		k := copy(h.tail[h.next:], p)
		h.dropped += int64(k)
		h.next = (h.next + k) % h.half
		p = p[k:]
	}
	return n, nil
}

// Bytes is what was kept, in order, with a line in place of what was not.
func (h *headTail) Bytes() []byte {
	out := bytes.Clone(h.head)
	if h.dropped > 0 {
		out = fmt.Appendf(out, "\n[… %d bytes of output left out …]\n", h.dropped)
	}
	out = append(out, h.tail[h.next:]...)
	return append(out, h.tail[:h.next]...)
}

// Pipe is an output pipe for a child process.
type Pipe struct{ Read, Write *os.File }

// OutputPipes returns pipes for a child's stdout and stderr.
func OutputPipes() (stdout, stderr Pipe, err error) {
	if stdout.Read, stdout.Write, err = os.Pipe(); err != nil {
		return
	}
	if stderr.Read, stderr.Write, err = os.Pipe(); err != nil {
		stdout.Read.Close()
		stdout.Write.Close()
	}
	return
}

// Adopt watches a process that is not Caddy's child (a worker forked by a
// preloading template), through a pidfd, forwarding what it writes to its
// stdout and stderr pipes (whose read ends Adopt takes over). Its exit
// status is not known here: its parent reaps it. The pid comes from
// another process (the template), so it is taken only for a living child
// of parent: Caddy will signal its process group.
func Adopt(pid int, parent *Pinned, stdout, stderr *os.File, logger *zap.Logger) (*Process, error) {
	pidfd, err := adoptable(pid, parent)
	if err != nil {
		stdout.Close()
		stderr.Close()
		return nil, err
	}
	p := &Process{pid: pid, started: time.Now(), done: make(chan struct{}), gone: make(chan struct{}), adopted: true, pidfd: pidfd}
	p.watch(logger, stdout, stderr, func() {
		defer func() {
			p.pidfdMu.Lock()
			defer p.pidfdMu.Unlock()
			unix.Close(p.pidfd)
			p.pidfd = -1
		}()
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			// readable once the process has terminated
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				return
			}
		}
	})
	return p, nil
}

// adoptable opens a pidfd on pid once it is known to be a living child of
// parent: the pidfd pins the process, /proc then names its parent, and
// the pidfd, still not readable, shows that /proc described that same
// process and not one that took its pid after it ended; parent, pinned
// too and still alive, is the process its number named when it was
// checked (a fork server that ended could otherwise have its number taken
// by another account's process, whose children the app would name).
func adoptable(pid int, parent *Pinned) (int, error) {
	if pid <= 1 || pid == os.Getpid() || pid == parent.pid {
		return -1, fmt.Errorf("process %d, named as a new worker, is not one: refused", pid)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("watching process %d: %w", pid, err)
	}
	ppid, err := parentOf(pid)
	if err == nil && ppid != parent.pid {
		err = fmt.Errorf("process %d, named as a new worker by process %d, is not its child (its parent is %d): refused", pid, parent.pid, ppid)
	}
	if err == nil && !parent.Alive() {
		err = fmt.Errorf("process %d, named as a new worker by process %d, which has ended: refused", pid, parent.pid)
	}
	if err == nil {
		if n, perr := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 0); perr != nil || n != 0 {
			err = fmt.Errorf("process %d ended before it could be watched", pid)
		}
	}
	if err != nil {
		unix.Close(pidfd)
		return -1, err
	}
	return pidfd, nil
}

// Pinned is a process known by its number (a fork server that named
// itself), held by a pidfd: while it is alive, its number is its own.
type Pinned struct {
	pid int
	fd  *os.File // the pidfd (an *os.File: closed once, or when collected)
}

// Pin holds the process pid, or fails when there is none.
func Pin(pid int) (*Pinned, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("watching process %d: %w", pid, err)
	}
	return &Pinned{pid: pid, fd: os.NewFile(uintptr(fd), "pidfd")}, nil
}

// Pid is the process's number.
func (p *Pinned) Pid() int { return p.pid }

// Alive reports whether the process has not ended (its pidfd is not
// readable): its number is still its own.
func (p *Pinned) Alive() bool {
	conn, err := p.fd.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	_ = conn.Control(func(fd uintptr) {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		alive = err == nil && n == 0
	})
	return alive
}

// Close lets the process go.
func (p *Pinned) Close() { _ = p.fd.Close() }

// Descends reports whether pid is ancestor or one of its descendants
// (within a few generations: a wrapper script or two between them).
func Descends(pid, ancestor int) bool {
	for range 8 {
		if pid == ancestor {
			return true
		}
		if pid <= 1 {
			return false
		}
		ppid, err := parentOf(pid)
		if err != nil {
			return false
		}
		pid = ppid
	}
	return false
}

// parentOf is a process's parent pid, from /proc/<pid>/stat.
func parentOf(pid int) (int, error) {
	// through ReadProc: under ProtectProc=invisible (the unit's) Caddy's
	// account does not see the processes of the apps' accounts in /proc
	data, err := ReadProc(pid, "stat")
	if err != nil {
		return 0, fmt.Errorf("reading process %d: %w", pid, err)
	}
	fields, err := parseProcStat(pid, data)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(fields[1])
}

// outputDrain bounds how long, after a process exits, its output is still
// read (a grandchild may hold the pipes open).
const outputDrain = 2 * time.Second

// watch forwards the output pipes to the log and closes Done once wait
// has returned (the process exited) and the output is read.
func (p *Process) watch(logger *zap.Logger, stdout, stderr *os.File, wait func()) {
	plog := logger.With(zap.Int("pid", p.pid))
	now := time.Now()
	budget := newOutputBudget(now, plog)
	// (shared by its two streams, and off once it has ended)
	byteRate, lineRate := newPacer(readBytesPerSecond, readBytesQuantum, now, p.gone), newPacer(readLinesPerSecond, readLinesQuantum, now, p.gone)
	p.logs.Add(2)
	go p.forward(stdout, budget, byteRate, lineRate, 0, plog)
	go p.forward(stderr, budget, byteRate, lineRate, 1, plog)
	go func() {
		wait()
		p.ended.Store(true)
		close(p.gone)
		drained := make(chan struct{})
		go func() {
			p.logs.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(outputDrain):
		}
		budget.reportRest()
		stdout.Close()
		stderr.Close()
		childCreds.Delete(p.pid)
		close(p.done)
	}()
}

// maxLogLine bounds one log entry; longer output lines are split.
const maxLogLine = 16 << 10

// forward logs what r, the process's stream (0 stdout, 1 stderr),
// carries, line by line, as budget allows.
func (p *Process) forward(r io.Reader, budget *outputBudget, byteRate, lines *pacer, stream int, logger *zap.Logger) {
	defer p.logs.Done()
	logger = logger.With(zap.String("stream", streams[stream]))
	br := bufio.NewReaderSize(&pacedReader{r: r, bytes: byteRate}, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			lines.room(readLinesQuantum)
			lines.spend(1)
			text := bytes.TrimSuffix(line, []byte{'\n'})
			if budget.take(time.Now(), stream, text) {
				// as a line of text: Caddy's console log writes the message
				// as it is, and an app may log what a client sent (Django's
				// "Not Found: <path>"), escape sequences and all, to the
				// terminal of whoever runs `caddy run`
				logger.Info(termsafe.Line(string(text)))
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// Pid is the process id (also its process group id).
func (p *Process) Pid() int { return p.pid }

// StartedAt is when the process was launched.
func (p *Process) StartedAt() time.Time { return p.started }

// Done is closed once the process has exited and its output is drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// Ended is closed as soon as the process is known to have ended, before
// its output is drained, which may take up to outputDrain more when a
// descendant holds its pipes: what the process held (a port) is free from
// then on.
func (p *Process) Ended() <-chan struct{} { return p.gone }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitDescription describes how the process ended ("exit status 1",
// "signal: killed"); valid after Done is closed.
func (p *Process) ExitDescription() string {
	if p.adopted {
		return "exited"
	}
	if p.exitErr == nil {
		return "exit status 0"
	}
	return p.exitErr.Error()
}

// Signal sends sig to the process's whole group.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	err := syscall.Kill(-p.Pid(), sig)
	if errors.Is(err, syscall.ESRCH) {
		// the group is empty, yet the process may run: it left its group
		// for another of its session (a forked worker may join its fork
		// server's with setpgid), and would never get a hung worker's
		// SIGKILL
		err = p.signalItself(sig)
	}
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// SignalItself sends sig to the process alone, not its group (a
// worker's stack dump), while it is not known to have ended: an adopted
// process through its pidfd, never by a number another process may have
// taken since.
func (p *Process) SignalItself(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.signalItself(sig)
}

// signalItself sends sig to the process itself, not its group, while it
// is not known to have ended: through its pidfd when adopted, else by its
// pid (a child of the keeper, which reports its end as it reaps it).
func (p *Process) signalItself(sig syscall.Signal) error {
	if p.adopted {
		p.pidfdMu.Lock()
		defer p.pidfdMu.Unlock()
		if p.pidfd < 0 {
			return syscall.ESRCH
		}
		return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	}
	if p.ended.Load() {
		return syscall.ESRCH
	}
	return syscall.Kill(p.Pid(), sig)
}

// Stop sends sig to the process group, waits up to grace for the process to
// exit, then kills the group with SIGKILL and waits for the exit.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) {
	_ = p.Signal(sig)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		// the leader is gone; make sure nothing of its group lingers
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return
	case <-timer.C:
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	// the process itself, wherever its group is: a worker forked an
	// instant ago makes its own group first thing, and any process may
	// leave its group for another of its session (setpgid), which the
	// group's kill then missed, and this waited for its end for good. Not
	// once it is known to have ended: its parent may have reaped it and
	// the pid be another's (signalItself).
	_ = p.signalItself(syscall.SIGKILL)
	<-p.done
}
