package keeper

import (
	"os"
	"strconv"
	"syscall"
)

// MarkInheritedCloseOnExec marks every file descriptor above 2 close-on-
// exec. Caddy calls it once, when it starts (the supervisor package's
// init), and the keeper before it serves: the only descriptors then open
// without close-on-exec are those the process inherited (Go opens its own
// close-on-exec), and one inherited without it (from a shell's
// `exec 7<file`, a supervisor, socket activation, a library that opened
// one in Caddy before the keeper was started) would otherwise be passed
// on to every worker, before_start command and process upstream. The
// descriptors stay open and usable (Caddy's `fd/N` listener addresses work
// as before); children get only 0-2 and the descriptors Hearth hands them
// (a worker's channels).
func MarkInheritedCloseOnExec() {
	const (
		sysCloseRange     = 436    // close_range(2), Linux 5.11; the same number on every architecture
		closeRangeCloexec = 1 << 2 // CLOSE_RANGE_CLOEXEC
	)
	if _, _, e := syscall.RawSyscall(sysCloseRange, 3, ^uintptr(0), closeRangeCloexec); e == 0 {
		return
	}
	// older kernels: one by one
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		flags, _, errno := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
		if errno == 0 && flags&syscall.FD_CLOEXEC == 0 {
			syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, flags|syscall.FD_CLOEXEC)
		}
	}
}
