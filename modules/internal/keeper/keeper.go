// Package keeper is Hearth's process keeper. Every process Hearth starts
// (workers, preloading templates, before_start commands, process
// upstreams, services, job runs) is forked by one small process, the
// keeper: Caddy's own binary started again under the name hearth-keeper,
// with one end of a socket pair as its fd 3. The keeper is a child
// subreaper (PR_SET_CHILD_SUBREAPER): a process whose parent dies is
// handed to it rather than to init, so everything descended from what
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
//
// The keeper acts from this package's init function and never returns
// from it. Go initializes packages in import-path order, each once all it
// imports is initialized: as this package imports only a few packages of
// the standard library (not even golang.org/x/sys), the keeper takes over
// after ~90 small initializers and before Caddy's ~330 others (Caddy, its
// modules, net/http, zap, the templates module's syntax-highlighting
// tables): 11 ms of CPU and 0.2 MB of heap at start instead of 70 ms and
// 9 MB, and 17 MB resident instead of 43 MB, most of the difference pages
// of the binary those initializers touch. An import of anything that
// depends on Caddy would undo this without breaking anything else:
// tests/keeper_test.go checks the order in the built binary.
//
// The package also holds what keeps capabilities from the children
// (caps.go), the protocol on the keeper's socket (protocol.go), and the
// first step of a start under a process limit, which the same early init
// makes cheap (limited.go); Caddy's side of it is in the supervisor
// package (spawn.go).
package keeper

import (
	"encoding/json"
	"errors"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Name is the keeper's argv[0]; FDEnv, set to "3", says that fd 3 is its
// socket. Both must hold for a Caddy binary to act as a keeper.
const (
	Name  = "hearth-keeper"
	FDEnv = "HEARTH_KEEPER_FD"
)

func init() {
	// in every process of Caddy's binary: none of its children may
	// inherit capabilities (caps.go)
	dropInheritableCaps()
	capsErr = checkNoInheritableCaps()
	if len(os.Args) > limitedArgs+1 && os.Args[0] == LimitedName {
		os.Exit(runLimited(os.Args[1:])) // a step of a limited start (limited.go)
	}
	if len(os.Args) == 1 && os.Args[0] == Name && os.Getenv(FDEnv) == "3" {
		if secureExecution() {
			// a Caddy binary given file capabilities or setuid, run by
			// someone else as a keeper, would start anything as anyone
			os.Stderr.WriteString("hearth-keeper: refusing to run from a setuid, setgid or file-capability execution\n")
			os.Exit(1)
		}
		// what Caddy holds without close-on-exec came along: pass it on to no child
		MarkInheritedCloseOnExec()
		os.Exit(serve(3))
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
	// entries of two words (of 4 bytes on 32-bit systems), native byte order
	const size = int(unsafe.Sizeof(uintptr(0)))
	word := func(b []byte) uintptr { return *(*uintptr)(unsafe.Pointer(&b[0])) }
	for i := 0; i+2*size <= len(auxv); i += 2 * size {
		if word(auxv[i:]) == atSecure {
			return word(auxv[i+size:]) != 0
		}
	}
	return true
}

type keeper struct {
	conn int

	mu      sync.Mutex   // held from a fork until its pid is known
	started map[int]bool // processes started on request, not yet reaped
	// stepping are the steps of starts under a limit not yet answered, and
	// steppedEnds the wait statuses of those reaped meanwhile
	stepping    map[int]bool
	steppedEnds map[int]int
	steps       stepSlots            // one step at a time per account
	resume      chan receivedRequest // starts whose account's step slot came free
	done        chan struct{}        // closed when the main loop ends
	writeMu     sync.Mutex
}

// stepSlots lets one step run at a time per account (the steps' own
// threads count against the account's limit they check: a pool starting
// its workers at once), and queues the starts of an account whose step
// runs: never the keeper's main loop, which serves every account, so a
// step one app holds up (stopped, or its report held open) delays that
// app's starts only.
type stepSlots struct {
	mu      sync.Mutex
	busy    map[uint32]bool
	waiting map[uint32][]receivedRequest
}

// take takes uid's slot for r, or queues r (false) while it is busy.
func (s *stepSlots) take(uid uint32, r receivedRequest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[uid] {
		if s.waiting == nil {
			s.waiting = map[uint32][]receivedRequest{}
		}
		s.waiting[uid] = append(s.waiting[uid], r)
		return false
	}
	if s.busy == nil {
		s.busy = map[uint32]bool{}
	}
	s.busy[uid] = true
	return true
}

// give gives uid's slot back: to the next start queued for it (ok), which
// then holds it, or free.
func (s *stepSlots) give(uid uint32) (next receivedRequest, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.waiting[uid]; len(q) > 0 {
		next, s.waiting[uid] = q[0], q[1:]
		if len(s.waiting[uid]) == 0 {
			delete(s.waiting, uid)
		}
		return next, true
	}
	delete(s.busy, uid)
	return receivedRequest{}, false
}

// stepAccount is the account a start runs as, whose step slot it takes.
func stepAccount(r receivedRequest) uint32 {
	if c := r.req.Credential; c != nil {
		return c.Uid
	}
	return uint32(os.Getuid())
}

// giveStep gives back the step slot of uid: a start queued for it is
// passed to the main loop, which runs every fork (see serve).
func (k *keeper) giveStep(uid uint32) {
	next, ok := k.steps.give(uid)
	if !ok {
		return
	}
	next.holdsStep = true
	select {
	case k.resume <- next:
	case <-k.done:
		for _, f := range next.files {
			syscall.Close(f)
		}
	}
}

// serve serves Caddy on the socket at fd until Caddy is gone, then
// ends every process descended from the keeper.
func serve(fd int) int {
	// A child's parent-death signal fires when the thread that forked it
	// ends: every fork happens on this thread, which lives as long as the
	// keeper.
	runtime.LockOSThread()
	// named as in ps's command column in top and /proc/<pid>/comm too
	// (started as /proc/self/exe, it would be "exe"); init runs on the
	// main thread, whose name is the process's
	name := []byte(Name + "\x00")
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0)
	// what the keeper shares with the session Caddy was started in, its
	// children must not (session.go)
	if err := dropTerminal(); err != nil {
		os.Stderr.WriteString("hearth-keeper: letting go of the terminal Caddy was started from: " + err.Error() + "\n")
		return 1
	}
	if err := LeaveSession(); err != nil {
		os.Stderr.WriteString("hearth-keeper: " + err.Error() + "\n")
		return 1
	}
	// the socket to Caddy reaches no child, whatever else init did
	if _, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, syscall.FD_CLOEXEC); e != 0 {
		os.Stderr.WriteString("hearth-keeper: fd " + strconv.Itoa(fd) + " is not Caddy's socket: " + e.Error() + "\n")
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
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		os.Stderr.WriteString("hearth-keeper: becoming the subreaper of Hearth's processes: " + e.Error() + "\n")
		return 1
	}
	k := &keeper{conn: fd, started: map[int]bool{}, stepping: map[int]bool{}, steppedEnds: map[int]int{},
		resume: make(chan receivedRequest), done: make(chan struct{})}
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	go func() {
		for range children {
			k.reap()
		}
	}()
	requests := make(chan receivedRequest)
	go k.read(requests)
	for open := true; open; {
		select {
		case r, ok := <-requests:
			if open = ok; ok {
				k.start(r)
			}
		case r := <-k.resume:
			k.start(r)
		}
	}
	close(k.done)
	signal.Stop(children) // endAll reaps by itself: a listed pid stays its until then
	k.endAll()
	return 0
}

type receivedRequest struct {
	req   Request
	files []int
	// holdsStep: a start taken from its account's queue, which holds its
	// step slot already (stepSlots)
	holdsStep bool
}

// read passes Caddy's requests to the main loop; it closes requests when
// Caddy's end of the socket is closed.
func (k *keeper) read(requests chan<- receivedRequest) {
	defer close(requests)
	buf := make([]byte, PacketSize)
	oob := make([]byte, syscall.CmsgSpace(4*packetFDs))
	var body []byte
	var files []int
	truncated := false
	for {
		n, oobn, flags, _, err := syscall.Recvmsg(k.conn, buf, oob, syscall.MSG_CMSG_CLOEXEC)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return // Caddy is gone
		}
		if buf[0]&packetFirst != 0 { // a new request: drop what is left of one cut short
			for _, f := range files {
				syscall.Close(f)
			}
			body, files, truncated = nil, nil, false
		}
		if flags&(syscall.MSG_CTRUNC|syscall.MSG_TRUNC) != 0 {
			truncated = true // descriptors or bytes lost: the request cannot be served
		}
		if oobn > 0 {
			msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := syscall.ParseUnixRights(&m)
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
				syscall.Close(f)
			}
			k.send(Reply{ID: r.req.ID, Err: "malformed request to the process keeper", Errno: int(syscall.EINVAL)})
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
	// one step at a time per account: a start under a limit whose
	// account's step runs waits in its queue (with its descriptors)
	limited, handedOff := r.req.MaxProcesses > 0, false
	if limited && !r.holdsStep && !k.steps.take(stepAccount(r), r) {
		return
	}
	if limited {
		defer func() {
			if !handedOff {
				// on a goroutine: this is the main loop, which the next
				// start queued is handed to (k.resume)
				go k.giveStep(stepAccount(r))
			}
		}()
	}
	defer func() {
		for _, f := range r.files {
			syscall.Close(f)
		}
	}()
	devnull, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		k.send(Reply{ID: r.req.ID, Errno: int(err.(syscall.Errno)), Err: "opening /dev/null: " + err.Error()})
		return
	}
	defer syscall.Close(devnull)
	if capsErr != nil {
		k.send(Reply{ID: r.req.ID, Errno: int(syscall.EPERM), Err: capsErr.Error()})
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
	syscall.Umask(int(umask)) // the keeper creates no files; its children inherit it
	// a session keyring of its own: what one app's process keeps there,
	// another app's (another account's) does not possess
	if err := LeaveSessionKeyring(); err != nil {
		k.send(Reply{ID: r.req.ID, Errno: int(syscall.EDQUOT), Err: err.Error()})
		return
	}
	path, argv := r.req.Path, r.req.Argv
	report, stepsEnd := -1, -1 // a limited start's report pipe
	if r.req.MaxProcesses > 0 {
		var p [2]int
		if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
			k.send(Reply{ID: r.req.ID, Errno: int(err.(syscall.Errno)), Err: "a pipe for a start under max_processes: " + err.Error()})
			return
		}
		report, stepsEnd = p[0], p[1]
		files = append(files, uintptr(stepsEnd)) // the step's fd len(files)-1
		path, argv = "/proc/self/exe", limitedArgv(r.req.MaxProcesses, len(files)-1, r.req.Path, r.req.Argv)
	}
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Dir:   r.req.Dir,
		Env:   r.req.Env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setpgid:    true,            // its own group: signals reach it and its children only
			Pdeathsig:  syscall.SIGKILL, // should the keeper itself be killed
			Credential: r.req.Credential,
		},
	})
	if report >= 0 {
		syscall.Close(stepsEnd) // the step holds its own copy until it executes the program
		if err == nil {
			// answered once the step has executed the program or failed,
			// without holding up other starts or the reports of ends
			k.stepping[pid] = true
			handedOff = true
			go k.awaitStep(r.req.ID, pid, report, stepAccount(r))
			return
		}
		syscall.Close(report)
		if err == syscall.EACCES {
			err = errors.New("permission denied: the account cannot enter the directory (" + r.req.Dir + ") or cannot execute Caddy's binary, the first step of a start under max_processes (" + executable() + "): make both reachable by that account, or set max_processes off")
		}
	}
	if err != nil {
		k.sendError(r.req.ID, err)
		return
	}
	k.started[pid] = true
	k.send(Reply{ID: r.req.ID, Pid: pid})
}

// awaitStep answers the request id for a start under a limit once its step
// (pid) has executed the program, or has failed, or is killed for hanging
// (limited.go).
func (k *keeper) awaitStep(id uint64, pid, report int, uid uint32) {
	defer k.giveStep(uid)
	err := awaitLimited(report, time.Now().Add(limitedStartWait)) // (past it, the step is killed below)
	syscall.Close(report)
	if err == syscall.ETIMEDOUT {
		err = errors.New("the first step of a start under max_processes (" + LimitedName + ") did not execute the program within " + limitedStartWait.String())
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.stepping, pid)
	status, ended := k.steppedEnds[pid]
	delete(k.steppedEnds, pid)
	if err != nil {
		if !ended {
			// not reaped (reap waits under k.mu): the pid is still the
			// step's own, and its group too
			_ = syscall.Kill(-pid, syscall.SIGKILL) // reap then collects it unreported
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		k.sendError(id, err)
		return
	}
	k.send(Reply{ID: id, Pid: pid})
	if ended {
		k.send(Reply{Pid: pid, Status: status})
	} else {
		k.started[pid] = true
	}
}

// executable names Caddy's binary, for messages.
func executable() string {
	self, err := os.Executable()
	if err != nil {
		return "/proc/self/exe"
	}
	return self
}

// sendError answers the request id with err.
func (k *keeper) sendError(id uint64, err error) {
	reply := Reply{ID: id, Err: err.Error(), Errno: int(syscall.EINVAL)}
	if errno, ok := err.(syscall.Errno); ok {
		reply.Errno = int(errno)
	}
	k.send(reply)
}

// reap collects every ended child, reporting those Caddy started. A child
// handed to the keeper as an orphan is reaped silently.
func (k *keeper) reap() {
	for {
		var status syscall.WaitStatus
		// under k.mu (WNOHANG does not block): a fork in progress has
		// recorded its pid once this is ours, and a pid not yet reaped
		// can be signalled under it without reaching another process
		k.mu.Lock()
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			k.mu.Unlock()
			continue
		}
		if pid <= 0 || err != nil {
			k.mu.Unlock()
			return
		}
		if k.started[pid] {
			delete(k.started, pid)
			k.send(Reply{Pid: pid, Status: int(status)})
		} else if k.stepping[pid] {
			k.steppedEnds[pid] = int(status) // awaitStep reports it
		}
		k.mu.Unlock()
	}
}

func (k *keeper) send(r Reply) {
	data, _ := json.Marshal(r)
	k.writeMu.Lock()
	defer k.writeMu.Unlock()
	_ = syscall.Sendmsg(k.conn, data, nil, nil, 0) // fails only once Caddy is gone
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
		// and every process below them at once: a chain of processes,
		// each in a group of its own, would otherwise lose one level a
		// round (each orphan handed to the keeper only once its parent
		// died), and outlive the keeper's wait
		killDescendants(kids)
		k.reap()
		if time.Now().After(deadline) {
			os.Stderr.WriteString("hearth-keeper: processes " + intList(kids) + " did not end within " + keeperEndWait.String() + " of SIGKILL\n")
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// intList writes numbers as "[1 2 3]".
func intList(numbers []int) string {
	s := make([]string, len(numbers))
	for i, p := range numbers {
		s[i] = strconv.Itoa(p)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER (linux/prctl.h).
const prSetChildSubreaper = 36

// keeperEndWait bounds how long the keeper, once Caddy is gone, waits for
// the processes it killed (one in uninterruptible sleep cannot die at once).
const keeperEndWait = 4 * time.Second

// killDescendants sends SIGKILL to every process below the keeper's
// children kids (not to kids, which the caller signals), each through a
// pidfd opened before its parent is read again: the process signalled is
// the one seen below them, never one that took its number since.
func killDescendants(kids []int) {
	// each process met below the children is held by a pidfd until the
	// end: a child of it is signalled only while it is alive, so that the
	// number its child names as its parent is still its own
	held := map[int]uintptr{}
	defer func() {
		for _, fd := range held {
			syscall.Close(int(fd))
		}
	}()
	below := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if parent := ParentPID(pid); parent > 0 {
				below[parent] = append(below[parent], pid)
			}
		}
	}
	queue := append([]int(nil), kids...)
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		for _, pid := range below[parent] {
			queue = append(queue, pid)
			fd, _, e := syscall.RawSyscall(sysPidfdOpen, uintptr(pid), 0, 0)
			if e != 0 {
				continue // ended (or a kernel before 5.3: the next round)
			}
			held[pid] = fd
			parentFD, pinned := held[parent] // (a child of the keeper's, unreaped, needs none)
			if ParentPID(pid) == parent && (!pinned || alive(parentFD)) {
				syscall.RawSyscall6(sysPidfdSendSignal, fd, uintptr(syscall.SIGKILL), 0, 0, 0, 0)
			}
		}
	}
}

// alive reports whether the process of a pidfd has not ended (the pidfd
// is not readable yet).
func alive(pidfd uintptr) bool {
	ready, err := pollIn(int(pidfd), 0)
	return err == nil && !ready
}

// childPIDs lists the keeper's children, zombies included: every thread's
// /proc children list (an orphan is handed to any thread of its reaper),
// else a scan of /proc for processes whose parent is the keeper.
func childPIDs() []int {
	var pids []int
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		data, err := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(tasks) > 0 {
		return pids
	}
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ParentPID(pid) == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ParentPID reads a process's parent from /proc/<pid>/stat (0 if unknown).
func ParentPID(pid int) int {
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
