package supervisor

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The keeper. Every process Hearth starts (workers, preloading templates,
// before_start commands, process upstreams) is forked by one small
// process, the keeper: Caddy's own binary started again under the name
// hearth-keeper, with one end of a socket pair as its fd 3. The keeper is
// a child subreaper (PR_SET_CHILD_SUBREAPER): a process whose parent dies
// is handed to it rather than to init, so everything descended from what
// Hearth started (a shell's children, a daemon that forked twice, a
// template's workers) stays in its tree whatever process group or session
// it moves to. When Caddy ends, however it ends (exit, panic, SIGKILL),
// its end of the socket closes and the keeper kills its whole tree with
// SIGKILL, waits until no child is left, and exits; nothing Hearth
// started outlives Caddy.
//
// Why not Caddy itself: a parent-death signal reaches only direct
// children; Caddy as a subreaper would lose the tree to init at its own
// death; a cgroup needs a delegated hierarchy that a `caddy run` from a
// terminal does not have. The keeper costs one process per Caddy.
//
// The keeper disregards SIGINT, SIGTERM and SIGHUP (Ctrl-C in a terminal,
// systemd's stop): Caddy stops its processes gracefully itself, and the
// keeper only acts once Caddy is gone.

// keeperName is the keeper's argv[0]; keeperFDEnv, set to "3", says that
// fd 3 is its socket. Both must hold for a Caddy binary to act as a keeper.
const (
	keeperName  = "hearth-keeper"
	keeperFDEnv = "HEARTH_KEEPER_FD"
)

func init() {
	if len(os.Args) == 1 && os.Args[0] == keeperName && os.Getenv(keeperFDEnv) == "3" {
		if secureExecution() {
			// a Caddy binary given file capabilities or setuid, run by
			// someone else as a keeper, would start anything as anyone
			fmt.Fprintln(os.Stderr, "hearth-keeper: refusing to run from a setuid, setgid or file-capability execution")
			os.Exit(1)
		}
		os.Exit(runKeeper(3))
	}
}

// secureExecution reports whether the kernel flagged this execution as
// secure (AT_SECURE: setuid, setgid or file capabilities), or cannot say.
func secureExecution() bool {
	auxv, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return true
	}
	const atSecure = 23
	for i := 0; i+16 <= len(auxv); i += 16 {
		key := binary.NativeEndian.Uint64(auxv[i:])
		if key == atSecure {
			return binary.NativeEndian.Uint64(auxv[i+8:]) != 0
		}
	}
	return true
}

// keeperRequest asks the keeper to start a process. The descriptors that
// become its fds 1, 2, 3, … travel with the request's first packet.
type keeperRequest struct {
	ID         uint64              `json:"id"`
	Path       string              `json:"path"`
	Argv       []string            `json:"argv"`
	Dir        string              `json:"dir,omitempty"`
	Env        []string            `json:"env"`
	Credential *syscall.Credential `json:"credential,omitempty"`
	Umask      uint32              `json:"umask"`
	Files      int                 `json:"files"`
}

// keeperReply answers a request (ID set: Pid, or Errno/Err when the start
// failed) or reports that a process the keeper started has ended (ID 0:
// Pid and its wait Status).
type keeperReply struct {
	ID     uint64 `json:"id,omitempty"`
	Pid    int    `json:"pid,omitempty"`
	Errno  int    `json:"errno,omitempty"`
	Err    string `json:"err,omitempty"`
	Status int    `json:"status,omitempty"`
}

// keeperPacket bounds one packet on the keeper's socket; a longer request
// (a large environment, many descriptors) is sent in several, each
// starting with a byte that says whether more follow.
const keeperPacket = 32 << 10

// The first byte of every packet.
const (
	packetMore  = 1 << 0 // more packets of this request follow
	packetFirst = 1 << 1 // the first packet of a request
)

// keeperPacketFDs bounds the descriptors sent with one packet (the kernel
// takes at most 253).
const keeperPacketFDs = 200

type keeper struct {
	conn int

	mu      sync.Mutex   // held from a fork until its pid is known
	started map[int]bool // processes started on request, not yet reaped
	writeMu sync.Mutex
}

// runKeeper serves Caddy on the socket at fd until Caddy is gone, then
// ends every process descended from the keeper.
func runKeeper(fd int) int {
	// A child's parent-death signal fires when the thread that forked it
	// ends: every fork happens on this thread, which lives as long as the
	// keeper.
	runtime.LockOSThread()
	// the socket to Caddy reaches no child, whatever else init did
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		fmt.Fprintf(os.Stderr, "hearth-keeper: fd %d is not Caddy's socket: %v\n", fd, err)
		return 1
	}
	// Caught, not ignored: an ignored signal stays ignored across execve,
	// a caught one is reset to its default, so every child starts with
	// default dispositions (even when Caddy was started with some ignored,
	// under nohup for example).
	stops := make(chan os.Signal, 8)
	signal.Notify(stops, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM)
	go func() {
		for range stops {
		}
	}()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "hearth-keeper: becoming the subreaper of Hearth's processes: %v\n", err)
		return 1
	}
	k := &keeper{conn: fd, started: map[int]bool{}}
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	go func() {
		for range children {
			k.reap()
		}
	}()
	requests := make(chan receivedRequest)
	go k.read(requests)
	for r := range requests {
		k.start(r)
	}
	signal.Stop(children) // endAll reaps by itself: a listed pid stays its until then
	k.endAll()
	return 0
}

type receivedRequest struct {
	req   keeperRequest
	files []int
}

// read passes Caddy's requests to the main loop; it closes requests when
// Caddy's end of the socket is closed.
func (k *keeper) read(requests chan<- receivedRequest) {
	defer close(requests)
	buf := make([]byte, keeperPacket+1)
	oob := make([]byte, unix.CmsgSpace(4*keeperPacketFDs))
	var body []byte
	var files []int
	truncated := false
	for {
		n, oobn, flags, _, err := unix.Recvmsg(k.conn, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return // Caddy is gone
		}
		if buf[0]&packetFirst != 0 { // a new request: drop what is left of one cut short
			for _, f := range files {
				unix.Close(f)
			}
			body, files, truncated = nil, nil, false
		}
		if flags&unix.MSG_CTRUNC != 0 {
			truncated = true // descriptors lost: the request cannot be served
		}
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				files = append(files, fds...)
			}
		}
		body = append(body, buf[1:n]...)
		if buf[0]&packetMore != 0 {
			continue // more packets follow
		}
		var r receivedRequest
		if err := json.Unmarshal(body, &r.req); err != nil || r.req.Files != len(files) || truncated {
			for _, f := range files {
				unix.Close(f)
			}
			k.send(keeperReply{ID: r.req.ID, Err: "malformed request to the process keeper", Errno: int(unix.EINVAL)})
		} else {
			r.files = files
			requests <- r
		}
		body, files = nil, nil
	}
}

// start forks and executes one requested process: its own process group,
// stdin from /dev/null, the request's descriptors as 1, 2, 3, …, its
// umask and credential, and SIGKILL should the keeper die.
func (k *keeper) start(r receivedRequest) {
	defer func() {
		for _, f := range r.files {
			unix.Close(f)
		}
	}()
	devnull, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		k.send(keeperReply{ID: r.req.ID, Errno: int(err.(unix.Errno)), Err: "opening /dev/null: " + err.Error()})
		return
	}
	defer unix.Close(devnull)
	if capsErr != nil {
		k.send(keeperReply{ID: r.req.ID, Errno: int(unix.EPERM), Err: capsErr.Error()})
		return
	}
	files := []uintptr{uintptr(devnull)}
	for _, f := range r.files {
		files = append(files, uintptr(f))
	}
	umask := r.req.Umask
	if umask == 0 {
		umask = DefaultUmask
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	unix.Umask(int(umask)) // the keeper creates no files; its children inherit it
	pid, err := syscall.ForkExec(r.req.Path, r.req.Argv, &syscall.ProcAttr{
		Dir:   r.req.Dir,
		Env:   r.req.Env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setpgid:    true,            // its own group: signals reach it and its children only
			Pdeathsig:  syscall.SIGKILL, // should the keeper itself be killed
			Credential: r.req.Credential,
		},
	})
	if err != nil {
		reply := keeperReply{ID: r.req.ID, Err: err.Error(), Errno: int(unix.EINVAL)}
		if errno, ok := err.(syscall.Errno); ok {
			reply.Errno = int(errno)
		}
		k.send(reply)
		return
	}
	k.started[pid] = true
	k.send(keeperReply{ID: r.req.ID, Pid: pid})
}

// reap collects every ended child, reporting those Caddy started. A child
// handed to the keeper as an orphan is reaped silently.
func (k *keeper) reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		k.mu.Lock() // a fork in progress has recorded its pid once this is ours
		if k.started[pid] {
			delete(k.started, pid)
			k.send(keeperReply{Pid: pid, Status: int(status)})
		}
		k.mu.Unlock()
	}
}

func (k *keeper) send(r keeperReply) {
	data, _ := json.Marshal(r)
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	_ = unix.Sendmsg(k.conn, data, nil, nil, 0) // fails only once Caddy is gone
}

// endAll kills every process descended from the keeper, group by group,
// until none is left: a child's group first (a shell and what it started),
// then whatever its death handed to the keeper, for at most keeperEndWait.
func (k *keeper) endAll() {
	deadline := time.Now().Add(keeperEndWait)
	for {
		kids := childPIDs()
		if len(kids) == 0 {
			return
		}
		for _, pid := range kids {
			// pid is the keeper's child and not yet reaped: its number is
			// still its own, and a group numbered pid can only be its own
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		k.reap()
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "hearth-keeper: processes %v did not end within %s of SIGKILL\n", kids, keeperEndWait)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keeperEndWait bounds how long the keeper, once Caddy is gone, waits for
// the processes it killed (one in uninterruptible sleep cannot die at once).
const keeperEndWait = 4 * time.Second

// childPIDs lists the keeper's children, zombies included: every thread's
// /proc children list (an orphan is handed to any thread of its reaper),
// else a scan of /proc for processes whose parent is the keeper.
func childPIDs() []int {
	var pids []int
	lists, _ := filepath.Glob("/proc/self/task/*/children")
	for _, list := range lists {
		data, err := os.ReadFile(list)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(lists) > 0 {
		return pids
	}
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parentPID(pid) == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// parentPID reads a process's parent from /proc/<pid>/stat (0 if unknown).
func parentPID(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}
