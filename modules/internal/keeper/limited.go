package keeper

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// isBigEndian reports the machine's byte order (the dirent's reclen).
var isBigEndian = binary.NativeEndian.Uint16([]byte{0, 1}) == 1

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

// limitedStartWait bounds the keeper's wait for the step's report; one
// step runs at a time.
const limitedStartWait = 5 * time.Second

// limitedArgv is the argv of the step that starts path with argv under
// limit, reporting on descriptor report.
func limitedArgv(limit uint64, report int, path string, argv []string) []string {
	return append([]string{LimitedName, strconv.FormatUint(limit, 10), strconv.Itoa(report), path}, argv...)
}

// runLimited is the step, in the child, as its account: it sets the
// limit and executes the program, or writes why not (an errno, 4 bytes)
// to the report descriptor and returns the exit status. It never returns
// when it succeeds. The limit is set first, to leave the least time to
// another process of the account (which may read and write this one's
// memory until it is made non-dumpable, just after); from then on nothing
// may need a new thread, which the limit could refuse and Go would die
// of: the count is made with raw system calls into fixed buffers (no
// allocation, so no collection; no blocking call handed to another
// thread).
func runLimited(args []string) int {
	limit, err1 := strconv.ParseUint(args[0], 10, 64)
	report, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil || limit == 0 || report < 3 {
		os.Stderr.WriteString(LimitedName + ": malformed arguments\n")
		return 126
	}
	set, e := lowerProcessLimit(limit)
	if e != 0 {
		return limitedFailed(report, e)
	}
	if secureExecution() { // (before the next line, which makes /proc/self/auxv root's)
		// a setuid or file-capability Caddy would start anything as its owner
		os.Stderr.WriteString(LimitedName + ": refusing to run from a setuid, setgid or file-capability execution\n")
		return limitedFailed(report, syscall.EPERM)
	}
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0)
	if _, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(report), syscall.F_SETFD, syscall.FD_CLOEXEC); e != 0 {
		os.Stderr.WriteString(LimitedName + ": no report descriptor: " + e.Error() + "\n")
		return limitedFailed(report, e)
	}
	// the kernel refuses a fork past the limit, but not this execution:
	// an account already past it would get a program that cannot start
	// a thread (a worker failing on every request); refused here instead,
	// with EAGAIN as a fork would be. This process is counted.
	if accountTasks(syscall.Getuid()) > int(set) {
		return limitedFailed(report, syscall.EAGAIN)
	}
	err := syscall.Exec(args[2], args[3:], os.Environ())
	if errno, ok := err.(syscall.Errno); ok {
		return limitedFailed(report, errno)
	}
	return limitedFailed(report, syscall.EINVAL)
}

// LimitProcesses sets this process's RLIMIT_NPROC, soft and hard, to
// limit, or leaves it at its hard limit if that is lower: what a process
// it then starts as another account inherits (caddy hearth exec, as root,
// for the app's command).
func LimitProcesses(limit uint64) error {
	if _, e := lowerProcessLimit(limit); e != 0 {
		return e
	}
	return nil
}

// lowerProcessLimit is LimitProcesses with raw system calls (see
// runLimited); it returns the limit set.
func lowerProcessLimit(limit uint64) (uint64, syscall.Errno) {
	var lim syscall.Rlimit
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, 0, rlimitNproc, 0, uintptr(unsafe.Pointer(&lim)), 0, 0); e != 0 {
		return 0, e
	}
	lim.Cur, lim.Max = min(limit, lim.Max), min(limit, lim.Max)
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, 0, rlimitNproc, uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
		return 0, e
	}
	return lim.Max, 0
}

// prSetDumpable is PR_SET_DUMPABLE.
const prSetDumpable = 4

// limitedFailed writes errno to the report descriptor and returns the
// step's exit status.
func limitedFailed(report int, errno syscall.Errno) int {
	b := uint32(errno)
	syscall.RawSyscall(syscall.SYS_WRITE, uintptr(report), uintptr(unsafe.Pointer(&b)), 4)
	return 127
}

// accountTasks counts the threads of the processes whose real account is
// uid, as /proc shows them to this process (all of its own account's),
// with raw system calls into fixed buffers (see runLimited). Under the
// systemd unit (ProtectProc=invisible) it sees only its own account's
// processes; elsewhere it reads every process's status, a few
// milliseconds for hundreds of processes.
func accountTasks(uid int) int {
	var (
		dirents [8192]byte
		path    [32]byte
		status  [4096]byte
	)
	procPath := [...]byte{'/', 'p', 'r', 'o', 'c', 0}
	cwd := atFDCWD
	dir, _, e := syscall.RawSyscall6(syscall.SYS_OPENAT, uintptr(cwd), uintptr(unsafe.Pointer(&procPath[0])), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		return 0 // nothing known: the kernel's own check stands
	}
	defer syscall.RawSyscall(syscall.SYS_CLOSE, dir, 0, 0)
	n := 0
	for {
		got, _, e := syscall.RawSyscall(syscall.SYS_GETDENTS64, dir, uintptr(unsafe.Pointer(&dirents[0])), uintptr(len(dirents)))
		if e != 0 || got == 0 {
			return n
		}
		for off := 0; off < int(got); {
			// struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name
			if off+19 >= int(got) {
				break
			}
			reclen := int(dirents[off+16]) | int(dirents[off+17])<<8 // little-endian
			if isBigEndian {
				reclen = int(dirents[off+16])<<8 | int(dirents[off+17])
			}
			if reclen < 20 || off+reclen > int(got) {
				break // not a record the kernel writes
			}
			name := dirents[off+19 : off+reclen]
			off += reclen
			if name[0] < '1' || name[0] > '9' {
				continue
			}
			end := bytes.IndexByte(name, 0)
			if end < 0 || end > 20 {
				continue
			}
			i := copy(path[:], name[:end])
			i += copy(path[i:], "/status")
			path[i] = 0
			fd, _, e := syscall.RawSyscall6(syscall.SYS_OPENAT, dir, uintptr(unsafe.Pointer(&path[0])), syscall.O_RDONLY|syscall.O_CLOEXEC, 0, 0, 0)
			if e != 0 {
				continue // ended meanwhile
			}
			read, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&status[0])), uintptr(len(status)))
			syscall.RawSyscall(syscall.SYS_CLOSE, fd, 0, 0)
			if e != 0 {
				continue
			}
			data := status[:read]
			if int(read) == len(status) { // cut: its last line may be too
				data = data[:bytes.LastIndexByte(data, '\n')+1]
			}
			if real, _, _ := bytes.Cut(statusField(data, "Uid:"), []byte{'\t'}); parseNumber(real) != uid {
				continue
			}
			n += max(parseNumber(statusField(data, "Threads:")), 1)
		}
	}
}

// atFDCWD is AT_FDCWD.
const atFDCWD = -100

// parseNumber reads decimal digits, without allocating; -1 for none.
func parseNumber(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// statusField is the value of a /proc/<pid>/status line (without its
// name and the blanks after it).
func statusField(status []byte, name string) []byte {
	for len(status) > 0 {
		line := status
		if i := bytes.IndexByte(status, '\n'); i >= 0 {
			line, status = status[:i], status[i+1:]
		} else {
			status = nil
		}
		if len(line) >= len(name) && string(line[:len(name)]) == name {
			return bytes.TrimLeft(line[len(name):], "\t ")
		}
	}
	return nil
}

// awaitLimited reads the step's report on fd (the read end; the step
// holds the write end until it executes the program or fails): nil once
// the program runs, the errno the step wrote, or ETIMEDOUT at deadline.
// It never waits past deadline: the write end may be held by another
// process of the account too (it could open the step's descriptor
// through /proc while the step was its to read), which a read alone would
// wait for as long as it pleased.
func awaitLimited(fd int, deadline time.Time) error {
	var b [4]byte
	got := 0
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return syscall.ETIMEDOUT
		}
		ready, err := pollIn(fd, left)
		if err == syscall.EINTR || err == nil && !ready {
			continue // (the deadline is checked again)
		}
		if err != nil {
			return err
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
			return syscall.Errno(binary.NativeEndian.Uint32(b[:]))
		}
	}
}

// pollIn waits up to timeout for fd to be readable (data, or its end
// closed), with ppoll (this package keeps to the standard library).
func pollIn(fd int, timeout time.Duration) (bool, error) {
	pfd := struct {
		fd              int32
		events, revents int16
	}{fd: int32(fd), events: 0x1} // POLLIN
	ts := syscall.NsecToTimespec(int64(timeout))
	n, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if e != 0 {
		return false, e
	}
	return n > 0, nil
}
