package supervisor

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
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
	capKill    = 5
	capSetGID  = 6
	capSetUID  = 7
	capVersion = 0x20080522 // _LINUX_CAPABILITY_VERSION_3
)

type capHeader struct {
	version uint32
	pid     int32
}

type capData struct{ effective, permitted, inheritable uint32 }

// capsErr is why children might inherit capabilities; nil when none can.
var capsErr error

func init() {
	dropInheritableCaps()
	capsErr = checkNoInheritableCaps()
}

// checkNoInheritableCaps reads every thread's inheritable and ambient sets.
func checkNoInheritableCaps() error {
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, status := range tasks {
		fields := procStatus(status)
		for _, set := range []string{"CapInh", "CapAmb"} {
			if v, _ := strconv.ParseUint(fields[set], 16, 64); v != 0 {
				return fmt.Errorf("thread %s of Caddy has capabilities its children would inherit (%s %s) and Hearth could not clear them: start Caddy without ambient capabilities, or run it as root", filepath.Base(filepath.Dir(status)), set, fields[set])
			}
		}
	}
	return nil
}

// procStatus reads the "Key:\tvalue" lines of a /proc status file.
func procStatus(path string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// hasCaps reports whether this process holds every capability in caps in
// its effective set.
func hasCaps(caps ...int) bool {
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

// CanSwitchUsers reports whether Caddy can start processes as another
// user: it is root, or holds CAP_SETUID and CAP_SETGID.
func CanSwitchUsers() bool {
	return os.Geteuid() == 0 || hasCaps(capSetUID, capSetGID)
}

// childCreds holds the credential of every running child started with one
// (pid → *syscall.Credential), for ReadProc.
var childCreds sync.Map

// ReadProc reads /proc/<pid>/<name> of a child Start launched. When
// /proc hides other users' processes (systemd's ProtectProc=invisible, the
// unit's setting), a thread of its own switches its file-system uid and
// gid to the process's (CAP_SETUID and CAP_SETGID allow it), reads, and is
// then discarded: the switch never reaches any other code.
func ReadProc(pid int, name string) ([]byte, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/" + name
	data, err := os.ReadFile(path)
	if err == nil || !CanSwitchUsers() {
		return data, err
	}
	// the child's credential; a process forked by a child (a preloading
	// template's worker) runs as one of those of the children
	var creds []*syscall.Credential
	if c, ok := childCreds.Load(pid); ok {
		creds = append(creds, c.(*syscall.Credential))
	}
	childCreds.Range(func(_, c any) bool {
		creds = append(creds, c.(*syscall.Credential))
		return len(creds) < 16
	})
	for _, cred := range creds {
		if data, err2 := readAs(path, cred); err2 == nil {
			return data, nil
		}
	}
	return data, err
}

// readAs reads path with the file-system uid and gid of cred.
func readAs(path string, cred *syscall.Credential) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// never unlocked: the thread exits with this goroutine
		runtime.LockOSThread()
		syscall.Setfsgid(int(cred.Gid))
		syscall.Setfsuid(int(cred.Uid))
		data, err := os.ReadFile(path)
		done <- result{data, err}
	}()
	r := <-done
	return r.data, r.err
}

// raiseAmbientCaps makes those of caps that the calling thread holds
// ambient on it, so that a program it executes receives them (the keeper).
// Root needs none: its capabilities survive execve anyway. Only the
// calling thread changes; the caller ends it afterwards.
func raiseAmbientCaps(caps ...int) error {
	if os.Geteuid() == 0 {
		return nil
	}
	hdr := capHeader{version: capVersion}
	var data [2]capData
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("reading capabilities: %w", e)
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
		return fmt.Errorf("passing capabilities %v to the process keeper: capset: %w", held, e)
	}
	for _, c := range held {
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil {
			return fmt.Errorf("passing capability %d to the process keeper: %w", c, err)
		}
	}
	return nil
}
