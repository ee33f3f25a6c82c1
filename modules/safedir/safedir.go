// Package safedir keeps the directories Hearth writes files into for its
// workers (the Python runtime, the secret keys of `settings auto`, the
// sockets of process upstreams) safe from other local users: a directory
// is created by Caddy with a known mode, and before every use it must be a
// real directory (not a symbolic link) owned by Caddy's user that nobody
// else can write, under parents that nobody else can rename it out of. A
// directory that fails these checks is refused, never repaired: someone
// else may have created it to plant code that the workers would run.
package safedir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Ensure creates dir with mode if it does not exist (its missing parents
// with mode 0700) and verifies it and its parents. It returns the
// directory's path with symbolic links in its parents resolved (use that
// path: it is the one verified). An existing directory of Caddy's user
// with more read or search permission than mode is narrowed to mode; one
// that is a symbolic link, is owned by someone else, or is writable by
// group or others is refused, with the reason and the fix.
func Ensure(dir string, mode fs.FileMode) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", parent, err)
	}
	if parent, err = filepath.EvalSymlinks(parent); err != nil {
		return "", err
	}
	if err := checkParents(parent); err != nil {
		return "", err
	}
	dir = filepath.Join(parent, filepath.Base(dir))
	created := false
	if err := os.Mkdir(dir, mode); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	info, err := os.Lstat(dir)
	if err != nil {
		return "", err
	}
	if err := checkOwned(dir, info); err != nil {
		return "", err
	}
	if !info.IsDir() {
		return "", refuse(dir, "is not a directory")
	}
	if info.Mode().Perm()&0o022 != 0 {
		return "", refuse(dir, fmt.Sprintf("is writable by group or others (mode %04o)", info.Mode().Perm()))
	}
	// created (the umask may have narrowed mode), or ours with more read
	// access than wanted: set exactly mode
	if created || info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != mode {
		if err := os.Chmod(dir, mode); err != nil {
			return "", fmt.Errorf("setting the mode of %s: %w", dir, err)
		}
	}
	return dir, nil
}

// Trusted verifies a directory that Hearth reads and writes through a
// library it does not control (a file storage of Caddy's) and returns it
// with symbolic links resolved: use that path, the one verified, since a
// link on the way could be pointed elsewhere once checked. The directory
// and every one above it must belong to root or Caddy's user (and not be
// on a FUSE file system someone else mounted), and no one else may write
// to it, nor to a parent without the sticky bit: then no one else can have
// put a link or a file of theirs under it. A directory that does not
// exist yet is judged by its nearest existing parent, under which it would
// be created; a link to nowhere is refused.
func Trusted(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	rest := "" // what does not exist yet, under dir
	for {
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) && filepath.Dir(dir) != dir {
			rest = filepath.Join(filepath.Base(dir), rest)
			dir = filepath.Dir(dir)
			continue
		}
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return "", err
		}
		info, err := os.Stat(real)
		if err != nil {
			return "", err
		}
		if !info.IsDir() {
			return "", fmt.Errorf("%s is not a directory", real)
		}
		if info.Mode().Perm()&0o022 != 0 {
			return "", fmt.Errorf("%s is writable by group or others (mode %04o): another user could put a link or a file of theirs under it; `chmod go-w %s`", real, info.Mode().Perm(), real)
		}
		if problem := othersFUSE(real); problem != "" {
			return "", refuse(real, problem)
		}
		if err := checkParents(real); err != nil {
			return "", err
		}
		return filepath.Join(real, rest), nil
	}
}

// TrustedFile verifies that no one but root or Caddy's user can have
// written the file at path, or can point it elsewhere: along the path as
// written, and along every step the kernel takes to open it (each link on
// the way, and the directories it leads through, one link at a time: a
// link in the middle of a chain could otherwise be another account's, to
// re-point once checked), every entry belongs to one of them, no one else
// may write to the file, no one else may write to a directory on the way
// without its sticky bit, and none is on a FUSE file system someone else
// mounted (whose owners are what its server says).
func TrustedFile(path string) error {
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		// the kernel starts from the working directory as it is then,
		// wherever its owner may have moved it: it must be trusted too
		if err := checkEntries(wd); err != nil {
			return err
		}
		path = wd + "/" + path // not cleaned: "link/.." is not where the kernel goes
	}
	if err := checkEntries(filepath.Clean(path)); err != nil {
		return err
	}
	// follow it as the kernel does, a component at a time; cur never
	// holds a link, so ".." is its parent
	todo, cur, links := strings.Split(path, "/"), "/", 0
	for len(todo) > 0 {
		part := todo[0]
		todo = todo[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			// where ".." leads is up to the directory left: its owner
			// could move it elsewhere once checked
			if err := checkEntries(cur); err != nil {
				return err
			}
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, part)
		info, err := os.Lstat(next)
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return fmt.Errorf("%s: more than %d symbolic links on the way", path, maxLinks)
		}
		if err := checkEntries(next); err != nil { // the link, and the directories it is in
			return err
		}
		target, err := os.Readlink(next)
		if err != nil {
			return err
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return checkEntries(cur)
}

// maxLinks is how many symbolic links TrustedFile follows on one path
// (the kernel's own limit).
const maxLinks = 40

// checkEntries checks path and every directory above it, as written (a
// link is checked as a link, not followed): each belongs to root or
// Caddy's user; the file at path is writable by no one else, and a
// directory by no one else without its sticky bit.
func checkEntries(path string) error {
	for p := path; ; p = filepath.Dir(p) {
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner information", p)
		}
		if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("%s is owned by %s", p, Owner(st.Uid))
		}
		if info.Mode()&fs.ModeSymlink == 0 { // (a link's file system is its directory's, checked next)
			if problem := othersFUSE(p); problem != "" {
				return refuse(p, problem)
			}
		}
		perm := info.Mode().Perm()
		switch {
		case info.Mode()&fs.ModeSymlink != 0: // its mode means nothing; its owner was checked
		case p == path && perm&0o022 != 0:
			return fmt.Errorf("%s is writable by group or others (mode %04o)", p, perm)
		case p != path && perm&0o022 != 0 && info.Mode()&fs.ModeSticky == 0:
			return fmt.Errorf("%s is writable by group or others without the sticky bit (mode %04o)", p, perm)
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}

// checkParents refuses a parent that another user owns, or that group or
// others can write without the sticky bit (they could rename the
// directory away and put their own in its place).
func checkParents(dir string) error {
	for {
		info, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner information", dir)
		}
		if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("%s is owned by %s, not by root or Caddy's user, %s: another user could replace what Hearth writes under it; use a directory of root or Caddy's user (for the temporary directory, set TMPDIR)", dir, Owner(st.Uid), Owner(uint32(os.Geteuid())))
		}
		if info.Mode().Perm()&0o022 != 0 && info.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("%s is writable by group or others without the sticky bit (mode %04o): another user could replace what Hearth writes under it; `chmod go-w %s` (or `chmod +t` for a shared temporary directory)", dir, info.Mode().Perm(), dir)
		}
		up := filepath.Dir(dir)
		if up == dir {
			return nil
		}
		dir = up
	}
}

// checkOwned refuses a symbolic link and what Caddy's user does not own.
func checkOwned(path string, info fs.FileInfo) error {
	if info.Mode()&fs.ModeSymlink != 0 {
		return refuse(path, "is a symbolic link")
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", path)
	}
	if int(st.Uid) != os.Geteuid() {
		return refuse(path, fmt.Sprintf("is owned by %s, not by Caddy's user, %s", Owner(st.Uid), Owner(uint32(os.Geteuid()))))
	}
	if problem := othersFUSE(path); problem != "" {
		return refuse(path, problem+" (unmount it first: `fusermount3 -u "+path+"`)")
	}
	return nil
}

// othersFUSE says why path cannot be trusted when it is on a FUSE file
// system that neither root nor Caddy's user mounted ("": it is not).
func othersFUSE(path string) string {
	by, fuse := fuseMountedBy(path)
	if !fuse || by == 0 || by == os.Geteuid() {
		return ""
	}
	who := "an account it does not say"
	if by > 0 {
		who = Owner(uint32(by))
	}
	return "is on a FUSE file system that " + who + " mounted, whose owners are whatever the program serving it says"
}

// fuseMountedBy reports whether path is on a FUSE file system and, if so,
// the account that mounted it (its user_id; -1 when not known): any
// account may mount one where fusermount allows allow_other, and its
// server says who owns its files. One that root or Caddy's account
// mounted (a rootless container's fuse-overlayfs) is theirs.
func fuseMountedBy(path string) (uid int, fuse bool) {
	var fsst unix.Statfs_t
	if err := unix.Statfs(path, &fsst); err == nil && fsst.Type != unix.FUSE_SUPER_MAGIC {
		return -1, false
	}
	// FUSE, or not known: the mount's entry says who mounted it
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return -1, true
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return -1, true
	}
	id := strconv.FormatUint(stx.Mnt_id, 10)
	for _, line := range strings.Split(string(data), "\n") {
		// mount-id parent-id major:minor root mount-point options [tags] - type source super-options
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if len(fields) == 0 || fields[0] != id || sep < 0 || len(fields) < sep+4 {
			continue
		}
		if fstype := fields[sep+1]; fstype != "fuse" && fstype != "fuseblk" && !strings.HasPrefix(fstype, "fuse.") {
			return -1, false
		}
		for _, opt := range strings.Split(fields[sep+3], ",") {
			if v, ok := strings.CutPrefix(opt, "user_id="); ok {
				if n, err := strconv.Atoi(v); err == nil {
					return n, true
				}
			}
		}
	}
	return -1, true
}

// refuse explains a refused path.
func refuse(path, problem string) error {
	return fmt.Errorf("%s %s: someone else may have made it to plant code or files that Hearth's workers would use, so Hearth will not use it; look at what it holds, remove it (`rm -rf %s`) and start Caddy again", path, problem, path)
}

// Owner names a uid for messages: "name (uid N)", or "uid N" for a uid
// with no account.
func Owner(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username + " (uid " + id + ")"
	}
	return "uid " + id
}

// WriteFile makes dir/name hold data with mode: it is left alone when it
// already does (a regular file of Caddy's user with that content and no
// more permission than mode), and otherwise written to a new temporary
// file in dir and renamed over it, then checked again. dir must have
// passed Ensure.
func WriteFile(dir, name string, data []byte, mode fs.FileMode) error {
	path := filepath.Join(dir, name)
	if current, err := ReadFile(path, mode, int64(len(data))+1); err == nil && bytes.Equal(current, data) {
		return nil
	}
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp") // O_EXCL, mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	written, err := ReadFile(path, mode, int64(len(data))+1)
	if err != nil {
		return err
	}
	if !bytes.Equal(written, data) {
		return fmt.Errorf("%s changed while Hearth wrote it", path)
	}
	return nil
}

// ReadFile reads path, at most limit bytes, if it is a regular file (not
// a symbolic link) of Caddy's user with no more permission than mode;
// otherwise it returns an error (fs.ErrNotExist when there is no file).
func ReadFile(path string, mode fs.FileMode, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, refuse(path, "is a symbolic link")
		}
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkOwned(path, info); err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, refuse(path, "is not a regular file")
	}
	if info.Mode().Perm()&^mode != 0 {
		return nil, fmt.Errorf("%s has mode %04o, more than %04o", path, info.Mode().Perm(), mode)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}
