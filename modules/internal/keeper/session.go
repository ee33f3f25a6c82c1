package keeper

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// What a process Hearth starts must not take from the session Caddy was
// started in (`sudo caddy run` in a user's shell) or from how it was
// started: its terminal, its session keyring, signals it blocked, a
// real-time or raised CPU or I/O priority, personality flags that turn off address randomization, a
// negative oom_score_adj (the app would be the last process the kernel
// kills when memory runs out, not the first).
// The app's code may run as another, unprivileged account, which could
// never have set these itself. The keeper gives them up on its main
// thread, the one every child is forked from, before it starts anything;
// `caddy hearth exec` and `manage` do the same when the command runs as
// the app's account (LeaveSession).

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

// LeaveSession gives up, for the calling thread and the processes it then
// starts, what LeaveSessionKeyring and lowerPriority do, and the signals
// blocked where Caddy was started (unblockSignals). It changes only the
// calling thread, so the thread must stay the one that starts them.
func LeaveSession() error {
	if err := unblockSignals(); err != nil {
		return errors.New("unblocking signals: " + err.Error())
	}
	if err := LeaveSessionKeyring(); err != nil {
		return err
	}
	if err := lowerPriority(); err != nil {
		return err
	}
	return dropPriorityLimits()
}

// rlimitNice and rlimitRTPrio are RLIMIT_NICE and RLIMIT_RTPRIO.
const (
	rlimitNice   = 13
	rlimitRTPrio = 14
)

// dropPriorityLimits sets the limits that let an unprivileged process
// raise its own priority (RLIMIT_NICE, RLIMIT_RTPRIO: LimitNICE= and
// LimitRTPRIO= of a systemd unit, or pam_limits) to none, for this process
// and what it starts: with them, the app's account could give itself a
// real-time policy or a negative nice value again. Neither the keeper nor
// caddy hearth exec needs them. Lowering a limit needs no privilege.
func dropPriorityLimits() error {
	for _, resource := range []int{rlimitNice, rlimitRTPrio} {
		if err := syscall.Setrlimit(resource, &syscall.Rlimit{}); err != nil {
			return errors.New("dropping the limits that let a process raise its own priority (RLIMIT_NICE, RLIMIT_RTPRIO; LimitNICE= and LimitRTPRIO= of a systemd unit): " + err.Error())
		}
	}
	return nil
}

// Constants of <linux/keyctl.h>, <linux/sched.h>, <linux/ioprio.h> and
// <linux/personality.h>.
const (
	keyctlJoinSessionKeyring = 1
	keyctlSetPerm            = 5
	keyctlDescribe           = 6
	keySpecSessionKeyring    = -3

	// a session keyring's permissions once made: its possessor (the
	// process started, running as an app's account) may view, read,
	// write and search it, not link it elsewhere nor change these; its
	// owner (Caddy's account, the keeper) may view and read it
	sessionKeyringPerm = 0x0f000000 | 0x00030000

	schedOther       = 0
	schedFIFO        = 1
	schedRR          = 2
	schedDeadline    = 6
	schedResetOnFork = 0x40000000

	ioprioWhoProcess = 1
	ioprioClassShift = 13
	ioprioClassRT    = 1

	// PER_CLEAR_ON_SETID: what the kernel clears when an execution
	// changes the account (a setuid binary); here the account changes
	// before the execution, so it would not
	personalityClearOnSetID = 0x0400000 | 0x0040000 | 0x0200000 | 0x0100000 // READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, ADDR_COMPAT_LAYOUT, MMAP_PAGE_ZERO
	personalityQuery        = 0xffffffff
)

// lowerPriority gives the calling thread the default scheduling policy
// instead of a real-time one, a nice value of 0 instead of a negative one,
// the process an oom_score_adj of 0 instead of a negative one,
// the default I/O class instead of the real-time one, and clears the
// personality flags that weaken the children's address randomization.
// Each is set only when it differs, so that a system call filter that
// allows only queries (systemd's LockPersonality) does not get in the way
// of a Caddy started without them. Lowering a priority needs no privilege;
// a failure is an error (the children would keep what they must not have).
func lowerPriority() error {
	policy, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, 0, 0, 0)
	if e != 0 {
		return errors.New("reading the scheduling policy: " + e.Error())
	}
	if p := policy &^ schedResetOnFork; p == schedFIFO || p == schedRR || p == schedDeadline {
		var param struct{ priority int32 }
		if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, schedOther, uintptr(unsafe.Pointer(&param))); e != 0 {
			return errors.New("leaving the real-time scheduling policy Caddy was started with (chrt; systemd's CPUSchedulingPolicy=): " + e.Error())
		}
	}
	// the system call's value is 20 - nice
	if prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0); err != nil {
		return errors.New("reading the nice value: " + err.Error())
	} else if 20-prio < 0 {
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, 0); err != nil {
			return errors.New("leaving the negative nice value Caddy was started with (nice; systemd's Nice=): " + err.Error())
		}
	}
	// (ENOSYS: a kernel without block devices, so no I/O class either)
	ioprio, _, e := syscall.RawSyscall(syscall.SYS_IOPRIO_GET, ioprioWhoProcess, 0, 0)
	if e != 0 && e != syscall.ENOSYS {
		return errors.New("reading the I/O priority: " + e.Error())
	}
	if e == 0 && ioprio>>ioprioClassShift == ioprioClassRT {
		if _, _, e := syscall.RawSyscall(syscall.SYS_IOPRIO_SET, ioprioWhoProcess, 0, 0); e != 0 {
			return errors.New("leaving the real-time I/O class Caddy was started with (ionice; systemd's IOSchedulingClass=): " + e.Error())
		}
	}
	if warning := leaveOOMProtection(oomScoreAdj); warning != "" {
		os.Stderr.WriteString("hearth: " + warning + "\n")
	}
	persona, _, e := syscall.RawSyscall(syscall.SYS_PERSONALITY, personalityQuery, 0, 0)
	if e != 0 {
		return errors.New("reading the personality: " + e.Error())
	}
	if persona&personalityClearOnSetID != 0 {
		if _, _, e := syscall.RawSyscall(syscall.SYS_PERSONALITY, persona&^personalityClearOnSetID, 0, 0); e != 0 {
			return errors.New("clearing the personality flags Caddy was started with (no address randomization): " + e.Error())
		}
	}
	return nil
}

// LeaveSessionKeyring gives the calling thread a new, empty session
// keyring, which the processes it then starts inherit instead of the one
// it had. The keeper calls it before each child it starts, so that each
// has its own. A process possesses the keys of its session keyring whatever
// account it runs as: a worker started as the pool's user would otherwise
// read the kernel keys of the session Caddy was started in (Kerberos
// tickets, an encrypted home directory's passphrase, whatever a login or
// `keyctl` put there). It changes only the calling thread's keyrings, so
// the thread must stay the one that starts them. A kernel without keys
// (ENOSYS), or a system call filter or security module that refuses
// keyctl (EPERM, EACCES, as Docker's default filter does), binds the
// children too, so those are not errors; anything else is.
//
// The new keyring is charged to the calling thread's account (Caddy's
// under the unit, whose quota is 200 keys): its possessors may not link
// it into a keyring of theirs (sessionKeyringPerm), where it would
// outlive the process and count against that quota for good, one more
// at each start, until no start could get one.
func LeaveSessionKeyring() error {
	_, _, e := syscall.Syscall(syscall.SYS_KEYCTL, keyctlJoinSessionKeyring, 0, 0)
	if e == 0 {
		session := keySpecSessionKeyring
		_, _, e = syscall.Syscall(syscall.SYS_KEYCTL, keyctlSetPerm, uintptr(session), sessionKeyringPerm)
	}
	switch e {
	case 0, syscall.ENOSYS, syscall.EPERM, syscall.EACCES:
		return nil
	}
	msg := "giving a process Hearth starts a session keyring of its own, not the one Caddy was started with (which holds the keys of that login): " + e.Error()
	if e == syscall.EDQUOT {
		msg += " (each process Hearth starts holds one keyring, counted against the quota of Caddy's account: raise /proc/sys/kernel/keys/maxkeys and maxbytes)"
	}
	return errors.New(msg)
}

// oomScoreAdj is the file of the process's oom_score_adj.
const oomScoreAdj = "/proc/self/oom_score_adj"

// leaveOOMProtection sets the process's oom_score_adj to 0 when it is
// negative (systemd's OOMScoreAdjust= on Caddy's unit, choom): the
// processes it starts inherit it, and a protected app is what the kernel's
// OOM killer would spare while it kills the user's other programs. The
// apps' workers are restarted when killed; a positive value is kept.
// Raising it needs no privilege, but a process may lower it again down to
// the value a privileged process last set (systemd sets it as root), and
// nothing short of CAP_SYS_RESOURCE raises that floor: then the apps start
// at 0 and could go back. What cannot be done is returned as a warning,
// not an error: it decides whom the kernel kills when memory runs out, not
// what the apps may do, and stopping every app for it would be worse.
// Without /proc there is nothing to read or change. file is oomScoreAdj
// but in tests.
func leaveOOMProtection(file string) (warning string) {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	had := strings.TrimSpace(string(data))
	if v, err := strconv.Atoi(had); err != nil || v >= 0 {
		return ""
	}
	const fix = "remove OOMScoreAdjust= from Caddy's unit (or set it to 0 or more)"
	if err := os.WriteFile(file, []byte("0"), 0); err != nil {
		return "could not raise the oom_score_adj " + had + " Caddy was started with (choom; systemd's OOMScoreAdjust=) to 0: " + err.Error() + "; the apps keep it, and the kernel's OOM killer spares them over your other programs: " + fix
	}
	if os.WriteFile(file, []byte(had), 0) == nil { // back down: the floor allows it
		if err := os.WriteFile(file, []byte("0"), 0); err != nil {
			return "could not raise the oom_score_adj " + had + " back to 0: " + err.Error() + ": " + fix
		}
		return "Caddy was started with the oom_score_adj " + had + " set by a privileged process (systemd's OOMScoreAdjust=): the apps start at 0, but any of them may set theirs back down to " + had + " and be spared by the kernel's OOM killer over your other programs: " + fix
	}
	return ""
}
