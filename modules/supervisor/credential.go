package supervisor

import (
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// DefaultUserEnv names the environment variable holding the account
// ("user" or "user:group") of processes whose config sets no `user` (the
// unit `caddy hearth systemd` writes sets it to hearth-apps:caddy: the
// apps' own account, in Caddy's group so that Caddy can serve the files
// they write); unset, they run as Caddy's own user.
const DefaultUserEnv = "HEARTH_DEFAULT_USER"

// Credential resolves the user (and optionally group) a child runs as:
// userName, else the account in $HEARTH_DEFAULT_USER, else Caddy's own.
// It refuses root unless allowRoot, and another user when Caddy can not
// switch (it is neither root nor holds CAP_SETUID and CAP_SETGID).
func Credential(userName, groupName string, allowRoot bool) (*syscall.Credential, error) {
	if userName == "" && groupName == "" {
		userName, groupName, _ = strings.Cut(os.Getenv(DefaultUserEnv), ":")
	}
	if userName == "" {
		if groupName != "" {
			return nil, fmt.Errorf("group %q is set without user; set user too", groupName)
		}
		return nil, nil
	}
	u, err := user.Lookup(userName)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w; create it (useradd --system %s) or fix the name", userName, err, userName)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", groupName, err)
		}
		gid, _ = strconv.ParseUint(g.Gid, 10, 32)
	}
	if why := PrivilegedGroup(gid); why != "" && uid != 0 && (!allowRoot || os.Geteuid() != 0) {
		return nil, fmt.Errorf("group %s: %s; set group to the app's own group (or remove it: the user's primary group), or add allow_root if you really mean it (Caddy running as root)", GroupName(gid), why)
	}
	if uid == 0 && !allowRoot {
		return nil, fmt.Errorf("user %s is root: the app would run with every privilege; set user to an unprivileged account, or add allow_root if you really mean it", userName)
	}
	if uid == 0 && os.Geteuid() != 0 {
		// Caddy was kept from root on purpose (the unit: CAP_SETUID to
		// start apps as their accounts); a config, which the admin API
		// loads, must not undo that
		return nil, fmt.Errorf("user %s is root, and Caddy does not run as root: it starts processes as root only when it runs as root itself (allow_root is for that case); set user to an unprivileged account", userName)
	}
	if euid := os.Geteuid(); !CanSwitchUsers() && uint64(euid) != uid {
		me, _ := user.LookupId(strconv.Itoa(euid))
		name := strconv.Itoa(euid)
		if me != nil {
			name = me.Username
		}
		return nil, fmt.Errorf("Caddy runs as %s and cannot start processes as %s: run Caddy as root or with CAP_SETUID and CAP_SETGID (the processes then run as %s) or remove user", name, userName, userName)
	}
	if uint64(os.Geteuid()) == uid && uint64(os.Getegid()) == gid {
		return nil, nil // already that user
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// rootEquivalentGroups are groups whose members can become root, or read
// or write what only root should (Debian's): the docker and LXD sockets
// start containers with the host's root, and libvirt's a machine with the
// host's disk; disk and kmem read every file and memory, shadow every
// password's hash, and tty writes to every terminal (root's too).
var rootEquivalentGroups = []string{"docker", "lxd", "incus-admin", "libvirt", "disk", "kmem", "shadow", "tty"}

// PrivilegedGroup says why processes must not run with the group of id
// gid (unless allow_root), or "".
func PrivilegedGroup(gid uint64) string {
	if gid == 0 {
		return "the processes would read and write what root's group owns (system files, keys)"
	}
	if g, err := user.LookupGroupId(strconv.FormatUint(gid, 10)); err == nil && slices.Contains(rootEquivalentGroups, g.Name) {
		return "its members can act as root (or read what only root reads)"
	}
	return ""
}

// GroupName names the group of id gid for messages: "name (gid N)".
func GroupName(gid uint64) string {
	if g, err := user.LookupGroupId(strconv.FormatUint(gid, 10)); err == nil {
		return fmt.Sprintf("%s (gid %d)", g.Name, gid)
	}
	return fmt.Sprintf("gid %d", gid)
}
