//go:build linux

package main

// Thin wrappers over the Linux system calls the event loop uses. The calls
// made once per request (send, receive, epoll wait) do not allocate and
// return a bare syscall.Errno; the non-blocking ones use RawSyscall (no
// scheduler hand-off: they never block), the sleeping ones Syscall6, so that
// the Go runtime knows the thread is parked in the kernel.

import (
	"syscall"
	"unsafe"
)

const (
	// epoll_pwait2(2), Linux 5.11: the generic syscall number, the same on
	// every architecture (it postdates the unification of the tables). The
	// syscall package has no wrapper for it.
	sysEpollPwait2 = 441

	prSetTimerslack = 29 // prctl(2) PR_SET_TIMERSLACK
	prGetTimerslack = 30 // prctl(2) PR_GET_TIMERSLACK

	clockMonotonic = 1 // CLOCK_MONOTONIC, the clock of Go's monotonic readings
)

// timespec and itimerspec mirror the kernel's structures on 64-bit Linux.
type itimerspec struct {
	interval syscall.Timespec
	value    syscall.Timespec
}

func setTimespec(ts *syscall.Timespec, ns int64) {
	ts.Sec = ns / 1e9
	ts.Nsec = ns % 1e9
}

// sendNB writes b to the non-blocking socket fd. MSG_NOSIGNAL: a peer that
// has gone away yields EPIPE, not a SIGPIPE.
func sendNB(fd int, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd),
		uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), syscall.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// receiver reads from sockets that have SO_TIMESTAMPNS set, with the
// kernel's receive time of the data.
type receiver struct {
	msg  syscall.Msghdr
	iov  syscall.Iovec
	cbuf [8]uint64 // control messages, 8-byte aligned
}

// recv reads into b. ts is the kernel's receive time (CLOCK_REALTIME, ns) of
// the last data read, or 0 if the kernel gave none.
func (r *receiver) recv(fd int, b []byte) (n int, ts int64, errno syscall.Errno) {
	r.iov.Base = &b[0]
	r.iov.SetLen(len(b))
	r.msg.Iov = &r.iov
	r.msg.Iovlen = 1
	r.msg.Control = (*byte)(unsafe.Pointer(&r.cbuf[0]))
	r.msg.SetControllen(len(r.cbuf) * 8)
	r.msg.Flags = 0
	m, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msg)), 0)
	if e != 0 {
		return 0, 0, e
	}
	ctl := (*[len(r.cbuf) * 8]byte)(unsafe.Pointer(&r.cbuf[0]))[:r.msg.Controllen]
	for len(ctl) >= syscall.SizeofCmsghdr {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		l := int(h.Len)
		if l < syscall.SizeofCmsghdr || l > len(ctl) {
			break
		}
		if h.Level == syscall.SOL_SOCKET && h.Type == syscall.SCM_TIMESTAMPNS &&
			l >= syscall.SizeofCmsghdr+int(unsafe.Sizeof(syscall.Timespec{})) {
			ts = (*syscall.Timespec)(unsafe.Pointer(&ctl[syscall.SizeofCmsghdr])).Nano()
		}
		if l = (l + 7) &^ 7; l >= len(ctl) {
			break
		}
		ctl = ctl[l:]
	}
	return int(m), ts, 0
}

// epollCtl is EpollCtl without the error interface.
func epollCtl(epfd, op, fd int, ev *syscall.EpollEvent) syscall.Errno {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op),
		uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return e
}

// epollPwait2 waits for events for at most *ts (nil: without a limit), with
// nanosecond resolution (subject to the thread's timer slack).
func epollPwait2(epfd int, events []syscall.EpollEvent, ts *syscall.Timespec) (int, syscall.Errno) {
	r, _, e := syscall.Syscall6(sysEpollPwait2, uintptr(epfd),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)),
		uintptr(unsafe.Pointer(ts)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// epollWait is epoll_wait(2) with a millisecond timeout (-1: none).
func epollWait(epfd int, events []syscall.EpollEvent, msec int) (int, syscall.Errno) {
	n, err := syscall.EpollWait(epfd, events, msec)
	if err != nil {
		if e, ok := err.(syscall.Errno); ok {
			return 0, e
		}
		return 0, syscall.EINVAL
	}
	return n, 0
}

// nanosleep sleeps for ns nanoseconds on CLOCK_MONOTONIC (subject to the
// thread's timer slack).
func nanosleep(ts *syscall.Timespec) syscall.Errno {
	_, _, e := syscall.Syscall6(syscall.SYS_CLOCK_NANOSLEEP, clockMonotonic, 0,
		uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	return e
}

// timerfdCreate makes a non-blocking CLOCK_MONOTONIC timerfd (syscall has no
// wrapper for timerfd_create(2)).
func timerfdCreate() (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic,
		syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// timerfdSet arms the timer to fire once, after the relative time in
// its.value, or disarms it when its.value is zero. Setting the timer also
// clears an expiration that has not been read, so a fired timer that is
// re-armed or disarmed stops being readable.
func timerfdSet(fd int, its *itimerspec) syscall.Errno {
	_, _, e := syscall.RawSyscall6(syscall.SYS_TIMERFD_SETTIME, uintptr(fd), 0,
		uintptr(unsafe.Pointer(its)), 0, 0, 0)
	return e
}

// timerSlack returns the calling thread's timer slack in nanoseconds.
func timerSlack() (int64, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerslack, 0, 0)
	return int64(r), e
}

// setTimerSlack sets the calling thread's timer slack: how late the kernel
// may fire this thread's timers (epoll_pwait2's timeout among them) to merge
// wake-ups. 0 restores the thread's default.
func setTimerSlack(ns int64) syscall.Errno {
	_, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, uintptr(ns), 0)
	return e
}

// cpuTime returns the process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
