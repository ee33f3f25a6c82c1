package supervisor

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

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

// readAs reads path with the file-system identity of cred (asAccount).
func readAs(path string, cred *syscall.Credential) (data []byte, err error) {
	if serr := asAccount(cred, func() { data, err = os.ReadFile(path) }); serr != nil {
		return nil, serr
	}
	return data, err
}

// asAccount runs f on a thread of its own whose file-system uid and gid
// are cred's, and whose only group is cred's gid, as Hearth starts
// processes (Caddy's supplementary groups, root's included, do not apply),
// and then discards the thread: the switch never reaches other code.
// Switching the file-system uid away from 0 also drops root's power over
// file permissions on that thread. Caddy must be root or hold CAP_SETUID
// and CAP_SETGID (CanSwitchUsers); f does not run, and the error says
// why, when the thread could not take that identity.
func asAccount(cred *syscall.Credential, f func()) error {
	done := make(chan error, 1)
	go func() {
		// never unlocked: the thread exits with this goroutine
		runtime.LockOSThread()
		// x/sys's Setgroups changes this thread's groups alone (the
		// syscall package's changes every thread's)
		if err := unix.Setgroups([]int{int(cred.Gid)}); err != nil {
			done <- fmt.Errorf("taking the groups of uid %d: %w", cred.Uid, err)
			return
		}
		unix.Setfsgid(int(cred.Gid))
		unix.Setfsuid(int(cred.Uid))
		// setfsuid and setfsgid answer with the previous value, never an
		// error: asked again, they tell whether the switch took
		if prev, _ := unix.SetfsuidRetUid(int(cred.Uid)); prev != int(cred.Uid) {
			done <- fmt.Errorf("could not take the file-system uid %d (it is %d)", cred.Uid, prev)
			return
		}
		if prev, _ := unix.SetfsgidRetGid(int(cred.Gid)); prev != int(cred.Gid) {
			done <- fmt.Errorf("could not take the file-system gid %d (it is %d)", cred.Gid, prev)
			return
		}
		f()
		done <- nil
	}()
	return <-done
}
