package engine

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/safedir"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// forkServer is the process of a `preload` pool: it imported the app once and
// forks workers on request; they share its memory copy-on-write and start
// without importing anything.
type forkServer struct {
	proc *supervisor.Process
	// pid is the fork server's own: proc's, or that of a descendant when
	// the configured python is a wrapper that runs the interpreter as its
	// child; the workers are its children
	pid     int
	pinned  *supervisor.Pinned // pid, held: its workers' parent must still be it
	control *net.UnixConn
	frames  *protocol.Reader
	mu      sync.Mutex // one fork request at a time
	// requests numbers the fork requests (guarded by mu); an answer
	// carries its request's number, so one that comes after its request
	// timed out is not taken for the next request's
	requests uint32
}

// forkTimeout bounds a fork request to the fork server.
const forkTimeout = 10 * time.Second

// startForkServer launches a fork server and waits until it has imported the app.
func (p *Pool) startForkServer() (*forkServer, error) {
	conn, peer, err := socketPair()
	if err != nil {
		return nil, fmt.Errorf("creating the fork server channel: %w", err)
	}
	proc, err := p.startRuntime(p.command([]*os.File{peer}, "HEARTH_MODE=fork_server"), p.logger.With(zap.String("role", "fork-server")))
	peer.Close()
	if err != nil {
		conn.Close()
		return nil, err
	}
	t := &forkServer{proc: proc, control: conn.UnixConn, frames: protocol.NewReader(bufio.NewReader(conn))}
	hello, err := p.hello(proc, "fork server", &channel{conn: conn, frames: t.frames})
	if err != nil {
		t.stop()
		return nil, err
	}
	// its greeting is its pid: taken only if it is the process started or
	// one below it (the workers' parent is named by the app's own code)
	// (held first: then the number checked is the process held)
	if t.pid, err = strconv.Atoi(string(hello)); err == nil {
		t.pinned, err = supervisor.Pin(t.pid)
	}
	if err != nil || !supervisor.Descends(t.pid, proc.Pid()) || !t.pinned.Alive() {
		t.stop()
		return nil, fmt.Errorf("the fork server (pid %d) greeted with %q, which is not its pid or that of a process below it", proc.Pid(), hello[:min(len(hello), 32)])
	}
	p.logger.Info("fork server loaded the app; workers will be forked from it", zap.Int("pid", proc.Pid()))
	return t, nil
}

// fork asks the fork server for a worker with the given channel ends and
// output pipes, and returns its pid.
func (t *forkServer) fork(files []*os.File) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	t.requests++
	request := protocol.AppendFrame(nil, protocol.Fork, 0, t.requests, nil)
	if _, _, err := t.control.WriteMsgUnix(request, unix.UnixRights(fds...), nil); err != nil {
		return 0, fmt.Errorf("asking the fork server for a worker: %w", err)
	}
	_ = t.control.SetReadDeadline(time.Now().Add(forkTimeout))
	defer t.control.SetReadDeadline(time.Time{})
	for {
		h, payload, err := t.frames.Next()
		if err != nil {
			if t.frames.Err() != nil {
				// its channel is out of step for good: it is replaced
				// (liveForkServer starts another once this one exited)
				t.stop()
			}
			return 0, fmt.Errorf("the fork server did not answer a fork request within %s: %w", forkTimeout, err)
		}
		if h.Type != protocol.Fork {
			return 0, fmt.Errorf("the fork server sent a %s frame instead of a worker pid", h.Type)
		}
		if h.Stream != t.requests {
			// the late answer to a request that timed out: that worker's
			// channels are closed, so it ends by itself
			continue
		}
		if errno, failed := strings.CutPrefix(string(payload), "error "); failed {
			// the fork failed in the fork server (only its errno is taken:
			// the app's code runs there)
			n, err := strconv.Atoi(errno)
			if err != nil || n < 0 || n > 4095 {
				return 0, fmt.Errorf("the fork server could not fork a worker, for a reason it gave as %q", errno[:min(len(errno), 16)])
			}
			return 0, fmt.Errorf("the fork server could not fork a worker: %w", syscall.Errno(n))
		}
		pid, err := strconv.Atoi(string(payload))
		if err != nil {
			return 0, fmt.Errorf("the fork server sent %q instead of a worker pid", payload[:min(len(payload), 32)])
		}
		return pid, nil
	}
}

func (t *forkServer) stop() {
	t.control.Close()
	t.proc.Stop(syscall.SIGTERM, 5*time.Second)
	if t.pinned != nil {
		t.pinned.Close()
	}
}

// retire closes the channel of a fork server a restart replaced: it forks
// no more, and exits once every worker it forked has ended. They die with
// it (their parent-death signal), so stopping it at once would cut off the
// requests its retiring workers are finishing, and every worker of a
// restart that stopped half-way (they keep serving).
func (t *forkServer) retire() {
	t.mu.Lock() // after a fork request under way: its worker is waited for
	defer t.mu.Unlock()
	t.control.Close()
}

// liveForkServer returns the pool's fork server, starting a new one if there is
// none or it died.
func (p *Pool) liveForkServer() (*forkServer, error) {
	p.forkServerMu.Lock()
	defer p.forkServerMu.Unlock()
	p.mu.Lock()
	t := p.forkServer
	p.mu.Unlock()
	if t != nil && !t.proc.Exited() {
		return t, nil
	}
	if t != nil {
		p.logger.Error("the fork server exited; starting a new one", zap.Int("pid", t.proc.Pid()), zap.String("exit", t.proc.ExitDescription()))
	}
	t, err := p.startForkServer()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.forkServer = t
	p.mu.Unlock()
	return t, nil
}

// replaceForkServer loads the app anew in a new fork server (for a restart),
// which forks the workers from then on, and retires the old one: it exits
// once its workers have (stopForkServers stops it if the pool stops first).
func (p *Pool) replaceForkServer() error {
	p.forkServerMu.Lock()
	defer p.forkServerMu.Unlock()
	t, err := p.startForkServer()
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.state != supervisor.Running {
		// a reload took the pool out while the new one imported the app
		p.mu.Unlock()
		t.stop()
		return fmt.Errorf("app %s stopped during its restart, %w", p.opts.Name, supervisor.ErrNotRunning)
	}
	old := p.forkServer
	p.forkServer = t
	p.mu.Unlock()
	if old != nil {
		old.retire()
		p.retiredForkServers = slices.DeleteFunc(p.retiredForkServers, func(r *forkServer) bool { return r.proc.Exited() })
		p.retiredForkServers = append(p.retiredForkServers, old)
	}
	return nil
}

// stopForkServers stops the pool's fork servers, the one in service and
// those retired whose workers had not all ended, once the pool's workers
// are stopped.
func (p *Pool) stopForkServers() {
	p.forkServerMu.Lock()
	defer p.forkServerMu.Unlock()
	p.mu.Lock()
	t := p.forkServer
	p.mu.Unlock()
	for _, r := range append(p.retiredForkServers, t) {
		// not one that exited: stop would kill its process group, whose
		// number another group may have taken since
		switch {
		case r == nil:
		case r.proc.Exited():
			r.control.Close()
		default:
			r.stop()
		}
	}
	p.retiredForkServers = nil
}

// forkWorker has the fork server fork a worker holding the given channel ends.
func (p *Pool) forkWorker(channels []*os.File) (*supervisor.Process, error) {
	t, err := p.liveForkServer()
	if err != nil {
		return nil, err
	}
	stdout, stderr, err := supervisor.OutputPipes()
	if err != nil {
		return nil, err
	}
	pid, err := t.fork(append(append([]*os.File(nil), channels...), stdout.Write, stderr.Write))
	stdout.Write.Close()
	stderr.Write.Close()
	if cred := p.opts.Credential; errors.Is(err, syscall.EAGAIN) && cred != nil {
		err = fmt.Errorf("%w: the account %s is at its process limit (max_processes in the global hearth block; every process and thread of the account counts): see what runs as it (ps -L -u %d), or raise max_processes", err, safedir.Owner(cred.Uid), cred.Uid)
	}
	if err != nil {
		stdout.Read.Close()
		stderr.Read.Close()
		return nil, err
	}
	// the pid is the app's word: only a child of the fork server is taken,
	// or a hostile app could name any process (1: kill(-1)) for Caddy
	// to signal when it stops or recycles the worker
	return supervisor.Adopt(pid, t.pinned, stdout.Read, stderr.Read, p.logger)
}
