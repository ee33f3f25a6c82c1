// Package regularfile opens a file for reading only when it is a regular
// file, and opens nothing else on the way. A path an app's account
// chooses may name a device or a FIFO, through a link or not: opening a
// device for reading can act (a watchdog is armed, a tape rewound), a
// terminal opened by a process that has none becomes its controlling
// terminal (whoever holds the other end can then stop Caddy with a
// keystroke), and a FIFO with no writer blocks the open for good. Nor is
// a file of the kernel's own file systems (procfs, sysfs, tracefs, …)
// read: they look regular, but a read of /proc/kmsg or tracefs's
// trace_pipe waits for the kernel's next message (Caddy's start with it),
// and others are the kernel's or another process's state
// (/proc/1/environ), not a file anyone wrote.
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
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(pfd, &sfs); err != nil {
		return nil, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	if name, ok := kernelFS[int64(sfs.Type)]; ok {
		return nil, &NotRegularError{Kind: "a file of the kernel's " + name + " file system"}
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

// kernelFS names the kernel's own file systems (statfs(2)'s f_type),
// whose files Open refuses: what reads them is the kernel, not a disk.
var kernelFS = map[int64]string{
	unix.PROC_SUPER_MAGIC:    "proc",
	unix.SYSFS_MAGIC:         "sysfs",
	unix.DEBUGFS_MAGIC:       "debugfs",
	unix.TRACEFS_MAGIC:       "tracefs",
	unix.SECURITYFS_MAGIC:    "securityfs",
	0x62656570:               "configfs", // CONFIGFS_MAGIC
	0x65735543:               "fusectl",  // FUSE_CTL_SUPER_MAGIC
	unix.EFIVARFS_MAGIC:      "efivarfs",
	unix.CGROUP_SUPER_MAGIC:  "cgroup",
	unix.CGROUP2_SUPER_MAGIC: "cgroup2",
	unix.BPF_FS_MAGIC:        "bpf",
	unix.PSTOREFS_MAGIC:      "pstore",
	unix.BINFMTFS_MAGIC:      "binfmt_misc",
	unix.SELINUX_MAGIC:       "selinuxfs",
	unix.SMACK_MAGIC:         "smackfs",
	unix.NSFS_MAGIC:          "nsfs",
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
