// Package regularfile opens a file for reading only when it is a regular
// file, and opens nothing else on the way. A path an app's account
// chooses may name a device or a FIFO, through a link or not: opening a
// device for reading can act (a watchdog is armed, a tape rewound), a
// terminal opened by a process that has none becomes its controlling
// terminal (whoever holds the other end can then stop Caddy with a
// keystroke), and a FIFO with no writer blocks the open for good.
package regularfile

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// NotRegularError is a path that is not a regular file; Kind says what it
// is ("a directory", "a device", …).
type NotRegularError struct{ Kind string }

func (e *NotRegularError) Error() string { return "not a regular file: " + e.Kind }

// Open opens the regular file at path (links followed) for reading. It
// looks at the file through an O_PATH descriptor first, which opens
// nothing, then reopens that same file through /proc/self/fd, with the
// permission checks of a read. Anything but a regular file is a
// *NotRegularError.
func Open(path string) (*os.File, error) {
	pfd, err := syscall.Open(path, unix.O_PATH|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(pfd)
	var st syscall.Stat_t
	if err := syscall.Fstat(pfd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if mode := st.Mode & syscall.S_IFMT; mode != syscall.S_IFREG {
		return nil, &NotRegularError{Kind: Kind(mode)}
	}
	// O_NONBLOCK, then cleared: a lease another process holds on the file
	// (F_SETLEASE; its owner may take one) answers EAGAIN at once, where a
	// blocking open waited lease-break-time (45 s), an app's start with it
	fd, err := syscall.Open("/proc/self/fd/"+strconv.Itoa(pfd), syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err == syscall.ENOENT || err == syscall.ENOSYS || err == syscall.EACCES {
		// no /proc (a chroot), or an older kernel that lets only the
		// thread-group leader through it after a file-system uid change:
		// the path again, without blocking, and it must still be the file
		// looked at (the same device and inode)
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		if err == nil {
			var again syscall.Stat_t
			if serr := syscall.Fstat(fd, &again); serr != nil || again.Dev != st.Dev || again.Ino != st.Ino {
				syscall.Close(fd)
				return nil, &fs.PathError{Op: "open", Path: path, Err: errors.New("the file changed while it was opened")}
			}
		}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, syscall.O_RDONLY); err != nil {
		syscall.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Kind names the kind of file a stat mode (S_IFMT bits) is, for messages.
func Kind(mode uint32) string {
	switch mode {
	case syscall.S_IFDIR:
		return "a directory"
	case syscall.S_IFIFO:
		return "a named pipe (FIFO)"
	case syscall.S_IFSOCK:
		return "a socket"
	case syscall.S_IFCHR, syscall.S_IFBLK:
		return "a device"
	}
	return "not a regular file"
}
