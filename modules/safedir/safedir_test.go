package safedir

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hearth-dev/hearth/modules/internal/fusetest"
)

// nobody returns the uid and gid of the user nobody, skipping the test
// when it cannot make files of another user (not root).
func nobody(t *testing.T) (int, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make files of another user")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

func mkdir(t *testing.T, path string, mode fs.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestEnsure(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode fs.FileMode
		// setup prepares base and returns the directory to ensure
		setup func(t *testing.T, base string) string
		err   string // "" for success
	}{
		{"created 0755", 0o755, func(t *testing.T, base string) string { return filepath.Join(base, "d") }, ""},
		{"created 0700 with missing parents", 0o700, func(t *testing.T, base string) string { return filepath.Join(base, "a", "b", "d") }, ""},
		{"ours, narrowed", 0o700, func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "d"), 0o755)
			return filepath.Join(base, "d")
		}, ""},
		{"ours, writable by others", 0o755, func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "d"), 0o777)
			return filepath.Join(base, "d")
		}, "is writable by group or others (mode 0777)"},
		{"ours, writable by the group", 0o700, func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "d"), 0o770)
			return filepath.Join(base, "d")
		}, "is writable by group or others"},
		{"a symbolic link to a directory of ours", 0o755, func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "real"), 0o755)
			os.Symlink(filepath.Join(base, "real"), filepath.Join(base, "d"))
			return filepath.Join(base, "d")
		}, "is a symbolic link"},
		{"a dangling symbolic link", 0o755, func(t *testing.T, base string) string {
			os.Symlink(filepath.Join(base, "nowhere"), filepath.Join(base, "d"))
			return filepath.Join(base, "d")
		}, "is a symbolic link"},
		{"a file", 0o755, func(t *testing.T, base string) string {
			os.WriteFile(filepath.Join(base, "d"), nil, 0o644)
			return filepath.Join(base, "d")
		}, "is not a directory"},
		{"owned by nobody", 0o755, func(t *testing.T, base string) string {
			uid, gid := nobody(t)
			mkdir(t, filepath.Join(base, "d"), 0o755)
			os.Chown(filepath.Join(base, "d"), uid, gid)
			return filepath.Join(base, "d")
		}, "is owned by nobody"},
		{"in a world-writable parent without the sticky bit", 0o755, func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "tmp"), 0o777)
			return filepath.Join(base, "tmp", "d")
		}, "without the sticky bit"},
		{"in a world-writable parent with the sticky bit", 0o755, func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "tmp"), 0o777|fs.ModeSticky)
			return filepath.Join(base, "tmp", "d")
		}, ""},
		{"under a parent of nobody's", 0o755, func(t *testing.T, base string) string {
			uid, gid := nobody(t)
			mkdir(t, filepath.Join(base, "theirs"), 0o755)
			os.Chown(filepath.Join(base, "theirs"), uid, gid)
			return filepath.Join(base, "theirs", "d")
		}, "is owned by nobody"},
		{"through a symbolic link in the parents", 0o755, func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "real"), 0o755)
			os.Symlink(filepath.Join(base, "real"), filepath.Join(base, "link"))
			return filepath.Join(base, "link", "d")
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := filepath.EvalSymlinks(t.TempDir())
			dir := tc.setup(t, base)
			got, err := Ensure(dir, tc.mode)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Ensure(%s) = %q, %v; want an error with %q", dir, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			info, err := os.Lstat(got)
			if err != nil || !info.IsDir() || info.Mode().Perm() != tc.mode || int(info.Sys().(*syscall.Stat_t).Uid) != os.Geteuid() {
				t.Fatalf("%s: %v %v", got, info, err)
			}
			if resolved, _ := filepath.EvalSymlinks(got); resolved != got {
				t.Errorf("returned %s, which resolves to %s", got, resolved)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	data := []byte("print('the real runtime')\n")
	for _, tc := range []struct {
		name  string
		mode  fs.FileMode
		setup func(t *testing.T, dir, path string)
	}{
		{"new", 0o644, func(*testing.T, string, string) {}},
		{"the same already", 0o600, func(t *testing.T, _, path string) { os.WriteFile(path, data, 0o600) }},
		{"other content", 0o644, func(t *testing.T, _, path string) { os.WriteFile(path, []byte("planted"), 0o644) }},
		{"more permission", 0o600, func(t *testing.T, _, path string) { os.WriteFile(path, data, 0o666); os.Chmod(path, 0o666) }},
		{"a symbolic link to another file", 0o644, func(t *testing.T, dir, path string) {
			os.WriteFile(filepath.Join(dir, "target"), []byte("untouched"), 0o644)
			os.Symlink(filepath.Join(dir, "target"), path)
		}},
		{"nobody's", 0o644, func(t *testing.T, _, path string) {
			uid, gid := nobody(t)
			os.WriteFile(path, data, 0o644)
			os.Chown(path, uid, gid)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := Ensure(filepath.Join(t.TempDir(), "d"), 0o755)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "runtime.py")
			tc.setup(t, dir, path)
			if err := WriteFile(dir, "runtime.py", data, tc.mode); err != nil {
				t.Fatal(err)
			}
			got, err := ReadFile(path, tc.mode, 1<<20)
			if err != nil || string(got) != string(data) {
				t.Fatalf("ReadFile: %q, %v", got, err)
			}
			if info, _ := os.Lstat(path); info.Mode() != tc.mode {
				t.Errorf("mode %v, want %v", info.Mode(), tc.mode)
			}
			if target, err := os.ReadFile(filepath.Join(dir, "target")); err == nil && string(target) != "untouched" {
				t.Errorf("the link's target was written: %q", target)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp")); len(left) > 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
}

func TestReadFileRefuses(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "key"), []byte("k"), 0o600)
	os.Symlink(filepath.Join(dir, "key"), filepath.Join(dir, "link"))
	os.WriteFile(filepath.Join(dir, "open"), []byte("k"), 0o644)
	os.Mkdir(filepath.Join(dir, "dir"), 0o700)
	for _, tc := range []struct{ name, err string }{
		{"link", "is a symbolic link"},
		{"open", "more than 0600"},
		{"dir", "is not a regular file"},
	} {
		if _, err := ReadFile(filepath.Join(dir, tc.name), 0o600, 100); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "missing"), 0o600, 100); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	if os.Geteuid() == 0 {
		uid, gid := nobody(t)
		os.Chown(filepath.Join(dir, "key"), uid, gid)
		if _, err := ReadFile(filepath.Join(dir, "key"), 0o600, 100); err == nil || !strings.Contains(err.Error(), "is owned by nobody") {
			t.Errorf("nobody's file: %v", err)
		}
	}
}

// TestEnsureRefusesFUSE: another account made the directory first and
// mounted a FUSE file system on it (fusermount, where allow_other is
// allowed), whose server says the directory is Caddy's and closed to
// others. Its owner is the server's word: refused, so Hearth never
// writes the workers' runtime where that account serves what they read.
func TestEnsureRefusesFUSE(t *testing.T) {
	uid, gid := nobody(t)
	parent := t.TempDir()
	dir := filepath.Join(parent, "hearth-runtime-0")
	mkdir(t, dir, 0o755)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	fusetest.Mount(t, dir, fusetest.Tree{RootOwner: uint32(os.Geteuid()), RootMode: 0o700})
	if info, err := os.Lstat(dir); err != nil || int(info.Sys().(*syscall.Stat_t).Uid) != os.Geteuid() {
		t.Fatalf("the FUSE directory is not said to be Caddy's (%v): the test tests nothing", err)
	}
	if _, err := Ensure(dir, 0o700); err == nil || !strings.Contains(err.Error(), "FUSE") {
		t.Errorf("a FUSE directory claiming to be Caddy's: %v, want refused", err)
	}
	// one that Caddy's own account (root here) mounted is its own: a
	// rootless container's fuse-overlayfs
	own := filepath.Join(parent, "own")
	mkdir(t, own, 0o700)
	fusetest.MountFor(t, own, fusetest.Tree{RootOwner: uint32(os.Geteuid()), RootMode: 0o700}, os.Geteuid())
	if _, err := Ensure(own, 0o700); err != nil {
		t.Errorf("a FUSE directory Caddy's account mounted: %v, want it used", err)
	}
}

// TestTrusted: a directory Hearth reads and writes through a library
// (a config's file storage) is trusted only when no one else can have put
// anything under it: it and its parents are root's or Caddy's user's, and
// it is writable by no one else (a parent: unless sticky). The path to use
// is the one checked, links resolved: a link another user owns could be
// pointed elsewhere after the check.
func TestTrusted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, base string) (dir, want string) // the directory to judge, and the path to use
		err   string
	}{
		{"a directory of Caddy's user", func(t *testing.T, base string) (string, string) {
			dir := dirOf(t, filepath.Join(base, "st"), 0o700)
			return dir, dir
		}, ""},
		{"one that does not exist yet, under one of Caddy's user", func(t *testing.T, base string) (string, string) {
			dir := filepath.Join(dirOf(t, filepath.Join(base, "st"), 0o755), "not", "yet")
			return dir, dir
		}, ""},
		{"a link to a directory of Caddy's user", func(t *testing.T, base string) (string, string) {
			target := dirOf(t, filepath.Join(base, "st"), 0o700)
			os.Symlink(target, filepath.Join(base, "link"))
			return filepath.Join(base, "link"), target
		}, ""},
		{"a link another user owns, to a directory of Caddy's user: the target is used", func(t *testing.T, base string) (string, string) {
			uid, gid := nobody(t)
			target := dirOf(t, filepath.Join(base, "st"), 0o700)
			theirs := dirOf(t, filepath.Join(base, "theirs"), 0o755)
			os.Symlink(target, filepath.Join(theirs, "link"))
			os.Lchown(filepath.Join(theirs, "link"), uid, gid)
			os.Chown(theirs, uid, gid)
			return filepath.Join(theirs, "link", "not-yet"), filepath.Join(target, "not-yet")
		}, ""},
		{"a link to nowhere", func(t *testing.T, base string) (string, string) {
			os.Symlink(filepath.Join(base, "nowhere"), filepath.Join(base, "link"))
			return filepath.Join(base, "link"), ""
		}, "no such file"},
		{"one others can write", func(t *testing.T, base string) (string, string) {
			return dirOf(t, filepath.Join(base, "st"), 0o777), ""
		}, "is writable by group or others"},
		{"one others can write, with the sticky bit", func(t *testing.T, base string) (string, string) {
			return dirOf(t, filepath.Join(base, "st"), 0o777|fs.ModeSticky), ""
		}, "is writable by group or others"},
		{"one under a parent others can write", func(t *testing.T, base string) (string, string) {
			return dirOf(t, filepath.Join(dirOf(t, filepath.Join(base, "open"), 0o777), "st"), 0o700), ""
		}, "without the sticky bit"},
		{"one that does not exist yet, under a parent others can write", func(t *testing.T, base string) (string, string) {
			return filepath.Join(dirOf(t, filepath.Join(base, "open"), 0o777), "st"), ""
		}, "is writable by group or others"},
		{"a file", func(t *testing.T, base string) (string, string) {
			os.WriteFile(filepath.Join(base, "file"), nil, 0o600)
			return filepath.Join(base, "file"), ""
		}, "is not a directory"},
		{"another user's", func(t *testing.T, base string) (string, string) {
			uid, gid := nobody(t)
			dir := dirOf(t, filepath.Join(base, "st"), 0o700)
			os.Chown(dir, uid, gid)
			return dir, ""
		}, "not by root or Caddy's user"},
		{"a link into another user's", func(t *testing.T, base string) (string, string) {
			uid, gid := nobody(t)
			theirs := dirOf(t, filepath.Join(base, "theirs"), 0o755)
			os.Chown(theirs, uid, gid)
			os.Symlink(dirOf(t, filepath.Join(theirs, "st"), 0o700), filepath.Join(base, "link"))
			return filepath.Join(base, "link"), ""
		}, "not by root or Caddy's user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := dirOf(t, filepath.Join(t.TempDir(), "base"), 0o755)
			base, _ = filepath.EvalSymlinks(base)
			dir, want := tc.setup(t, base)
			got, err := Trusted(dir)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Trusted: %v, want %q", err, tc.err)
			}
			if got != want {
				t.Errorf("Trusted gave the path %q, want %q", got, want)
			}
		})
	}
}

// dirOf makes dir with exactly mode and returns it.
func dirOf(t *testing.T, dir string, mode fs.FileMode) string {
	t.Helper()
	mkdir(t, dir, mode)
	return dir
}

// TestTrustedFile: a file no one but root or Caddy's user can have written
// (a config that may be run for another account's code).
func TestTrustedFile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, base string) string
		err   string
	}{
		{"Caddy's user's, in its directory", func(t *testing.T, base string) string {
			return fileOf(t, filepath.Join(base, "Caddyfile"), 0o644)
		}, ""},
		{"in a shared directory with the sticky bit", func(t *testing.T, base string) string {
			return fileOf(t, filepath.Join(dirOf(t, filepath.Join(base, "tmp"), 0o777|fs.ModeSticky), "Caddyfile"), 0o644)
		}, ""},
		{"writable by others", func(t *testing.T, base string) string {
			return fileOf(t, filepath.Join(base, "Caddyfile"), 0o666)
		}, "writable by group or others"},
		{"in a directory others can write", func(t *testing.T, base string) string {
			return fileOf(t, filepath.Join(dirOf(t, filepath.Join(base, "open"), 0o777), "Caddyfile"), 0o644)
		}, "without the sticky bit"},
		{"another user's", func(t *testing.T, base string) string {
			uid, gid := nobody(t)
			f := fileOf(t, filepath.Join(base, "Caddyfile"), 0o644)
			os.Chown(f, uid, gid)
			return f
		}, "is owned by nobody"},
		{"in another user's directory", func(t *testing.T, base string) string {
			uid, gid := nobody(t)
			theirs := dirOf(t, filepath.Join(base, "theirs"), 0o755)
			os.Chown(theirs, uid, gid)
			return fileOf(t, filepath.Join(theirs, "Caddyfile"), 0o644)
		}, "theirs is owned by nobody"},
		{"a link another user made, to Caddy's user's file", func(t *testing.T, base string) string {
			uid, gid := nobody(t)
			os.Symlink(fileOf(t, filepath.Join(base, "Caddyfile"), 0o644), filepath.Join(base, "link"))
			os.Lchown(filepath.Join(base, "link"), uid, gid)
			return filepath.Join(base, "link")
		}, "link is owned by nobody"},
		{"a link of Caddy's user's, to Caddy's user's file", func(t *testing.T, base string) string {
			os.Symlink(fileOf(t, filepath.Join(base, "Caddyfile"), 0o644), filepath.Join(base, "link"))
			return filepath.Join(base, "link")
		}, ""},
		{"a link of Caddy's user's, to a file in another user's directory", func(t *testing.T, base string) string {
			uid, gid := nobody(t)
			theirs := dirOf(t, filepath.Join(base, "theirs"), 0o755)
			os.Chown(theirs, uid, gid)
			os.Symlink(fileOf(t, filepath.Join(theirs, "Caddyfile"), 0o644), filepath.Join(base, "link"))
			return filepath.Join(base, "link")
		}, "theirs is owned by nobody"},
		{"a chain of links through another user's link, to Caddy's user's file", func(t *testing.T, base string) string {
			// base/link (Caddy's user's) → base/theirs/hop (nobody's, in
			// nobody's directory) → base/Caddyfile: nobody could re-point
			// hop once the ends were checked
			uid, gid := nobody(t)
			file := fileOf(t, filepath.Join(base, "Caddyfile"), 0o644)
			theirs := dirOf(t, filepath.Join(base, "theirs"), 0o755)
			os.Symlink(file, filepath.Join(theirs, "hop"))
			os.Lchown(filepath.Join(theirs, "hop"), uid, gid)
			os.Chown(theirs, uid, gid)
			os.Symlink(filepath.Join(theirs, "hop"), filepath.Join(base, "link"))
			return filepath.Join(base, "link")
		}, "hop is owned by nobody"},
		{"a relative chain of Caddy's user's links, with ..", func(t *testing.T, base string) string {
			fileOf(t, filepath.Join(base, "Caddyfile"), 0o644)
			sub := dirOf(t, filepath.Join(base, "sub"), 0o755)
			os.Symlink("../Caddyfile", filepath.Join(sub, "hop"))
			os.Symlink("sub/hop", filepath.Join(base, "link"))
			return filepath.Join(base, "link")
		}, ""},
		{"a link to a directory another user can write, then ..", func(t *testing.T, base string) string {
			// base/into → base/open/deep (others can write open): the
			// kernel opens base/into/../Caddyfile as base/open/Caddyfile
			open := dirOf(t, filepath.Join(base, "open"), 0o777)
			dirOf(t, filepath.Join(open, "deep"), 0o755)
			fileOf(t, filepath.Join(open, "Caddyfile"), 0o644)
			fileOf(t, filepath.Join(base, "Caddyfile"), 0o644)
			os.Symlink(filepath.Join(open, "deep"), filepath.Join(base, "into"))
			return filepath.Join(base, "into") + "/../Caddyfile"
		}, "without the sticky bit"},
		{"a link on a FUSE file system another account mounted, saying it is root's", func(t *testing.T, base string) string {
			file := fileOf(t, filepath.Join(base, "Caddyfile"), 0o644)
			mnt := dirOf(t, filepath.Join(base, "mnt"), 0o755)
			fusetest.Mount(t, mnt, fusetest.Tree{RootOwner: 0, RootMode: 0o755, LinkTarget: file, LinkOwner: 0})
			return filepath.Join(mnt, "l")
		}, "FUSE"},
		{"out of another user's directory by ..", func(t *testing.T, base string) string {
			// they could move theirs deeper, and .. would lead elsewhere
			uid, gid := nobody(t)
			fileOf(t, filepath.Join(base, "Caddyfile"), 0o644)
			theirs := dirOf(t, filepath.Join(base, "theirs"), 0o755)
			os.Chown(theirs, uid, gid)
			return theirs + "/../Caddyfile"
		}, "theirs is owned by nobody"},
		{"a loop of links", func(t *testing.T, base string) string {
			os.Symlink(filepath.Join(base, "b"), filepath.Join(base, "a"))
			os.Symlink(filepath.Join(base, "a"), filepath.Join(base, "b"))
			return filepath.Join(base, "a")
		}, "symbolic links"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := dirOf(t, filepath.Join(t.TempDir(), "base"), 0o755)
			err := TrustedFile(tc.setup(t, base))
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("TrustedFile: %v, want %q", err, tc.err)
			}
		})
	}
}

// fileOf makes an empty file with exactly mode and returns it.
func fileOf(t *testing.T, path string, mode fs.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}
