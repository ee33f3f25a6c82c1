package keeper

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// Capabilities. Caddy run by the unit `caddy hearth systemd` writes is a
// non-root user holding CAP_SETUID, CAP_SETGID and CAP_KILL (and
// CAP_NET_BIND_SERVICE for ports below 1024) as ambient capabilities:
// they are what lets it start workers as another account and signal them.
// Ambient capabilities survive execve, so a child started as Caddy's own
// user, or switched from one non-root user to another (the kernel clears
// capabilities only on a switch away from uid 0), would keep them, and
// CAP_SETUID in an app is root. Hearth therefore clears the inheritable set
// (which clears the ambient set with it) of every thread of Caddy before
// any child is started (a constructor in cgo builds, every thread at init
// otherwise): Caddy keeps its capabilities, no child receives any.

// Capability numbers (linux/capability.h).
const (
	CapKill    = 5          // CAP_KILL
	CapSetGID  = 6          // CAP_SETGID
	CapSetUID  = 7          // CAP_SETUID
	capVersion = 0x20080522 // _LINUX_CAPABILITY_VERSION_3
)

// prctl's ambient capability operations (linux/prctl.h).
const (
	prCapAmbient      = 47 // PR_CAP_AMBIENT
	prCapAmbientRaise = 2  // PR_CAP_AMBIENT_RAISE
)

type capHeader struct {
	version uint32
	pid     int32
}

type capData struct{ effective, permitted, inheritable uint32 }

// capsErr is why children might inherit capabilities; nil when none can.
// Set by init (keeper.go).
var capsErr error

// checkNoInheritableCaps reads every thread's inheritable and ambient sets.
func checkNoInheritableCaps() error {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		fields := procStatus("/proc/self/task/" + task.Name() + "/status")
		for _, set := range []string{"CapInh", "CapAmb"} {
			if v, _ := strconv.ParseUint(fields[set], 16, 64); v != 0 {
				return errors.New("thread " + task.Name() + " of Caddy has capabilities its children would inherit (" + set + " " + fields[set] + ") and Hearth could not clear them: start Caddy without ambient capabilities, or run it as root")
			}
		}
	}
	return nil
}

// procStatus reads the "Key:\tvalue" lines of a /proc status file.
func procStatus(path string) map[string]string {
	out := map[string]string{}
	data, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// HasCaps reports whether this process holds every capability in caps in
// its effective set.
func HasCaps(caps ...int) bool {
	eff, err := strconv.ParseUint(procStatus("/proc/self/status")["CapEff"], 16, 64)
	if err != nil {
		return false
	}
	for _, c := range caps {
		if eff&(1<<c) == 0 {
			return false
		}
	}
	return true
}

// RaiseAmbientCaps makes those of caps that the calling thread holds
// ambient on it, so that a program it executes receives them (the keeper).
// Root needs none: its capabilities survive execve anyway. Only the
// calling thread changes; the caller ends it afterwards.
func RaiseAmbientCaps(caps ...int) error {
	if os.Geteuid() == 0 {
		return nil
	}
	hdr := capHeader{version: capVersion}
	var data [2]capData
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return &syscallError{"reading capabilities", e}
	}
	var held []int
	for _, c := range caps {
		if data[0].permitted&(1<<c) != 0 {
			held = append(held, c)
			data[0].inheritable |= 1 << c
		}
	}
	if len(held) == 0 {
		return nil
	}
	hdr.pid = 0 // this thread
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return &syscallError{"passing capabilities " + intList(held) + " to the process keeper: capset", e}
	}
	for _, c := range held {
		if _, _, e := syscall.RawSyscall6(syscall.SYS_PRCTL, prCapAmbient, prCapAmbientRaise, uintptr(c), 0, 0, 0); e != 0 {
			return &syscallError{"passing capability " + strconv.Itoa(c) + " to the process keeper", e}
		}
	}
	return nil
}

// syscallError is a failed system call and what it was for; errors.Is
// finds its errno.
type syscallError struct {
	doing string
	errno syscall.Errno
}

func (e *syscallError) Error() string { return e.doing + ": " + e.errno.Error() }
func (e *syscallError) Unwrap() error { return e.errno }
