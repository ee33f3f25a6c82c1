// Package linkfs is the file system Hearth gives Caddy's file servers (and
// try_files) in place of the operating system's plain one: the same files,
// except that a symbolic link made by an account other than root or
// Caddy's own leads only to what that account could read itself.
//
// An app's account owns the directories Caddy serves its static files from
// (collectstatic writes them). Caddy reads them with its own rights, so
// without this an app — or whoever took it over — could put
// `staticfiles/a.css -> /var/lib/caddy/.local/share/caddy/certificates/…/site.key`
// there and download Caddy's private key, another app's secret key, or any
// file Caddy's account can read. Links made by root or by Caddy's account
// are followed as before (an administrator's `/srv/www -> /data/www`), and
// so are links of other accounts to files they can read themselves
// (`collectstatic --link` into Debian's Django), which gives them nothing.
package linkfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/internal/loglimit"
)

// FS is the operating system's file system, names being paths as Caddy's
// file server makes them (absolute, or relative to the working directory),
// with links judged as the package says. The zero value logs nothing.
type FS struct {
	// Logger says which link was not followed, and what to do.
	Logger *zap.Logger
}

// refusals rate-limits the warning about a link not followed: a client
// can ask for it at will.
var refusals = loglimit.Limit{Every: time.Minute}

// Open opens the file name for reading.
func (f FS) Open(name string) (fs.File, error) { return f.open(name, unix.O_RDONLY) }

// Stat describes the file name, as Open would find it.
func (f FS) Stat(name string) (fs.FileInfo, error) {
	file, err := f.open(name, unix.O_PATH) // opens nothing: a FIFO does not block, a device does not act
	if err != nil {
		return nil, err
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	return info, nil
}

// ReadDir lists the directory name, sorted by name.
func (f FS) ReadDir(name string) ([]fs.DirEntry, error) {
	dir, err := f.open(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	entries, err := dir.ReadDir(-1)
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries, err
}

// ReadFile reads the whole file name.
func (f FS) ReadFile(name string) ([]byte, error) {
	file, err := f.open(name, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return io.ReadAll(file)
}

// Glob is filepath.Glob: names only, which Open judges when they are read.
func (FS) Glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

// open opens name with flags. A path without links is opened as it is, in
// one system call that follows none (so that no link can be swapped in
// between a check and the open); a path with links is resolved, its links
// judged, and what it resolved to opened the same way, then judged again
// by what was opened.
func (f FS) open(name string, flags int) (*os.File, error) {
	file, err := openNoLinks(name, flags)
	if err == nil || !errors.Is(err, unix.ELOOP) {
		return file, err
	}
	resolved, links, err := resolve(name)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	file, err = openNoLinks(resolved, flags)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if trusted(l.owner) {
			continue
		}
		if why := unreadableBy(file, resolved, l.owner); why != "" {
			file.Close()
			f.refused(name, l, resolved, why)
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
		}
	}
	return file, nil
}

// openNoLinks opens path with flags, following no symbolic link on the way
// (openat2's RESOLVE_NO_SYMLINKS: ELOOP where there is one). Where the
// kernel has no openat2 (before Linux 5.6), only the last name is kept
// from being a link, and the path is resolved first (open's caller).
func openNoLinks(path string, flags int) (*os.File, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_NO_SYMLINKS}
	for tries := 1; ; tries++ {
		fd, err := unix.Openat2(unix.AT_FDCWD, path, &how)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), path), nil
		case (errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN)) && tries < 8: // EAGAIN: a rename raced the lookup
			continue
		case errors.Is(err, unix.ENOSYS):
			if clean, cerr := filepath.EvalSymlinks(path); cerr != nil || clean != filepath.Clean(abs(path)) {
				return nil, &fs.PathError{Op: "open", Path: path, Err: unix.ELOOP}
			}
			fd, err = unix.Open(path, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err == nil {
				return os.NewFile(uintptr(fd), path), nil
			}
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
}

func abs(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		return a
	}
	return path
}

// link is a symbolic link met resolving a path.
type link struct {
	path, target string
	owner        uint32
}

// maxLinks is how many links a path may go through, as the kernel allows.
const maxLinks = 40

// resolve follows path one name at a time, as the kernel does, and returns
// the path it leads to, with no link left in it, and the links it went
// through with their owners.
func resolve(path string) (string, []link, error) {
	var links []link
	todo := strings.Split(abs(path), "/")
	current := "/"
	for len(todo) > 0 {
		part := todo[0]
		todo = todo[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			current = filepath.Dir(current)
			continue
		}
		next := filepath.Join(current, part)
		info, err := os.Lstat(next)
		if err != nil {
			return "", nil, err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			current = next
			continue
		}
		if len(links) == maxLinks {
			return "", nil, unix.ELOOP
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", nil, err
		}
		links = append(links, link{path: next, target: target, owner: info.Sys().(*syscall.Stat_t).Uid})
		if filepath.IsAbs(target) {
			current = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return current, links, nil
}

// trusted reports whether links of the account uid are followed whatever
// they lead to: root's, and Caddy's own (an app running as Caddy's account
// could read what its links lead to anyway).
func trusted(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// unreadableBy says why the account uid could not read file, opened at the
// path resolved (with no link in it), or "" when it could: the file must
// be its own and readable by its owner, or readable by others, and every
// directory on the way its own and enterable, or enterable by others. The
// account's groups are not counted: a link may lead only where the account
// could go as anyone.
func unreadableBy(file *os.File, resolved string, uid uint32) string {
	info, err := file.Stat()
	if err != nil {
		return err.Error()
	}
	if !permits(info, uid, 0o4) {
		return "the file is not readable by that account"
	}
	for dir := filepath.Dir(resolved); ; dir = filepath.Dir(dir) {
		dinfo, err := os.Lstat(dir)
		if err != nil {
			return err.Error()
		}
		if !permits(dinfo, uid, 0o1) {
			return fmt.Sprintf("the directory %s is not enterable by that account", dir)
		}
		if dir == "/" || dir == "." {
			return ""
		}
	}
}

// permits reports whether info's permission bits give uid the access bit
// (4 read, 1 search) as its owner or as anyone.
func permits(info fs.FileInfo, uid uint32, bit fs.FileMode) bool {
	perm := info.Mode().Perm()
	if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == uid && perm&(bit<<6) != 0 {
		return true
	}
	return perm&bit != 0
}

// refused logs a link not followed (at most once a minute).
func (f FS) refused(name string, l link, resolved, why string) {
	if f.Logger == nil {
		return
	}
	ok, skipped := refusals.Allow()
	if !ok {
		return
	}
	f.Logger.Warn("not serving a file through a link its owner could not read it through (at most one such line a minute)",
		zap.String("file", name), zap.String("link", l.path), zap.Uint32("link_owner_uid", l.owner),
		zap.String("leads_to", resolved), zap.String("why", why), zap.Int64("not_logged_since", skipped),
		zap.String("fix", "if the file is meant to be served, copy it into the served directory, or make it readable by the link's owner; a link made by root or by Caddy's account is followed anywhere"))
}

// Interface guards
var (
	_ fs.StatFS     = FS{}
	_ fs.ReadDirFS  = FS{}
	_ fs.ReadFileFS = FS{}
	_ fs.GlobFS     = FS{}
)
