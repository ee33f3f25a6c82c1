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
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// Stat describes the file name, as Open would find it. Its Sys is the
// *unix.Stat_t.
func (f FS) Stat(name string) (fs.FileInfo, error) {
	fd, st, err := f.reach(name) // opens nothing: a FIFO does not block, a device does not act
	if err != nil {
		return nil, err
	}
	unix.Close(fd)
	return &fileInfo{name: filepath.Base(name), st: st}, nil
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

// open opens name for reading (or listing, with O_DIRECTORY): directly
// where no link is on the way (openDirect), else as reach finds it, only
// a regular file or a directory being then opened, through the
// descriptor reach judged, so that what was judged is what is read.
func (f FS) open(name string, flags int) (*os.File, error) {
	if file, err := openDirect(name, flags); !errors.Is(err, errNoOpenat2) {
		return file, err
	}
	fd, st, err := f.reach(name)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if !readable(&st) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	rfd, err := reopen(fd, name, flags, &st)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(rfd), name), nil
}

// openDirect opens name for reading in one system call where it has no
// link (openat2), as Caddy's plain file system would, but without
// blocking on a FIFO (O_NONBLOCK) and refusing to read anything but a
// regular file or a directory. With no link on the way, nothing another
// account made leads elsewhere: there is nothing to judge, and what is
// read is what was opened. The one device an account can make is a
// whiteout (0:0; any other needs CAP_MKNOD, and a hard link cannot cross
// into /dev's file system), whose open fails (ENXIO, refused here) after
// the kernel may ask for a driver module for it, as the account's own
// open of it would. errNoOpenat2 where the path has a link or openat2 is
// not to be had: reach and reopen then.
func openDirect(name string, flags int) (*os.File, error) {
	fd, err := openat2(name, flags|unix.O_NONBLOCK|unix.O_NOCTTY)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, errNoOpenat2
	case errors.Is(err, unix.ENXIO): // a socket
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	case err != nil:
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	if !readable(&st) {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// readable reports whether st is a file a file server reads: a regular
// file or a directory; never a FIFO (it would hold a thread per request),
// a device or a socket.
func readable(st *unix.Stat_t) bool {
	mode := st.Mode & unix.S_IFMT
	return mode == unix.S_IFREG || mode == unix.S_IFDIR
}

// reach reaches name with an O_PATH descriptor, which opens nothing (a
// FIFO does not block, a device does not act), and describes what it
// reached. A path without links is reached in one system call that
// follows none; a path with links is walked one name at a time from
// descriptors of the directories on the way, so that no link can be
// swapped in between a check and a use, and its links are judged on the
// file and directories reached.
func (f FS) reach(name string) (int, unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := openNoLinks(name)
	var links []link
	var dirs []unix.Stat_t // the directories the walk went through to the file
	if err != nil && !errors.Is(err, errNoOpenat2) && !errors.Is(err, unix.ELOOP) {
		// a plain error (missing, closed): no link on the way
	} else if err != nil {
		// a link on the way; or no openat2 (the walk finds the links)
		fd, links, dirs, err = walk(name)
	}
	if err != nil {
		if slices.ContainsFunc(links, func(l link) bool { return !trusted(l.owner) }) {
			// past another account's link, what is missing and what is
			// closed to it look the same: neither is its to learn
			err = fs.ErrPermission
		}
		return -1, st, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	for _, l := range links {
		if trusted(l.owner) {
			continue
		}
		if why := unreadableBy(l.owner, fd, &st, dirs); why != "" {
			unix.Close(fd)
			f.refused(name, l, why)
			return -1, st, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
		}
	}
	return fd, st, nil
}

// reopen opens for reading the file an O_PATH descriptor fd (st) holds:
// through /proc/self/fd, or, without /proc (a chroot), by its name again
// without blocking, taken only if it is still the same file.
func reopen(fd int, name string, flags int, st *unix.Stat_t) (int, error) {
	// O_NONBLOCK, then cleared: a lease the file's owner holds on it
	// (F_SETLEASE) answers EAGAIN at once, where a blocking open would
	// hold a thread of Caddy's per request for lease-break-time (45 s)
	rfd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), flags|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOSYS) {
		rfd, err = unix.Open(name, flags|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if err != nil {
			return -1, err
		}
		var again unix.Stat_t
		if err := unix.Fstat(rfd, &again); err != nil || again.Dev != st.Dev || again.Ino != st.Ino {
			unix.Close(rfd)
			return -1, unix.EAGAIN // replaced meanwhile
		}
	}
	if err != nil {
		return -1, err
	}
	if _, err := unix.FcntlInt(uintptr(rfd), unix.F_SETFL, flags&^unix.O_NONBLOCK); err != nil {
		unix.Close(rfd)
		return -1, err
	}
	return rfd, nil
}

// openNoLinks reaches path with an O_PATH descriptor, following no
// symbolic link on the way: ELOOP where there is one, and errNoOpenat2
// where openat2 is not to be had and the path must be walked.
func openNoLinks(path string) (int, error) {
	if fd, err := openat2(path, unix.O_PATH); !errors.Is(err, errNoOpenat2) || resolveWith == walkOnly {
		return fd, err
	}
	if resolveWith == withOpenat2 && !sameNameSafe() {
		return -1, errNoOpenat2
	}
	return openSameName(path)
}

// openat2 opens path with flags following no symbolic link on the way:
// ELOOP where there is one, errNoOpenat2 where openat2 is not to be had.
func openat2(path string, flags int) (int, error) {
	if resolveWith != withOpenat2 || openat2Refused.Load() {
		return -1, errNoOpenat2
	}
	// O_LARGEFILE: openat2 adds it itself only on 64-bit kernels
	how := unix.OpenHow{Flags: uint64(flags) | unix.O_CLOEXEC | unix.O_LARGEFILE, Resolve: unix.RESOLVE_NO_SYMLINKS}
	for tries := 1; ; tries++ {
		fd, err := unix.Openat2(unix.AT_FDCWD, path, &how)
		switch {
		case (errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN)) && tries < 8: // EAGAIN: a rename raced the lookup
			continue
		case errors.Is(err, unix.ENOSYS):
			// before Linux 5.6, or refused by a system call filter
			// (systemd's RestrictSUIDSGID=, which the unit sets): for good
			openat2Refused.Store(true)
			return -1, errNoOpenat2
		case errors.Is(err, unix.EPERM):
			return -1, errNoOpenat2 // a filter, or a security module on this path: walked
		}
		return fd, err
	}
}

// openSameName is openNoLinks without openat2: the path is opened
// following its links, and the descriptor kept only if the kernel names
// the file it reached by the path asked for, cleaned: then no link was
// on the way (a link leads elsewhere than where it is), or none that
// mattered (the path names that very file without it) — in Caddy's own
// view of the mounts. The kernel's name does not say which view: an
// account that makes a mount namespace of its own can have
// served/x/etc/key be /etc/key there, and its link served/x lead into it
// through /proc/<its pid>/root. So this is used only where Caddy cannot
// follow such a link into another account's process (sameNameSafe).
// Anything else — a link, an error the walk must tell apart, no /proc —
// is errNoOpenat2. Two system calls where a walk takes three a name.
func openSameName(path string) (int, error) {
	full, err := abs(path)
	if err != nil {
		return -1, errNoOpenat2
	}
	want := filepath.Clean(full)
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, errNoOpenat2
	}
	buf := make([]byte, len(want)+1) // one more: a longer name is not the same
	n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf)
	if err != nil || string(buf[:n]) != want {
		unix.Close(fd)
		return -1, errNoOpenat2
	}
	return fd, nil
}

// sameNameSafe reports whether Caddy lacks CAP_SYS_PTRACE, without which
// the kernel lets no process follow another account's /proc/<pid>/root,
// cwd or fd links: the only ways into another mount namespace. Root has
// it; the unit's Caddy does not (its own account, CAP_SETUID and
// CAP_SETGID). Unknown is not safe.
var sameNameSafe = sync.OnceValue(func() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_PTRACE/32].Effective&(1<<(unix.CAP_SYS_PTRACE%32)) == 0
})

// errNoOpenat2 says a path may have links and must be walked.
var errNoOpenat2 = errors.New("openat2 not to be had")

// How paths are reached: with openat2 where the kernel has it and no
// filter refuses it, else by name checked where that is safe
// (openSameName), falling back to the walk. Tests choose withSameName or
// walkOnly.
const (
	withOpenat2 = iota
	withSameName
	walkOnly
)

// resolveWith is how paths are reached (tests set it); openat2Refused
// says openat2 was refused as missing once, and is not tried again.
var (
	resolveWith    = withOpenat2
	openat2Refused atomic.Bool
)

// link is a symbolic link met on the way to a file.
type link struct {
	path, target string
	owner        uint32
}

// maxLinks is how many links a path may go through, and maxSteps how many
// names a walk takes at most, links' included: a path the kernel would
// take, and not the work of a tree made deep on purpose.
const (
	maxLinks = 40
	maxSteps = 4096
)

// walk reaches path one name at a time, as the kernel resolves it, each
// name opened O_PATH|O_NOFOLLOW from the descriptor of the directory it is
// in (only that one is held open): a link is read, and its owner taken,
// from its own descriptor, and what it leads to walked in turn. It returns
// an O_PATH descriptor of the file, the links met (on failure too), and
// what the directories the file is reached through were when walked, and
// those passed through on the way and left (each needs the search
// permission of whoever walks it).
func walk(path string) (fd int, links []link, dirs []unix.Stat_t, err error) {
	if len(path) > unix.PathMax {
		return -1, nil, nil, unix.ENAMETOOLONG
	}
	cur, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nil, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(cur, &st); err != nil {
		unix.Close(cur)
		return -1, nil, nil, err
	}
	dirs = []unix.Stat_t{st}
	var left []unix.Stat_t // directories passed through and left (by "..", or a link from the root)
	fail := func(err error) (int, []link, []unix.Stat_t, error) {
		unix.Close(cur)
		return -1, links, nil, err
	}
	full, err := abs(path)
	if err != nil {
		return fail(err)
	}
	todo := strings.Split(full, "/")
	for steps := 0; len(todo) > 0; steps++ {
		if steps == maxSteps {
			return fail(unix.ELOOP)
		}
		part := todo[0]
		todo = todo[1:]
		switch part {
		case "", ".":
			continue
		case "..": // what the kernel does: up from the directory reached
			if len(dirs) > 1 {
				up, err := unix.Openat(cur, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					return fail(err)
				}
				unix.Close(cur)
				// (left, it was still passed through: the kernel asks
				// for its search permission of whoever walks this way)
				left = append(left, dirs[len(dirs)-1])
				cur, dirs = up, dirs[:len(dirs)-1]
			}
			continue
		}
		next, err := unix.Openat(cur, part, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(next)
			return fail(err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			owner := linkOwner(next, &st)
			buf := make([]byte, unix.PathMax)
			n, err := unix.Readlinkat(next, "", buf)
			unix.Close(next)
			if err != nil {
				return fail(err)
			}
			if len(links) == maxLinks {
				return fail(unix.ELOOP)
			}
			target := string(buf[:n])
			links = append(links, link{path: part, target: target, owner: owner})
			if filepath.IsAbs(target) {
				root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					return fail(err)
				}
				unix.Close(cur)
				left = append(left, dirs[1:]...)
				cur, dirs = root, dirs[:1]
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		if rest := whatIsLeft(todo); rest != moreNames {
			if rest == onlySlashes && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				unix.Close(next)
				return fail(unix.ENOTDIR) // "file.css/"
			}
			unix.Close(cur)
			return next, links, append(dirs, left...), nil
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			unix.Close(next)
			return fail(unix.ENOTDIR)
		}
		unix.Close(cur)
		cur, dirs = next, append(dirs, st)
	}
	// the path ended at a directory already reached (like "/x/.."): itself,
	// reached through the ones before it
	return cur, links, append(dirs[:len(dirs)-1], left...), nil
}

// What is left of a path after a name: more names, nothing, or only
// slashes and dots (the name must then be a directory).
const (
	moreNames = iota
	atTheEnd
	onlySlashes
)

func whatIsLeft(todo []string) int {
	if len(todo) == 0 {
		return atTheEnd
	}
	for _, p := range todo {
		if p != "" && p != "." {
			return moreNames
		}
	}
	return onlySlashes
}

// abs is path from the root, not cleaned: a ".." after a link is the
// walk's to resolve, from where the link led. A working directory the
// kernel cannot name (removed, or outside the root) is an error.
func abs(path string) (string, error) {
	if filepath.IsAbs(path) {
		return path, nil
	}
	wd, err := unix.Getwd() // where the kernel is, not $PWD's name for it
	if err != nil {
		return "", err
	}
	return wd + "/" + path, nil
}

// unknownOwner is the owner of a link whose owner is not known: uid -1,
// which no account has, so that only the permission bits for anyone
// count for it.
const unknownOwner = ^uint32(0)

// linkOwner is the owner of the link fd (st), or unknownOwner when its
// file system does not keep it: a FUSE file system's server, which any
// account may run where fusermount lets it (user_allow_other), says whose
// each file is, and would say root's.
func linkOwner(fd int, st *unix.Stat_t) uint32 {
	var fsst unix.Statfs_t
	if err := unix.Fstatfs(fd, &fsst); err != nil || fsst.Type == unix.FUSE_SUPER_MAGIC {
		return unknownOwner
	}
	return st.Uid
}

// trusted reports whether links of the account uid are followed whatever
// they lead to: root's, and Caddy's own (an app running as Caddy's account
// could read what its links lead to anyway).
func trusted(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// unreadableBy says why the account uid could not read the file fd (st),
// reached through the directories dirs, or "" when it could: its owner,
// its group, or anyone must be let read the file and enter every
// directory, as the permission bits say; and a file of /proc is never
// given (what it shows depends on who reads it). Only the account's own
// group counts: Hearth starts processes with no other.
func unreadableBy(uid uint32, fd int, st *unix.Stat_t, dirs []unix.Stat_t) string {
	var fsst unix.Statfs_t
	if err := unix.Fstatfs(fd, &fsst); err != nil || fsst.Type == unix.PROC_SUPER_MAGIC {
		return "it is in /proc"
	}
	gid, known := accountGroup(uid)
	if !permits(st, uid, gid, known, 0o4) {
		return "the file is not readable by that account"
	}
	for i := range dirs {
		if !permits(&dirs[i], uid, gid, known, 0o1) {
			return fmt.Sprintf("a directory on the way (%d from the root) is not enterable by that account", i)
		}
	}
	return ""
}

// groupCache holds each account's own group for a minute: a client
// may ask for links at will, and a lookup may reach the network (NSS).
var groupCache sync.Map // uid → cachedGroup

type cachedGroup struct {
	gid   uint32
	known bool
	until time.Time
}

// accountGroup is the own group of the account uid (known false when it
// has no entry).
func accountGroup(uid uint32) (uint32, bool) {
	if c, ok := groupCache.Load(uid); ok && time.Now().Before(c.(cachedGroup).until) {
		return c.(cachedGroup).gid, c.(cachedGroup).known
	}
	var c cachedGroup
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			c.gid, c.known = uint32(g), true
		}
	}
	c.until = time.Now().Add(time.Minute)
	groupCache.Store(uid, c)
	return c.gid, c.known
}

// permits reports whether the permission bits of st give uid (of group
// gid, when known) the access bit (4 read, 1 search), as the kernel reads
// them: the owner's bits for its owner, the group's for a member, the
// others' for the rest.
func permits(st *unix.Stat_t, uid, gid uint32, known bool, bit uint32) bool {
	switch {
	case st.Uid == uid:
		return st.Mode&(bit<<6) != 0
	case known && st.Gid == gid:
		return st.Mode&(bit<<3) != 0
	}
	return st.Mode&bit != 0
}

// refused logs a link not followed (at most once a minute).
func (f FS) refused(name string, l link, why string) {
	if f.Logger == nil {
		return
	}
	ok, skipped := refusals.Allow()
	if !ok {
		return
	}
	owner := zap.Uint32("link_owner_uid", l.owner)
	if l.owner == unknownOwner {
		owner = zap.String("link_owner", "not known: its file system (FUSE) says whose it is, so it counts as anyone's")
	}
	f.Logger.Warn("not serving a file through a link its owner could not read it through (at most one such line a minute)",
		zap.String("file", name), zap.String("link", l.path), zap.String("leads_to", l.target), owner,
		zap.String("why", why), zap.Int64("not_logged_since", skipped),
		zap.String("fix", "if the file is meant to be served, copy it into the served directory, or make it readable by the link's owner; a link made by root or by Caddy's account is followed anywhere"))
}

// Interface guards
var (
	_ fs.StatFS     = FS{}
	_ fs.ReadDirFS  = FS{}
	_ fs.ReadFileFS = FS{}
	_ fs.GlobFS     = FS{}
)
