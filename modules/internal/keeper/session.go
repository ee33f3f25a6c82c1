package keeper

import (
	"errors"
	"syscall"
)

// What a process Hearth starts must not share with the session Caddy was
// started in (`sudo caddy run` in a user's shell): its terminal and its
// session keyring. The keeper gives up both on its main thread, the one
// every child is forked from, before it starts anything.

// dropTerminal gives up the controlling terminal the keeper shares with
// Caddy, so that no process it starts has one: app code running as the
// pool's user could otherwise open /dev/tty and push keystrokes into that
// shell's input with TIOCSTI, to be run as whoever started Caddy once it
// stops. The keeper stays in Caddy's session (its process group is its
// own): moving the workers to a session of their own changes how the
// kernel's sched_autogroup shares the CPUs between them and Caddy, which
// cost 10-20% of Django's throughput in the bench (tests/bench/analysis.md).
// A keeper with no terminal, or none it can open, has nothing to give up:
// its children cannot open it either.
func dropTerminal() error {
	fd, err := syscall.Open("/dev/tty", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	// not a session leader: this only detaches the keeper (no SIGHUP to anyone)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCNOTTY, 0); e != 0 {
		return e
	}
	return nil
}

// keyctlJoinSessionKeyring is KEYCTL_JOIN_SESSION_KEYRING of <linux/keyctl.h>.
const keyctlJoinSessionKeyring = 1

// LeaveSessionKeyring gives the calling thread a new, empty session
// keyring, which the processes it then starts inherit instead of the one
// it had. A process possesses the keys of its session keyring whatever
// account it runs as: a worker started as the pool's user would otherwise
// read the kernel keys of the session Caddy was started in (Kerberos
// tickets, an encrypted home directory's passphrase, whatever a login or
// `keyctl` put there). It changes only the calling thread's keyrings, so
// the thread must stay the one that starts them. A kernel without keys
// (ENOSYS), or a system call filter or security module that refuses
// keyctl (EPERM, EACCES, as Docker's default filter does), binds the
// children too, so those are not errors; anything else is.
func LeaveSessionKeyring() error {
	_, _, e := syscall.Syscall(syscall.SYS_KEYCTL, keyctlJoinSessionKeyring, 0, 0)
	switch e {
	case 0, syscall.ENOSYS, syscall.EPERM, syscall.EACCES:
		return nil
	}
	return errors.New("giving the processes Hearth starts a session keyring of their own, not the one Caddy was started with (which holds the keys of that login): " + e.Error())
}
