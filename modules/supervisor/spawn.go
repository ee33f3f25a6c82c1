package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/internal/keeper"
	"github.com/hearth-dev/hearth/modules/safedir"
)

// keeperConn is Caddy's side of a keeper: requests go out on conn; one
// goroutine reads the answers and the ends of processes.
type keeperConn struct {
	conn *os.File
	pid  int
	// limit is the RLIMIT_NPROC the keeper gives what it starts (0: it
	// passes on Caddy's own)
	limit uint64

	writeMu sync.Mutex
	closed  bool // conn is closed (under writeMu)
	retired bool // no request may follow: the keeper ends with its last process (under writeMu)

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan spawned   // requests waiting for their pid
	ends    map[int]chan keeper.Reply // started processes not yet ended
	gone    bool                      // the keeper ended; every waiter was told

	exited chan struct{} // closed once the keeper process has been reaped
	exit   string        // how it ended ("signal: killed")
}

func (k *keeperConn) isRetired() bool {
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	return k.retired
}

// spawned is the keeper's answer to a request, with the channel that will
// receive the process's end (registered before the end can arrive).
type spawned struct {
	reply keeper.Reply
	end   <-chan keeper.Reply
}

// The keepers, one per process limit in use: 0 for processes that run as
// Caddy's own account (or root), maxProcesses for those of other accounts.
var (
	keeperMu sync.Mutex
	keepers  = map[uint64]*keeperConn{}
	// maxProcesses is the process limit of other accounts' processes (0:
	// none); SetMaxProcesses changes it
	maxProcesses uint64 = DefaultMaxProcesses
)

// DefaultMaxProcesses is the default of the hearth app's max_processes:
// at most this many processes and threads of an app's account (every
// process of that account counted, Hearth's or not) when it starts one
// more. Far above what a pool of Python workers, a Celery worker or a
// Node server uses; far below what makes the machine (its pid_max,
// threads-max, or the systemd unit's TasksMax) refuse Caddy a thread.
const DefaultMaxProcesses = 1024

// MinMaxProcesses is the least max_processes accepted: a keeper that is
// not root forks as Caddy's account, whose own threads count against the
// limit until the child has switched to the app's account.
const MinMaxProcesses = 128

// SetMaxProcesses sets the process limit (RLIMIT_NPROC) that processes
// started from now on as an account other than Caddy's (and not root's)
// get: the most processes and threads their account may have when one of
// them starts another; 0 sets none (they keep Caddy's). Running processes
// keep the limit they started with. It returns the setting it replaced.
// A keeper of a limit no longer in use is retired: it ends once the
// processes it started have ended.
func SetMaxProcesses(n uint64) (previous uint64) {
	keeperMu.Lock()
	defer keeperMu.Unlock()
	previous, maxProcesses = maxProcesses, n
	for limit, k := range keepers {
		if limit != 0 && limit != n {
			delete(keepers, limit)
			k.retire()
		}
	}
	return previous
}

// MaxProcesses is the limit SetMaxProcesses last set.
func MaxProcesses() uint64 {
	keeperMu.Lock()
	defer keeperMu.Unlock()
	return maxProcesses
}

// processLimit is the limit c's keeper gives it.
func processLimit(c Command) uint64 {
	if c.Credential == nil || c.Credential.Uid == 0 || int(c.Credential.Uid) == os.Geteuid() {
		// root is not held by RLIMIT_NPROC; Caddy's own account's count
		// would include Caddy's threads (and, under a login, the whole
		// session's processes), and a process of that account can end
		// Caddy anyway
		return 0
	}
	keeperMu.Lock()
	defer keeperMu.Unlock()
	return maxProcesses
}

// errKeeperGone is the end of a process whose keeper ended before it did
// (the keeper was killed): the process was killed with it.
var errKeeperGone = errors.New("killed: Hearth's process keeper ended")

// errKeeperRetired is a request to a keeper retired since it was chosen.
var errKeeperRetired = errors.New("the process keeper was retired")

// theKeeper returns the running keeper of limit, starting one if there is
// none or the last one ended.
func theKeeper(limit uint64, logger *zap.Logger) (*keeperConn, error) {
	keeperMu.Lock()
	defer keeperMu.Unlock()
	if k := keepers[limit]; k != nil {
		k.mu.Lock()
		gone := k.gone
		k.mu.Unlock()
		if !gone {
			return k, nil
		}
	}
	k, err := launchKeeper(limit, logger)
	if err != nil {
		return nil, err
	}
	keepers[limit] = k
	return k, nil
}

// launchKeeper starts Caddy's binary as the keeper. It is started from a
// thread of its own that then ends: that thread is given, as ambient
// capabilities, those of CAP_SETUID, CAP_SETGID and CAP_KILL Caddy holds,
// so that a Caddy that is not root (the systemd unit's) keeps being able
// to start processes as another user and to end them. The keeper clears
// them for its own children as Caddy does (see internal/keeper/caps.go).
// A limit other than 0 is the RLIMIT_NPROC the keeper sets for itself and
// so for everything it starts.
func launchKeeper(limit uint64, logger *zap.Logger) (*keeperConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("starting Hearth's process keeper: socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "hearth-keeper"), os.NewFile(uintptr(fds[1]), "hearth-keeper")
	defer theirs.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{keeper.Name}
	cmd.Env = []string{keeper.FDEnv + "=3"}
	if limit != 0 {
		cmd.Env = append(cmd.Env, keeper.MaxProcessesEnv+"="+strconv.FormatUint(limit, 10))
	}
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // away from the terminal's signals
	started := make(chan error, 1)
	go onDisposableThread(func() {
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
	k := &keeperConn{conn: mine, pid: cmd.Process.Pid, limit: limit, pending: map[uint64]chan spawned{}, ends: map[int]chan keeper.Reply{}, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		k.exit = cmd.ProcessState.String()
		close(k.exited)
	}()
	go k.read(logger)
	return k, nil
}

// retire tells the keeper that no request follows; it ends once what it
// started has ended, and read then ends quietly.
func (k *keeperConn) retire() {
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	if k.closed || k.retired {
		return
	}
	k.retired = true
	_ = keeper.WriteRequest(int(k.conn.Fd()), keeper.Request{Retire: true}, nil)
}

// onDisposableThread runs f on an OS thread of its own that ends with it,
// so that what f changes in the thread (capabilities) goes with it. The
// main thread never ends (and /proc/<pid>/status shows it as Caddy's):
// should this goroutine be on it, f runs from another one.
func onDisposableThread(f func()) {
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
	if k.isRetired() && killed == 0 && exit == "exit status 0" {
		logger.Debug("a retired process keeper ended with the last process it had started", zap.Int("keeper_pid", k.pid), zap.Uint64("max_processes", k.limit))
		return
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
	limit := processLimit(c)
	for {
		pid, end, err := spawnThrough(limit, path, c, stdout, stderr, logger)
		if err == errKeeperRetired {
			continue // SetMaxProcesses retired it after it was chosen: the next is another
		}
		if limit != 0 && errors.Is(err, syscall.EAGAIN) {
			err = fmt.Errorf("%w: the account %s has max_processes (%d) processes and threads or more; "+
				"see what runs as it (ps -L -u %d), or raise max_processes in the global hearth block", err, safedir.Owner(c.Credential.Uid), limit, c.Credential.Uid)
		}
		return pid, end, err
	}
}

// spawnThrough is spawn through the keeper of limit.
func spawnThrough(limit uint64, path string, c Command, stdout, stderr *os.File, logger *zap.Logger) (int, <-chan keeper.Reply, error) {
	k, err := theKeeper(limit, logger)
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
	req := keeper.Request{ID: k.nextID, Path: path, Argv: append([]string{c.Path}, c.Args...), Dir: c.Dir, Env: lastOfEach(c.Env), Credential: c.Credential, Umask: c.Umask}
	answer := make(chan spawned, 1)
	k.pending[req.ID] = answer
	k.mu.Unlock()
	if err := k.send(req, files); err != nil {
		k.mu.Lock()
		delete(k.pending, req.ID)
		k.mu.Unlock()
		if err == errKeeperRetired {
			return 0, nil, err
		}
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
			return 0, nil, &os.PathError{Op: "fork/exec", Path: path, Err: syscall.Errno(r.Errno)}
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
	if k.retired {
		return errKeeperRetired
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
