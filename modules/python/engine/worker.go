package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// worker is one Python process of a pool, with one channel (a private socket
// to it) per thread.
type worker struct {
	proc     *supervisor.Process
	channels []*channel
	// stopped says Hearth stopped the worker on purpose (stop): its
	// channels were closed, not broken
	stopped atomic.Bool

	// guarded by the pool's mutex
	replica    *supervisor.Replica[*worker] // the place it holds in the pool
	busy       int                          // channels in use
	busySince  time.Time                    // when busy last rose from 0
	served     int64                        // requests completed
	limit      int64                        // max_requests (with jitter) before recycling; 0: none
	lastUsed   time.Time                    // when a request last finished
	rss        int64                        // resident memory in bytes, sampled by the monitor
	serviceRSS int64                        // rss when it entered service: its app imported
	state      workerState
	exitReason string      // why Hearth ended it (timeout, …); "" for a crash
	retiredFor string      // why it was retired gracefully (reload, scale, max_requests…)
	drainTimer *time.Timer // a retired worker's stop_timeout (retireLocked)
}

// workerState is where a worker is in its life. It only moves forward,
// except that a recycle whose replacement could not start puts the
// worker back to serving.
type workerState uint8

const (
	workerServing   workerState = iota // takes requests
	workerRecycling                    // takes requests while its replacement starts
	workerRetired                      // out of service: finishes its requests, takes no new one
	workerStopping                     // out of service, its process being stopped
)

// retired reports whether the worker is out of service.
func (w *worker) retired() bool { return w.state >= workerRetired }

// startupError is a worker that could not become ready; Traceback holds
// what the app printed, when it got that far.
type startupError struct {
	reason    string
	traceback string
}

func (e *startupError) Error() string {
	if e.traceback == "" {
		return e.reason
	}
	return e.reason + ":\n" + strings.TrimRight(e.traceback, "\n")
}

// spawnWorker launches one worker process (or, with preload, has the
// fork server fork one) and waits until it has the app loaded and has greeted
// every channel.
func (p *Pool) spawnWorker() (_ *worker, err error) {
	defer panics.Recover(p.logger, "starting a worker", &err)
	p.mu.Lock()
	since := p.busyBeginLocked(time.Now()) // importing the app keeps a CPU busy
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.busyEndLocked(since, time.Now())
		p.mu.Unlock()
	}()
	local := make([]net.Conn, 0, p.opts.Threads)
	remote := make([]*os.File, 0, p.opts.Threads)
	defer func() {
		for _, f := range remote {
			f.Close()
		}
	}()
	for i := 0; i < p.opts.Threads; i++ {
		conn, peer, err := socketPair()
		if err != nil {
			for _, c := range local {
				c.Close()
			}
			return nil, fmt.Errorf("creating worker channel: %w", err)
		}
		local = append(local, conn)
		remote = append(remote, peer)
	}
	var proc *supervisor.Process
	if p.opts.Preload {
		proc, err = p.forkWorker(remote)
	} else {
		proc, err = p.startRuntime(p.command(remote), p.logger)
	}
	if err != nil {
		for _, c := range local {
			c.Close()
		}
		return nil, err
	}
	w := &worker{proc: proc}
	for _, c := range local {
		w.channels = append(w.channels, &channel{
			worker: w,
			conn:   c,
			frames: protocol.NewReader(bufio.NewReaderSize(c, 64<<10)),
		})
	}
	if err := p.awaitHello(proc, w.channels); err != nil {
		w.close()
		proc.Stop(syscall.SIGKILL, time.Second)
		return nil, err
	}
	p.checkCPUPolicy(proc.Pid())
	return w, nil
}

// command is how the runtime is launched with the given channel ends as
// fds 3, 4, …, plus extra environment variables (startRuntime adds the
// runtime's program).
func (p *Pool) command(channels []*os.File, extraEnv ...string) supervisor.Command {
	return p.commandIn(p.env, channels, extraEnv...)
}

// commandIn is command in the environment env.
func (p *Pool) commandIn(env []string, channels []*os.File, extraEnv ...string) supervisor.Command {
	fds := make([]string, len(channels))
	for i := range channels {
		fds[i] = strconv.Itoa(3 + i)
	}
	env = append(slices.Clip(env),
		"HEARTH_APP="+p.opts.App,
		"HEARTH_NAME="+p.opts.Name,
		"HEARTH_DIR="+p.opts.Dir,
		"HEARTH_FDS="+strings.Join(fds, ","),
		"HEARTH_KIND="+p.opts.KindName(),
		"HEARTH_LIFESPAN="+p.opts.Lifespan,
		"HEARTH_CPU_POLICY="+p.opts.CPUPolicy,
	)
	return supervisor.Command{
		Path:       p.opts.Python,
		Dir:        p.opts.Dir,
		Env:        append(env, extraEnv...),
		ExtraFiles: channels,
		Credential: p.opts.Credential,
		Umask:      p.opts.Umask,
	}
}

// Inspect runs the runtime once in inspect mode, in the environment env
// (Start's is not known yet when the checks run): it imports the app as a
// worker would and answers with its report (JSON facts for the checks)
// instead of a greeting. Failing to import is a startup error, with the
// app's traceback.
func (p *Pool) Inspect(env []string) ([]byte, error) {
	conn, peer, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	proc, err := p.startRuntime(p.commandIn(env, []*os.File{peer}, "HEARTH_MODE=inspect"), p.logger.With(zap.String("role", "guard-check")))
	peer.Close()
	if err != nil {
		return nil, err
	}
	defer proc.Stop(syscall.SIGKILL, time.Second)
	return p.hello(proc, "check process", &channel{conn: conn, frames: protocol.NewReader(conn)})
}

// awaitHello reads each channel's greeting within start_timeout.
func (p *Pool) awaitHello(proc *supervisor.Process, channels []*channel) error {
	for _, s := range channels {
		if _, err := p.hello(proc, "worker", s); err != nil {
			return err
		}
	}
	return nil
}

// hello reads the greeting a runtime process (role: a worker, the fork
// server, the check) sends on channel s once it has loaded the app, within
// start_timeout, and returns its payload. Every way the start can fail is
// a startupError saying what to do: too slow, exited, the app's traceback,
// or a frame that is not a greeting.
func (p *Pool) hello(proc *supervisor.Process, role string, s *channel) ([]byte, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(p.opts.StartTimeout))
	// a pool that stops does not wait for a start under way (a slow
	// import): its stop would wait start_timeout for each channel
	stopWaiting := context.AfterFunc(p.ctx, func() { _ = s.conn.SetReadDeadline(time.Now()) })
	h, payload, err := s.frames.Next()
	stopWaiting()
	_ = s.conn.SetReadDeadline(time.Time{})
	switch {
	case err != nil && p.ctx.Err() != nil:
		return nil, fmt.Errorf("%s %d was starting when the app stopped: %w", role, proc.Pid(), supervisor.ErrNotRunning)
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return nil, &startupError{reason: fmt.Sprintf("%s %d did not become ready within start_timeout (%s); raise start_timeout if the app is slow to import", role, proc.Pid(), p.opts.StartTimeout)}
	case err != nil:
		select {
		case <-proc.Done():
		case <-time.After(2 * time.Second):
		}
		return nil, &startupError{reason: fmt.Sprintf("%s %d exited before it was ready (%s); its output is in the log", role, proc.Pid(), exitOrErr(proc, err))}
	case h.Type == protocol.Fatal:
		return nil, &startupError{reason: fmt.Sprintf("%s %d could not load %s", role, proc.Pid(), p.opts.App), traceback: string(payload)}
	case h.Type != protocol.Hello:
		return nil, &startupError{reason: fmt.Sprintf("%s %d sent %s instead of hello", role, proc.Pid(), h.Type)}
	}
	return payload, nil
}

func exitOrErr(proc *supervisor.Process, err error) string {
	if proc.Exited() {
		return proc.ExitDescription()
	}
	return err.Error()
}

// close closes Caddy's end of every channel: the worker sees the end of its
// input and exits once its current request is answered.
func (w *worker) close() {
	for _, s := range w.channels {
		s.conn.Close()
	}
}

// stop ends the worker: close its channels, then SIGTERM, then SIGKILL.
func (w *worker) stop(grace time.Duration) {
	w.stopped.Store(true)
	w.close()
	w.proc.Stop(syscall.SIGTERM, grace)
}

// channelWriteBuffer is the send buffer asked for Caddy's end of a
// channel (Linux doubles it: 256 KiB, unless net.core.wmem_max is set
// below 128 KiB): room for a request's head, its inline body and the requests
// pipelined behind it, whatever net.core.wmem_default says, so that
// writing them never waits for a worker that is writing its answer.
const channelWriteBuffer = 128 << 10

// socketPair returns a connected pair: Caddy's end as a net.Conn, the
// worker's end as a file to hand to the child.
func socketPair() (*pairConn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	// raised, never lowered (a machine tuned higher keeps its setting);
	// best effort: the default (net.core.wmem_default, 208 KiB) holds it too
	if have, err := syscall.GetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF); err == nil && have < 2*channelWriteBuffer {
		_ = syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, channelWriteBuffer)
	}
	localFile := os.NewFile(uintptr(fds[0]), "hearth-caddy")
	remote := os.NewFile(uintptr(fds[1]), "hearth-worker")
	conn, err := net.FileConn(localFile)
	localFile.Close()
	var pair *pairConn
	if err == nil {
		pair, err = newPairConn(conn)
	}
	if err != nil {
		remote.Close()
		return nil, nil, err
	}
	return pair, remote, nil
}

// workerStatus is one worker in GET /hearth/apps.
type workerStatus struct {
	Pid       int             `json:"pid"`
	State     string          `json:"state"`
	Busy      int             `json:"busy_threads"`
	Requests  int64           `json:"requests"`
	RSS       int64           `json:"rss_bytes"`
	StartedAt time.Time       `json:"started_at"`
	Current   []requestStatus `json:"current_requests"`
}

// requestStatus is a request in flight.
type requestStatus struct {
	Path       string  `json:"path"`
	AgeSeconds float64 `json:"age_seconds"`
}

// status reports w; the pool's mutex must be held.
func (w *worker) status(now time.Time) workerStatus {
	state := "idle"
	switch {
	case w.retired():
		state = "retiring"
	case w.busy > 0:
		state = "busy"
	}
	st := workerStatus{Pid: w.proc.Pid(), State: state, Busy: w.busy, Requests: w.served, RSS: w.rss,
		StartedAt: w.proc.StartedAt(), Current: []requestStatus{}}
	for _, s := range w.channels {
		if s.path != "" {
			st.Current = append(st.Current, requestStatus{Path: s.path, AgeSeconds: now.Sub(s.since).Seconds()})
		}
	}
	return st
}
