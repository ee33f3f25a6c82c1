package supervisor

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"github.com/hearth-dev/hearth/modules/internal/keeper"
)

// CanSwitchUsers reports whether Caddy can start processes as another
// user: it is root, or holds CAP_SETUID and CAP_SETGID.
func CanSwitchUsers() bool {
	return os.Geteuid() == 0 || keeper.HasCaps(keeper.CapSetUID, keeper.CapSetGID)
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
