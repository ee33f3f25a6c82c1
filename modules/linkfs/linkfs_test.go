package linkfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const appUID = 65534 // nobody: the app's account

// tree is a served directory an app's account owns, beside files of
// Caddy's account (root here) that the app's account cannot read, and
// files it can.
type tree struct {
	served, secret, secretDir, public, publicDir string
}

func makeTree(t *testing.T) tree {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("links of another account need root to make")
	}
	base := t.TempDir()
	must(t, os.Chmod(base, 0o755))
	must(t, os.Chmod(filepath.Dir(base), 0o755))
	tr := tree{served: filepath.Join(base, "staticfiles"), secretDir: filepath.Join(base, "caddy"), publicDir: filepath.Join(base, "share")}
	must(t, os.Mkdir(tr.served, 0o755))
	must(t, os.Chown(tr.served, appUID, appUID))
	must(t, os.Mkdir(tr.secretDir, 0o700))
	tr.secret = filepath.Join(tr.secretDir, "site.key")
	must(t, os.WriteFile(tr.secret, []byte("-----BEGIN EC PRIVATE KEY-----\n"), 0o600))
	must(t, os.Mkdir(tr.publicDir, 0o755))
	tr.public = filepath.Join(tr.publicDir, "admin.css")
	must(t, os.WriteFile(tr.public, []byte("body{}"), 0o644))
	must(t, os.WriteFile(filepath.Join(tr.served, "app.css"), []byte("p{}"), 0o644))
	// a file readable by others inside a directory only its owner enters
	must(t, os.WriteFile(filepath.Join(tr.secretDir, "open.txt"), []byte("inside"), 0o644))
	return tr
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// symlink makes the link name -> target owned by uid, as that account
// would have made it.
func symlink(t *testing.T, target, name string, uid int) {
	t.Helper()
	must(t, os.Symlink(target, name))
	must(t, os.Lchown(name, uid, uid))
}

// TestLinksOfAnotherAccount: a link the app's account put in the directory
// Caddy serves leads only to what that account could read itself; links of
// root (or Caddy's own account) lead anywhere, as before; a path without
// links is served as it is.
func TestLinksOfAnotherAccount(t *testing.T) {
	tr := makeTree(t)
	symlink(t, tr.secret, filepath.Join(tr.served, "a.css"), appUID)                        // the attack
	symlink(t, tr.secretDir, filepath.Join(tr.served, "certs"), appUID)                     // through a directory
	symlink(t, "../caddy/open.txt", filepath.Join(tr.served, "rel.txt"), appUID)            // relative, into a closed directory
	symlink(t, filepath.Join(tr.served, "a.css"), filepath.Join(tr.served, "again.css"), 0) // root's link to the app's link
	symlink(t, tr.public, filepath.Join(tr.served, "admin.css"), appUID)                    // collectstatic --link
	symlink(t, tr.secret, filepath.Join(tr.served, "root.key"), 0)                          // an administrator's own link
	symlink(t, "loop", filepath.Join(tr.served, "loop"), appUID)
	// a file of a third account, which only it reads: root's link leads
	// there too (root's links are followed wherever they lead)
	third := filepath.Join(tr.publicDir, "third.txt")
	must(t, os.WriteFile(third, []byte("3rd"), 0o600))
	must(t, os.Chown(third, 1, 1))
	symlink(t, third, filepath.Join(tr.served, "third.txt"), 0)

	// a file of a group the link's owner is in (www-data's own), and one
	// of /proc, readable by anyone but never given through a link
	grouped := filepath.Join(tr.publicDir, "grouped.txt")
	must(t, os.WriteFile(grouped, []byte("grp"), 0o640))
	must(t, os.Chown(grouped, 0, wwwData))
	symlink(t, grouped, filepath.Join(tr.served, "grouped.txt"), wwwData)
	symlink(t, grouped, filepath.Join(tr.served, "notgrouped.txt"), appUID)
	symlink(t, "/proc/self/status", filepath.Join(tr.served, "status.txt"), appUID)
	// through a link, up again with ..: the kernel goes up from where the
	// link led (the directory's parent), not from the link's; and looks
	// ".." up in that directory, which the link's owner must be let enter:
	// through a closed directory, the answer would tell the app whether a
	// name it guessed there exists (its own walk would be refused)
	symlink(t, tr.publicDir, filepath.Join(tr.served, "upopen"), appUID)
	symlink(t, tr.secretDir, filepath.Join(tr.served, "up"), appUID)
	fifo := filepath.Join(tr.served, "pipe.css")
	must(t, syscall.Mkfifo(fifo, 0o644))
	sock, err := net.Listen("unix", filepath.Join(tr.served, "app.sock"))
	must(t, err)
	defer sock.Close()

	for _, mode := range resolveModes {
		t.Run(mode.name, func(t *testing.T) {
			resolving(t, mode.with)
			checkTree(t, tr)
		})
	}
}

// resolveModes are the ways paths are reached: with openat2, or where it
// is refused (under the unit) by name then checked, and by the walk alone.
var resolveModes = []struct {
	name string
	with int
}{{"openat2", withOpenat2}, {"same-name", withSameName}, {"walk", walkOnly}}

// resolving has the test reach paths as with says, until it ends.
func resolving(t testing.TB, with int) {
	resolveWith = with
	t.Cleanup(func() { resolveWith = withOpenat2 })
}

const wwwData = 33 // www-data, in its own group

func checkTree(t *testing.T, tr tree) {
	fsys := FS{}
	for name, want := range map[string]string{
		"grouped.txt":               "grp",
		"notgrouped.txt":            "refused",
		"status.txt":                "refused",
		"upopen/../share/admin.css": "body{}",
		"up/../share/admin.css":     "refused",
		"up/site.key":               "refused",
		"app.css":                   "p{}",
		"admin.css":                 "body{}",
		"root.key":                  "-----BEGIN EC PRIVATE KEY-----\n",
		"third.txt":                 "3rd",
		"a.css":                     "refused",
		"certs/site.key":            "refused",
		"rel.txt":                   "refused",
		"again.css":                 "refused",
		"loop":                      "error",
		"missing.css":               "missing",
		"certs/nothing.js":          "refused", // past the app's link, missing and closed look the same
	} {
		path := tr.served + "/" + name // not cleaned: .. after a link is the walk's
		for op, read := range map[string]func() (string, error){
			"Open": func() (string, error) {
				f, err := fsys.Open(path)
				if err != nil {
					return "", err
				}
				defer f.Close()
				b, err := io.ReadAll(f)
				return string(b), err
			},
			"ReadFile": func() (string, error) { b, err := fsys.ReadFile(path); return string(b), err },
			"Stat": func() (string, error) {
				info, err := fsys.Stat(path)
				if err != nil {
					return "", err
				}
				if info.Size() != int64(len(want)) {
					return "", errors.New("size " + info.Name())
				}
				return want, nil
			},
		} {
			got, err := read()
			switch want {
			case "refused":
				if !errors.Is(err, fs.ErrPermission) || strings.Contains(got, "PRIVATE") {
					t.Errorf("%s %s: %q %v, want refused", op, name, got, err)
				}
			case "missing":
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s %s: %q %v, want not found", op, name, got, err)
				}
			case "error":
				if err == nil {
					t.Errorf("%s %s: %q, want an error", op, name, got)
				}
			default:
				if err != nil || got != want {
					t.Errorf("%s %s: %q %v, want %q", op, name, got, err, want)
				}
			}
		}
	}
	// a socket is refused like the other files that are not read, and
	// what is read, is read blocking (O_NONBLOCK was for FIFOs only)
	if _, err := fsys.Open(filepath.Join(tr.served, "app.sock")); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("Open of a socket: %v, want refused", err)
	}
	if f, err := fsys.Open(filepath.Join(tr.served, "app.css")); err == nil {
		raw, _ := f.(*os.File).SyscallConn()
		raw.Control(func(fd uintptr) {
			if fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
				t.Errorf("app.css is open with flags %#x (%v): O_NONBLOCK left", fl, err)
			}
		})
		f.Close()
	}
	// a FIFO is described, never opened: Open does not block
	done := make(chan error, 1)
	go func() {
		f, err := fsys.Open(filepath.Join(tr.served, "pipe.css"))
		if err == nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("Open of a FIFO: %v, want refused", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Open of a FIFO blocks")
	}
	// the directory through the app's link is not listed either
	if _, err := fsys.ReadDir(filepath.Join(tr.served, "certs")); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("ReadDir through the app's link to a closed directory: %v", err)
	}
	if entries, err := fsys.ReadDir(tr.served); err != nil || len(entries) != 16 || entries[0].Name() != "a.css" {
		t.Errorf("ReadDir of the served directory: %v %v", entries, err)
	}
}

// A FIFO in the served directory is described without being opened: Stat
// does not block.
func TestStatDoesNotOpen(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	must(t, unixMkfifo(fifo))
	info, err := FS{}.Stat(fifo)
	if err != nil || info.Mode()&fs.ModeNamedPipe == 0 {
		t.Errorf("Stat of a FIFO: %v %v", info, err)
	}
}

func unixMkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }

// TestSwappedWhileRead: the app's account swaps, as fast as it can, a
// directory of its own with a link of its own to Caddy's closed directory
// (rename exchange), while the file under it is read again and again, the
// ways paths are reached where openat2 is refused. Caddy's key is never
// read: the name the kernel gives the file reached is checked after it is
// reached, and the walk judges a link from the descriptor it goes on from.
func TestSwappedWhileRead(t *testing.T) {
	tr := makeTree(t)
	own := filepath.Join(tr.served, "d")
	must(t, os.Mkdir(own, 0o755))
	must(t, os.WriteFile(filepath.Join(own, "site.key"), []byte("harmless"), 0o644))
	swap := filepath.Join(tr.served, "swap")
	symlink(t, tr.secretDir, swap, appUID)
	if err := unix.Renameat2(unix.AT_FDCWD, own, unix.AT_FDCWD, swap, unix.RENAME_EXCHANGE); err != nil {
		t.Skipf("no rename exchange here: %v", err)
	}
	for _, mode := range resolveModes[1:] {
		t.Run(mode.name, func(t *testing.T) {
			resolving(t, mode.with)
			readWhileSwapped(t, own, swap)
		})
	}
}

func readWhileSwapped(t *testing.T, own, swap string) {
	stop := make(chan struct{})
	swapped := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				swapped <- n
				return
			default:
			}
			if unix.Renameat2(unix.AT_FDCWD, own, unix.AT_FDCWD, swap, unix.RENAME_EXCHANGE) == nil {
				n++
			}
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	reads := 0
	for ; time.Now().Before(deadline) && reads < 20000; reads++ {
		if b, err := (FS{}).ReadFile(own + "/site.key"); err == nil && strings.Contains(string(b), "PRIVATE") {
			close(stop)
			<-swapped
			t.Fatalf("read Caddy's key through a swapped link after %d reads", reads)
		}
	}
	close(stop)
	if n := <-swapped; n < 100 {
		t.Logf("only %d swaps in %d reads", n, reads)
	}
}

// TestWalkIsBounded: where every path is walked, a path longer than the
// kernel takes, or links that send the walk through many names, end in an
// error, holding no descriptor after.
func TestWalkIsBounded(t *testing.T) {
	tr := makeTree(t)
	resolving(t, walkOnly)
	must(t, os.Mkdir(filepath.Join(tr.served, "d"), 0o755))
	// 39 links, each through "d/.." 800 times before the next
	for i := 0; i < 39; i++ {
		next := fmt.Sprintf("l%d", i+1)
		if i == 38 {
			next = "app.css"
		}
		symlink(t, strings.Repeat("d/../", 800)+next, filepath.Join(tr.served, fmt.Sprintf("l%d", i)), appUID)
	}
	fds := func() int { entries, _ := os.ReadDir("/proc/self/fd"); return len(entries) }
	before := fds()
	for path, want := range map[string]error{
		tr.served + "/" + strings.Repeat("d/", 3000) + "app.css": unix.ENAMETOOLONG,
		tr.served + "/l0": fs.ErrPermission, // past another account's link: the walk's limit is not told
	} {
		if _, err := (FS{}).Stat(path); !errors.Is(err, want) {
			t.Errorf("Stat of %.60s…: %v, want %v", path, err, want)
		}
	}
	if after := fds(); after != before {
		t.Errorf("%d descriptors open after the walks, %d before", after, before)
	}
}

// TestStatIsOsStat: Stat says of a file what os.Stat says, for every
// kind of file and mode bit a file server may meet.
func TestStatIsOsStat(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "site.css")
	must(t, os.WriteFile(file, []byte("p{}"), 0o640))
	setuid := filepath.Join(dir, "setuid")
	must(t, os.WriteFile(setuid, nil, 0o755))
	must(t, os.Chmod(setuid, 0o755|fs.ModeSetuid|fs.ModeSetgid))
	sticky := filepath.Join(dir, "sticky")
	must(t, os.Mkdir(sticky, 0o755))
	must(t, os.Chmod(sticky, 0o1777|fs.ModeSticky))
	fifo := filepath.Join(dir, "pipe")
	must(t, unixMkfifo(fifo))
	for _, name := range []string{file, setuid, sticky, fifo, dir, "/dev/null"} {
		want, err := os.Stat(name)
		must(t, err)
		got, err := FS{}.Stat(name)
		if err != nil {
			t.Errorf("Stat(%s): %v", name, err)
			continue
		}
		if got.Name() != want.Name() || got.Size() != want.Size() || got.Mode() != want.Mode() ||
			!got.ModTime().Equal(want.ModTime()) || got.IsDir() != want.IsDir() {
			t.Errorf("Stat(%s) = %s %d %v %v %v, os.Stat: %s %d %v %v %v", name,
				got.Name(), got.Size(), got.Mode(), got.ModTime(), got.IsDir(),
				want.Name(), want.Size(), want.Mode(), want.ModTime(), want.IsDir())
		}
	}
}

// TestRemovedWorkingDirectory: a relative name (Caddy's root defaults to
// its working directory) is not looked up from / when the working
// directory was removed: ./etc/passwd is not /etc/passwd.
func TestRemovedWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	must(t, os.Remove(dir))
	for _, mode := range resolveModes {
		t.Run(mode.name, func(t *testing.T) {
			resolving(t, mode.with)
			if _, err := (FS{}).Stat("etc/passwd"); err == nil {
				t.Error("etc/passwd found in a removed working directory")
			}
		})
	}
}
