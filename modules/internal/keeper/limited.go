package keeper

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// LimitedName is the argv[0] of Caddy's binary run as the first step of a
// process started under a process limit (Request.MaxProcesses): the
// keeper forks, the child takes the request's account and executes Caddy's
// binary (/proc/self/exe) under this name, with the limit, the number of a
// descriptor to report a failure on, and the program's path and argv; the
// step sets its own RLIMIT_NPROC, soft and hard, refuses to go on when the
// account already has more processes and threads than that, and executes
// the program, which inherits the limit.
//
// Why a step, and not the keeper's own limit that every child would
// inherit: the kernel checks a fork, and a thread's start, against the
// forking process's limit and its own account's count. The keeper runs as
// Caddy's account (the systemd unit's) and forks before its child takes
// the app's: with the limit on the keeper, Caddy's own threads would count
// against the app's limit, and the keeper, a Go program, would crash the
// moment Go could not start a thread. Lowering one's own limit needs no
// privilege; raising the hard limit again needs CAP_SYS_RESOURCE, which no
// child holds. The step costs a start of Caddy's binary as far as this
// package's init (a few milliseconds; see the package's comment).
const LimitedName = "hearth-limited"

// limitedArgs is how many arguments the step takes before the program's
// argv: the limit, the report descriptor and the program's path.
const limitedArgs = 3

// rlimitNproc is RLIMIT_NPROC.
const rlimitNproc = 6

// limitedStartWait bounds the keeper's wait for the step's report.
const limitedStartWait = 10 * time.Second

// limitedArgv is the argv of the step that starts path with argv under
// limit, reporting on descriptor report.
func limitedArgv(limit uint64, report int, path string, argv []string) []string {
	return append([]string{LimitedName, strconv.FormatUint(limit, 10), strconv.Itoa(report), path}, argv...)
}

// runLimited is the step, in the child, as its account: it sets the
// limit and executes the program, or writes why not (an errno, 4 bytes)
// to the report descriptor and returns the exit status. It never returns
// when it succeeds.
func runLimited(args []string) int {
	if secureExecution() {
		// a setuid or file-capability Caddy would start anything as its owner
		os.Stderr.WriteString(LimitedName + ": refusing to run from a setuid, setgid or file-capability execution\n")
		return 126
	}
	limit, err1 := strconv.ParseUint(args[0], 10, 64)
	report, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil || limit == 0 || report < 3 {
		os.Stderr.WriteString(LimitedName + ": malformed arguments\n")
		return 126
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(report), syscall.F_SETFD, syscall.FD_CLOEXEC); e != 0 {
		os.Stderr.WriteString(LimitedName + ": no report descriptor: " + e.Error() + "\n")
		return 126
	}
	fail := func(errno syscall.Errno) int {
		b := uint32(errno)
		syscall.Write(report, (*[4]byte)(unsafe.Pointer(&b))[:])
		return 127
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(rlimitNproc, &lim); err != nil {
		return fail(err.(syscall.Errno))
	}
	lim.Cur, lim.Max = min(limit, lim.Max), min(limit, lim.Max)
	if err := syscall.Setrlimit(rlimitNproc, &lim); err != nil {
		return fail(err.(syscall.Errno))
	}
	// the kernel refuses a fork past the limit, but not this execution:
	// an account already past it would get a program that cannot start
	// a thread (a worker failing on every request); refused here instead,
	// with EAGAIN as a fork would be. This process is counted.
	if accountTasks(syscall.Getuid()) > int(lim.Max) {
		return fail(syscall.EAGAIN)
	}
	err := syscall.Exec(args[2], args[3:], os.Environ())
	if errno, ok := err.(syscall.Errno); ok {
		return fail(errno)
	}
	return fail(syscall.EINVAL)
}

// accountTasks counts the processes' threads whose real account is uid,
// as /proc shows them to this process (all of its own account's).
func accountTasks(uid int) int {
	entries, _ := os.ReadDir("/proc")
	want := []byte(strconv.Itoa(uid))
	n := 0
	for _, e := range entries {
		if name := e.Name(); name == "" || name[0] < '0' || name[0] > '9' {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue // ended meanwhile
		}
		uidLine, threads := statusField(data, "Uid:"), statusField(data, "Threads:")
		if real, _, _ := bytes.Cut(uidLine, []byte{'\t'}); bytes.Equal(real, want) {
			t, _ := strconv.Atoi(string(threads))
			n += max(t, 1)
		}
	}
	return n
}

// statusField is the value of a /proc/<pid>/status line (without its
// name and the tab after it).
func statusField(status []byte, name string) []byte {
	for line := range bytes.SplitSeq(status, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte(name)); ok {
			return bytes.TrimLeft(v, "\t ")
		}
	}
	return nil
}

// awaitLimited reads the step's report on fd (the read end; the step
// holds the write end until it executes the program or fails): nil once
// the program runs, the errno the step wrote, or ETIMEDOUT.
func awaitLimited(fd int) error {
	deadline := time.Now().Add(limitedStartWait)
	var b [4]byte
	got := 0
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return syscall.ETIMEDOUT
		}
		ms := int(left / time.Millisecond)
		fds := []pollFd{{fd: int32(fd), events: pollIn}}
		if _, _, e := syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(ms)); e != 0 {
			if e == syscall.EINTR {
				continue
			}
			return e
		}
		if fds[0].revents == 0 {
			continue
		}
		n, err := syscall.Read(fd, b[got:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if got == 0 {
				return nil // closed on execution: the program runs
			}
			return syscall.EIO
		}
		if got += n; got == len(b) {
			return syscall.Errno(*(*uint32)(unsafe.Pointer(&b[0])))
		}
	}
}

// pollFd is struct pollfd.
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const pollIn = 0x1
