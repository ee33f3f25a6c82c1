package python

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
// the keys as that account: it takes that account's user and group as its
// effective ones for the while (its real and saved ids stay root's, so
// that account can neither signal nor trace it, and it switches back),
// reads only what that account owns, and whatever it creates there is
// that account's, as if Caddy had made it. A data directory under
// another account's home (/home/alice/.local/share/caddy) is not taken:
// that account could move it, so root refuses it as before.

// dataDirOwner is the account whose data directory Caddy's keys are in,
// when this process runs as root and that directory is another account's
// under parents only root can change; ok is false otherwise (root's own,
// none yet, or not one to trust: then root works in it as before, and
// safedir refuses what is not root's).
func dataDirOwner() (uid, gid int, ok bool) {
	if os.Geteuid() != 0 {
		return 0, 0, false
	}
	data := caddy.AppDataDir()
	info, err := os.Lstat(data)
	if err != nil || !info.IsDir() {
		return 0, 0, false
	}
	st, isUnix := info.Sys().(*syscall.Stat_t)
	if !isUnix || st.Uid == 0 || info.Mode().Perm()&0o022 != 0 {
		return 0, 0, false
	}
	if _, err := safedir.Trusted(filepath.Dir(data)); err != nil {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// asDataDirOwner runs fn as the owner of Caddy's data directory (see
// above) when dataDirOwner names one, else as it is. It fails, without
// running fn, when the switch does. Only a command calls it: if switching
// back fails, the process exits at once, saying so, since whatever it did
// next (run the app's code as its account) would be done with another
// account's rights.
func asDataDirOwner(fn func() error) error {
	uid, gid, ok := dataDirOwner()
	if !ok {
		return fn()
	}
	groups, err := syscall.Getgroups()
	if err != nil {
		return fmt.Errorf("settings: reading this process's groups: %w", err)
	}
	egid := os.Getegid()
	restore := func() error {
		// the saved user id is root's: the way back is open
		return errors.Join(syscall.Setresuid(-1, 0, -1), syscall.Setresgid(-1, egid, -1), syscall.Setgroups(groups))
	}
	if err := errors.Join(syscall.Setgroups([]int{}), syscall.Setresgid(-1, gid, -1), syscall.Setresuid(-1, uid, -1)); err != nil {
		return fmt.Errorf("settings: taking the account of Caddy's data directory (uid %d), which owns the secret keys: %w", uid, errors.Join(err, restore()))
	}
	err = fn()
	if back := restore(); back != nil {
		fmt.Fprintf(os.Stderr, "caddy hearth: switching back to root after handling the secret keys as uid %d failed (%v): stopped before running anything\n", uid, back)
		os.Exit(1)
	}
	return err
}
