package hearth

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// lockedApp is a pool of an app in a directory, for the instance lock.
type lockedApp struct{ name, dir string }

func (p *lockedApp) Destruct() error { return nil }
func (p *lockedApp) Start() error    { return nil }
func (p *lockedApp) Name() string    { return p.name }
func (p *lockedApp) Status() any     { return nil }
func (p *lockedApp) Running() bool   { return true }
func (p *lockedApp) Restart() error  { return nil }
func (p *lockedApp) Scale(int) error { return nil }
func (p *lockedApp) AppDir() string  { return p.dir }

// otherHolds reports whether another open file description of path
// cannot be locked (another process would be refused).
func otherHolds(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// TestInstanceLockIsTheProcesss: pools of one app in this process share
// its lock (a reload's new pool beside the old one), which is released
// with the last of them; the file names this process; other apps have
// locks of their own.
func TestInstanceLockIsTheProcesss(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	old, replacement, other := &lockedApp{"shop", "/srv/shop"}, &lockedApp{"shop", "/srv/shop"}, &lockedApp{"shop", "/srv/shop2"}
	if err := lockPools([]Pool{old}, map[Pool]string{old: "k-old"}); err != nil {
		t.Fatal(err)
	}
	path := poolLocks["k-old"].lock.path
	if !strings.HasPrefix(path, filepath.Join(os.Getenv("XDG_DATA_HOME"), "caddy", "hearth", "locks")+"/shop-") {
		t.Errorf("lock at %s", path)
	}
	if data, _ := os.ReadFile(path); strings.TrimSpace(string(data)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("the lock file holds %q, want this pid", data)
	}
	if !otherHolds(t, path) {
		t.Fatal("the lock is not held")
	}
	// a reload: the old pool kept (already locked), its replacement and
	// an app of the same name elsewhere added
	used := []Pool{old, replacement, other}
	if err := lockPools(used, map[Pool]string{old: "k-old", replacement: "k-new", other: "k-other"}); err != nil {
		t.Fatalf("a reload refused by its own process: %v", err)
	}
	if l := poolLocks["k-new"].lock; l.path != path || l.refs != 2 {
		t.Errorf("the replacement holds %s (%d refs), want the old pool's lock, shared", l.path, l.refs)
	}
	if otherPath := poolLocks["k-other"].lock.path; otherPath == path {
		t.Errorf("two apps of one name in different directories share a lock")
	}
	unlockPool("k-old") // no Stopped: released at once
	if !otherHolds(t, path) {
		t.Error("the lock went with the old pool while its replacement runs")
	}
	unlockPool("k-new")
	if otherHolds(t, path) {
		t.Error("the lock outlived the app's last pool")
	}
	unlockPool("k-other")
	if len(instanceLocks) != 0 || len(poolLocks) != 0 {
		t.Errorf("locks left: %v %v", instanceLocks, poolLocks)
	}
}
