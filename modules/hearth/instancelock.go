package hearth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/safedir"
)

// One instance per app and machine: a Caddy runs an app only while it holds
// that app's lock, an flock(2) on hearth/locks/<name>-<hash>.lock in this
// machine's data directory (caddy.AppDataDir(), not Caddy's storage, which
// several hosts may share to run the same app on purpose). The kernel
// releases the lock when the holder exits, however it exits (SIGKILL
// included), and the file names the holder's pid for the refusal message.
//
// Locks are the process's, counted: every pool of an app in this process
// takes a reference when a config starts it (App.Start) and gives it back
// once the pool has stopped, so a reload (which keeps a pool, or starts its
// replacement before the old one drains) is never refused by its own
// process, and the lock outlives the last of the app's workers. `caddy
// validate` provisions but never starts: it neither takes nor needs a lock.

// instanceLock is this process's hold on one app's lock file.
type instanceLock struct {
	path string
	file *os.File
	refs int
}

var (
	instanceMu    sync.Mutex
	instanceLocks = map[string]*instanceLock{} // by lock file path
	poolLocks     = map[string]poolLock{}      // by pool key: the lock each started pool holds
)

// poolLock is a pool and the lock it holds.
type poolLock struct {
	lock *instanceLock
	pool Pool
}

// lockFileName is the lock of the app named name in directory dir (""
// when it has none): two apps that only share a name do not share a lock.
func lockFileName(name, dir string) string {
	sum := sha256.Sum256([]byte(name + "\x00" + dir))
	safe := []byte(name)
	if len(safe) > 64 {
		safe = safe[:64]
	}
	for i, c := range safe {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			safe[i] = '_'
		}
	}
	return string(safe) + "-" + hex.EncodeToString(sum[:6]) + ".lock"
}

// lockPools takes the instance lock of every pool in used (keyed by keys)
// that does not hold one yet. If another process holds one, it takes none
// (giving back what it took) and says which process runs the app and how
// to resolve it.
func lockPools(used []Pool, keys map[Pool]string) error {
	instanceMu.Lock()
	defer instanceMu.Unlock()
	taken := map[string]*instanceLock{}
	pools := map[string]Pool{}
	for _, p := range used {
		key := keys[p]
		if _, held := poolLocks[key]; held {
			continue
		}
		if _, held := taken[key]; held {
			continue
		}
		dir := ""
		if placed, ok := p.(Placed); ok {
			dir = placed.AppDir()
		}
		l, err := acquireInstanceLocked(p.Name(), dir)
		if err != nil {
			for _, l := range taken {
				releaseInstanceLocked(l)
			}
			return err
		}
		taken[key] = l
		pools[key] = p
	}
	for key, l := range taken {
		poolLocks[key] = poolLock{lock: l, pool: pools[key]}
	}
	return nil
}

// unlockPool gives back the lock the pool under key holds (if any) once
// the pool has stopped.
func unlockPool(key string) {
	instanceMu.Lock()
	held, ok := poolLocks[key]
	delete(poolLocks, key)
	instanceMu.Unlock()
	if !ok {
		return
	}
	l, p := held.lock, held.pool
	release := func() {
		instanceMu.Lock()
		releaseInstanceLocked(l)
		instanceMu.Unlock()
	}
	if s, ok := p.(interface{ Stopped() <-chan struct{} }); ok {
		panics.Go(caddy.Log().Named("hearth"), "releasing an instance lock", func() {
			<-s.Stopped() // its workers may serve a while yet (drain)
			release()
		})
		return
	}
	release()
}

// acquireInstanceLocked takes a reference on the lock of app name in dir,
// locking its file if this process does not hold it yet.
func acquireInstanceLocked(name, dir string) (*instanceLock, error) {
	locks, err := safedir.Ensure(filepath.Join(caddy.AppDataDir(), "hearth", "locks"), 0o700)
	if err != nil {
		return nil, fmt.Errorf("app %q: the directory of instance locks: %w", name, err)
	}
	path := filepath.Join(locks, lockFileName(name, dir))
	if l := instanceLocks[path]; l != nil {
		l.refs++
		return l, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("app %q: opening its instance lock: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("app %q: locking %s: %w", name, path, err)
		}
		return nil, refusal(name, dir, path)
	}
	pid := strconv.Itoa(os.Getpid()) + "\n"
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(pid), 0)
	}
	l := &instanceLock{path: path, file: f, refs: 1}
	instanceLocks[path] = l
	caddy.Log().Named("hearth").Debug("instance lock taken", zap.String("app", name), zap.String("lock", path))
	return l, nil
}

// releaseInstanceLocked drops one reference; the last one unlocks the file.
func releaseInstanceLocked(l *instanceLock) {
	l.refs--
	if l.refs > 0 {
		return
	}
	delete(instanceLocks, l.path)
	// the file stays: removing it would let a third process lock a new
	// file of the same name while another waits on the old one
	_ = l.file.Close() // closing the last descriptor releases the flock
}

// refusal explains that another process holds the app's lock.
func refusal(name, dir, path string) error {
	holder := "another process"
	// the holder writes its pid just after locking: give it a moment
	for attempt := 0; attempt < 20; attempt++ {
		data, err := os.ReadFile(path)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && perr == nil && pid > 0 {
			holder = "process " + strconv.Itoa(pid)
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(cmdline) > 0 {
				holder += " (" + strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")) + ")"
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	where := ""
	if dir != "" {
		where = " in " + dir
	}
	return fmt.Errorf("app %q%s is already run on this machine by %s, a Caddy with the same data directory (%s; lock %s): two would both serve its site and both run its before_start. Stop that Caddy, or change its config with `caddy reload` instead of starting another; to run a second instance on purpose, give it a data directory of its own (e.g. XDG_DATA_HOME=/var/lib/caddy-second caddy run …)",
		name, where, holder, caddy.AppDataDir(), path)
}
