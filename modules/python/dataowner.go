package python

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/safedir"
)

// Commands run as root beside Caddy's unit.
//
// Under the unit of `caddy hearth systemd`, Caddy runs as its own account
// (`caddy`) and keeps the apps' secret keys in its data directory, which
// is that account's (/var/lib/caddy, mode 0700). The commands that run an
// app's code beside a config (check, manage, exec) must then run as root,
// which alone can switch to the apps' account; but what Hearth reads and
// writes in a data directory must be its owner's (safedir: nobody else
// could have planted it), so root refused Caddy's keys, and a key root
// made in its own data directory was not the one the app is served with.
// So a command running as root whose data directory belongs to another
// account, under parents only root can change (as /var/lib is), handles
// the keys as that account: it takes that account's user and primary group
// as its effective ones for the while, without root's other groups (its
// real and saved ids stay root's, so that account can neither signal nor
// trace it, and it switches back),
// reads only what that account owns, and whatever it creates there is
// that account's, as if Caddy had made it. A data directory under
// another account's home (/home/alice/.local/share/caddy) is not taken:
// that account could move it, so root refuses it as before.

// dataOwner is the account of a data directory a command as root handles
// the keys in as that account (see above).
type dataOwner struct {
	name     string // for messages
	uid, gid int    // its uid and primary gid
}

// dataDirOwner is the account whose data directory Caddy's keys are in,
// when this process runs as root and that directory is another account's
// under parents only root can change, with the account's primary group
// (not root's); nil otherwise (root's own, none yet, or not one to trust:
// then root works in it as before, and safedir refuses what is not
// root's). Only root can have given a directory under such parents to
// another account: it is the account Caddy runs as. A command decides it
// once (newApp).
func dataDirOwner() *dataOwner {
	if os.Geteuid() != 0 {
		return nil
	}
	data := caddy.AppDataDir()
	info, err := os.Lstat(data)
	if err != nil || !info.IsDir() {
		return nil
	}
	st, isUnix := info.Sys().(*syscall.Stat_t)
	if !isUnix || st.Uid == 0 || info.Mode().Perm()&0o022 != 0 {
		return nil
	}
	if _, err := safedir.Trusted(filepath.Dir(data)); err != nil {
		return nil
	}
	owner, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10))
	if err != nil {
		return nil
	}
	gid, err := strconv.Atoi(owner.Gid)
	if err != nil || gid == 0 {
		return nil
	}
	return &dataOwner{name: owner.Username, uid: int(st.Uid), gid: gid}
}

// asDataDirOwner runs fn as o, the owner of Caddy's data directory (see
// above), or as it is when o is nil. It fails, without
// running fn, when the switch does. Only a command calls it: if switching
// back fails (or fn panics and switching back then fails), the process
// exits at once, saying so, since whatever it did next (run the app's code
// as its account) would be done with another account's rights.
func asDataDirOwner(o *dataOwner, fn func() error) error {
	if o == nil {
		return fn()
	}
	uid, gid := o.uid, o.gid
	groups, err := syscall.Getgroups()
	if err != nil {
		return fmt.Errorf("settings: reading this process's groups: %w", err)
	}
	egid := os.Getegid()
	// back to root: the saved user id is root's, so the first step is
	// always allowed, and it gives back the capabilities the others need
	back := func() {
		for _, step := range []func() error{
			func() error { return syscall.Setresuid(-1, 0, -1) },
			func() error { return syscall.Setresgid(-1, egid, -1) },
			func() error { return syscall.Setgroups(groups) },
		} {
			if err := step(); err != nil {
				fmt.Fprintf(os.Stderr, "caddy hearth: switching back to root after handling the secret keys as uid %d failed (%v): stopped before running anything\n", uid, err)
				os.Exit(1)
			}
		}
	}
	defer back()
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"leaving root's groups", func() error { return syscall.Setgroups([]int{}) }},
		{fmt.Sprintf("taking gid %d", gid), func() error { return syscall.Setresgid(-1, gid, -1) }},
		{fmt.Sprintf("taking uid %d", uid), func() error { return syscall.Setresuid(-1, uid, -1) }},
	} {
		if err := step.do(); err != nil {
			return fmt.Errorf("settings: handling the secret keys as the owner of Caddy's data directory (uid %d): %s: %w", uid, step.what, err)
		}
	}
	return fn()
}
