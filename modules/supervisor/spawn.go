package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/internal/keeper"
	"github.com/hearth-dev/hearth/modules/safedir"
)

// keeperConn is Caddy's side of the keeper: requests go out on conn; one
// goroutine reads the answers and the ends of processes.
type keeperConn struct {
	conn *os.File
	pid  int

	writeMu sync.Mutex
	closed  bool // conn is closed (under writeMu)

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan spawned   // requests waiting for their pid
	ends    map[int]chan keeper.Reply // started processes not yet ended
	gone    bool                      // the keeper ended; every waiter was told

	exited chan struct{} // closed once the keeper process has been reaped
	exit   string        // how it ended ("signal: killed")
}

// spawned is the keeper's answer to a request, with the channel that will
// receive the process's end (registered before the end can arrive).
type spawned struct {
	reply keeper.Reply
	end   <-chan keeper.Reply
}

var (
	keeperMu      sync.Mutex
	currentKeeper *keeperConn
)

// maxProcesses is the process limit of other accounts' processes (0:
// none); SetMaxProcesses changes it.
var maxProcesses atomic.Uint64

func init() { maxProcesses.Store(DefaultMaxProcesses) }

// DefaultMaxProcesses is the default of the hearth app's max_processes:
// at most this many processes and threads of an app's account (every
// process of that account counted, Hearth's or not) when it starts one
// more. Far above what a pool of Python workers, a Celery worker or a
// Node server uses; far below what makes the machine (its pid_max,
// threads-max, or the systemd unit's TasksMax) refuse Caddy a thread.
const DefaultMaxProcesses = 1024

// MinMaxProcesses is the least max_processes accepted: below it, an app
// would hardly start (a worker's own threads count).
const MinMaxProcesses = 128

// SetMaxProcesses sets the process limit that processes started from now
// on as an account other than Caddy's (and not root's) get: their
// RLIMIT_NPROC, soft and hard, set in the process itself once it runs as
// that account (internal/keeper's limited start); 0 sets none (they keep
// Caddy's). Running processes keep the limit they started with. It returns
// the setting it replaced.
func SetMaxProcesses(n uint64) (previous uint64) { return maxProcesses.Swap(n) }

// MaxProcesses is the limit SetMaxProcesses last set.
func MaxProcesses() uint64 { return maxProcesses.Load() }

// processLimit is the process limit c gets.
func processLimit(c Command) uint64 {
	if c.Credential == nil || c.Credential.Uid == 0 || int(c.Credential.Uid) == os.Geteuid() {
		// root is not held by RLIMIT_NPROC; Caddy's own account's count
		// would include Caddy's threads (and, under a login, the whole
		// session's processes), and a process of that account can end
		// Caddy anyway
		return 0
	}
	return maxProcesses.Load()
}

// errKeeperGone is the end of a process whose keeper ended before it did
// (the keeper was killed): the process was killed with it.
var errKeeperGone = errors.New("killed: Hearth's process keeper ended")

// theKeeper returns the running keeper, starting one if there is none or
// the last one ended.
func theKeeper(logger *zap.Logger) (*keeperConn, error) {
	keeperMu.Lock()
	defer keeperMu.Unlock()
	if k := currentKeeper; k != nil {
		k.mu.Lock()
		gone := k.gone
		k.mu.Unlock()
		if !gone {
			return k, nil
		}
	}
	k, err := launchKeeper(logger)
	if err != nil {
		return nil, err
	}
	currentKeeper = k
	return k, nil
}

// launchKeeper starts Caddy's binary as the keeper. It is started from a
// thread of its own that then ends: that thread is given, as ambient
// capabilities, those of CAP_SETUID, CAP_SETGID and CAP_KILL Caddy holds,
// so that a Caddy that is not root (the systemd unit's) keeps being able
// to start processes as another user and to end them. The keeper clears
// them for its own children as Caddy does (see internal/keeper/caps.go).
func launchKeeper(logger *zap.Logger) (*keeperConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("starting Hearth's process keeper: socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "hearth-keeper"), os.NewFile(uintptr(fds[1]), "hearth-keeper")
	defer theirs.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{keeper.Name}
	cmd.Env = []string{keeper.FDEnv + "=3"}
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // away from the terminal's signals
	started := make(chan error, 1)
	go OnDisposableThread(func() {
		if err := keeper.RaiseAmbientCaps(keeper.CapSetUID, keeper.CapSetGID, keeper.CapKill); err != nil {
			started <- err
			return
		}
		started <- cmd.Start()
	})
	if err := <-started; err != nil {
		mine.Close()
		return nil, fmt.Errorf("starting Hearth's process keeper (%s run as %s): %w", "/proc/self/exe", keeper.Name, err)
	}
	k := &keeperConn{conn: mine, pid: cmd.Process.Pid, pending: map[uint64]chan spawned{}, ends: map[int]chan keeper.Reply{}, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		k.exit = cmd.ProcessState.String()
		close(k.exited)
	}()
	go k.read(logger)
	return k, nil
}

// OnDisposableThread runs f on an OS thread of its own that ends with it,
// so that what f changes in the thread (capabilities, the session keyring,
// the signal mask, the priority) goes with it. The
// main thread never ends (and /proc/<pid>/status shows it as Caddy's):
// should this goroutine be on it, f runs from another one.
func OnDisposableThread(f func()) {
	runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
	if unix.Gettid() != unix.Getpid() {
		f()
		return
	}
	done := make(chan struct{})
	go func() { // not on the main thread: this goroutine holds it
		defer close(done)
		runtime.LockOSThread()
		f()
	}()
	<-done
	runtime.UnlockOSThread() // the main thread is kept, unchanged
}

// read delivers the keeper's messages until its socket closes, then
// tells every waiter that the keeper is gone and kills what it started.
func (k *keeperConn) read(logger *zap.Logger) {
	buf := make([]byte, keeper.PacketSize)
	var readErr error
	for {
		n, _, _, _, err := unix.Recvmsg(int(k.conn.Fd()), buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			readErr = err
			break
		}
		var r keeper.Reply
		if json.Unmarshal(buf[:n], &r) != nil {
			continue
		}
		k.mu.Lock()
		if r.ID != 0 {
			if ch := k.pending[r.ID]; ch != nil {
				delete(k.pending, r.ID)
				answer := spawned{reply: r}
				if r.Pid > 0 {
					end := make(chan keeper.Reply, 1)
					k.ends[r.Pid], answer.end = end, end
				}
				ch <- answer
			} else if r.Pid > 1 { // an answer given up on: nobody would supervise it
				_ = syscall.Kill(-r.Pid, syscall.SIGKILL)
			}
		} else if ch := k.ends[r.Pid]; ch != nil {
			delete(k.ends, r.Pid)
			ch <- r
		}
		k.mu.Unlock()
	}
	k.mu.Lock()
	k.gone = true
	for id, ch := range k.pending {
		ch <- spawned{reply: keeper.Reply{ID: id, Errno: int(unix.EPIPE), Err: "Hearth's process keeper ended"}}
	}
	for pid, ch := range k.ends {
		// its parent-death signal has killed it; its group too, now
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		ch <- keeper.Reply{Pid: pid, Status: -1}
	}
	killed := len(k.ends)
	k.pending, k.ends = nil, nil
	k.mu.Unlock()
	k.writeMu.Lock() // no send is using the descriptor's number, and none will
	k.closed = true
	k.conn.Close()
	k.writeMu.Unlock()
	exit := "still running"
	select {
	case <-k.exited:
		exit = k.exit
	case <-time.After(time.Second):
	}
	logger.Error("Hearth's process keeper ended; the processes it had started were killed and are replaced through a new keeper",
		zap.Int("keeper_pid", k.pid), zap.String("exit", exit), zap.Int("processes", killed), zap.NamedError("read_error", readErr))
}

// lastOfEach keeps the last variable of each name in env, where it is:
// the child reads its environment from the start (glibc and Python take
// the first of two), so without this a variable added after the user's
// would lose to it.
func lastOfEach(env []string) []string {
	seen := make(map[string]bool, len(env))
	out := make([]string, len(env))
	n := len(env)
	for i := len(env) - 1; i >= 0; i-- {
		name, _, _ := strings.Cut(env[i], "=")
		if !seen[name] {
			seen[name] = true
			n--
			out[n] = env[i]
		}
	}
	return out[n:]
}

// spawn has the keeper start c with stdout, stderr and c.ExtraFiles as its
// fds 1, 2, 3, …; it returns the pid and a channel that receives the
// process's end.
func spawn(c Command, stdout, stderr *os.File, logger *zap.Logger) (int, <-chan keeper.Reply, error) {
	path := c.Path
	if lp := exec.Command(c.Path); lp.Err != nil { // a bare name is looked up in Caddy's PATH, as os/exec does
		return 0, nil, lp.Err
	} else {
		path = lp.Path
	}
	k, err := theKeeper(logger)
	if err != nil {
		return 0, nil, err
	}
	files := append([]*os.File{stdout, stderr}, c.ExtraFiles...)
	k.mu.Lock()
	if k.gone {
		k.mu.Unlock()
		return 0, nil, errors.New("Hearth's process keeper ended; try again")
	}
	k.nextID++
	limit := processLimit(c)
	req := keeper.Request{ID: k.nextID, Path: path, Argv: append([]string{c.Path}, c.Args...), Dir: c.Dir, Env: lastOfEach(c.Env), Credential: c.Credential, Umask: c.Umask, MaxProcesses: limit}
	answer := make(chan spawned, 1)
	k.pending[req.ID] = answer
	k.mu.Unlock()
	if err := k.send(req, files); err != nil {
		k.mu.Lock()
		delete(k.pending, req.ID)
		k.mu.Unlock()
		return 0, nil, fmt.Errorf("asking Hearth's process keeper to start %s: %w", path, err)
	}
	var a spawned
	select {
	case a = <-answer:
	case <-time.After(keeperAnswerWait):
		k.mu.Lock()
		delete(k.pending, req.ID) // should it come, its process is killed
		k.mu.Unlock()
		return 0, nil, fmt.Errorf("Hearth's process keeper (pid %d) did not start %s within %s", k.pid, path, keeperAnswerWait)
	}
	if r := a.reply; r.Pid <= 0 {
		if r.Errno != 0 && r.Err == syscall.Errno(r.Errno).Error() {
			err := error(&os.PathError{Op: "fork/exec", Path: path, Err: syscall.Errno(r.Errno)})
			if r.Errno == int(syscall.ENOENT) && c.Dir != "" {
				if _, serr := os.Stat(c.Dir); errors.Is(serr, fs.ErrNotExist) { // the keeper's chdir, not the program, failed
					err = fmt.Errorf("cannot start %s: its directory %s does not exist; set `dir` to one that does", path, c.Dir)
				}
			}
			if limit != 0 && r.Errno == int(syscall.EAGAIN) {
				err = fmt.Errorf("%w: the account %s has more than max_processes (%d) processes and threads; "+
					"see what runs as it (ps -L -u %d), or raise max_processes in the global hearth block", err, safedir.Owner(c.Credential.Uid), limit, c.Credential.Uid)
			}
			return 0, nil, err
		}
		return 0, nil, errors.New(r.Err)
	}
	return a.reply.Pid, a.end, nil
}

// keeperAnswerWait bounds the wait for the keeper's answer to a request.
const keeperAnswerWait = time.Minute

// send writes req with files as the child's descriptors 1, 2, 3, ….
func (k *keeperConn) send(req keeper.Request, files []*os.File) error {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	if k.closed {
		return errors.New("Hearth's process keeper ended")
	}
	err := keeper.WriteRequest(int(k.conn.Fd()), req, fds)
	runtime.KeepAlive(files)
	return err
}

// endError turns a process's end into an error like os/exec's ("exit
// status 1", "signal: killed"); nil for a clean exit.
// ExitError is the end of a process that exited with a status other
// than 0.
type ExitError struct {
	// Code is the exit status.
	Code int
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

func endError(r keeper.Reply) error {
	if r.Status == -1 {
		return errKeeperGone
	}
	ws := syscall.WaitStatus(r.Status)
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	case ws.Exited():
		return &ExitError{Code: ws.ExitStatus()}
	case ws.Signaled():
		s := "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			s += " (core dumped)"
		}
		return errors.New(s)
	}
	return fmt.Errorf("ended with wait status %#x", r.Status)
}
