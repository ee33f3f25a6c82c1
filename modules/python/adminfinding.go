package python

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/hearth"
)

// adminFix is how to keep apps away from the admin API.
const adminFix = "put Caddy's admin API on a unix socket in a directory only Caddy's user can enter (the unit `caddy hearth systemd` writes sets CADDY_ADMIN=unix//run/caddy/admin.sock|0600 in RuntimeDirectory=caddy, mode 0700), or turn it off with `admin off`; and run the app under its own account (`user <name>` in its block, or HEARTH_DEFAULT_USER, as that unit does)"

// adminFindings is HG-ADMIN-01: the pool's processes (running as cred, or
// as Caddy's own user when cred is nil) could reach Caddy's admin API,
// which loads configs and so runs any command (before_start) as Caddy's
// user. A warning when the app runs as Caddy's own user (development);
// blocking when it runs as another user (a privilege escalation).
func adminFindings(listen string, enabled bool, cred *syscall.Credential) []Finding {
	if !enabled {
		return nil
	}
	addr, err := caddy.ParseNetworkAddress(listen)
	if err != nil || addr.IsFdNetwork() {
		return nil
	}
	if cred == nil {
		return []Finding{{ID: "HG-ADMIN-01", Blocking: false,
			Problem: fmt.Sprintf("the app runs as Caddy's own user (%s): it can use Caddy's admin API at %s, which can load a config that runs any command as Caddy", accountName(uint32(os.Geteuid())), listen),
			Fix:     adminFix}}
	}
	if cred.Uid == 0 {
		return nil // allow_root: already every privilege
	}
	who := "user " + accountName(cred.Uid)
	if !addr.IsUnixNetwork() {
		return []Finding{{ID: "HG-ADMIN-01", Blocking: true,
			Problem: fmt.Sprintf("Caddy's admin API listens on TCP %s, which every local process can reach: the app (%s) can load a config that runs any command as Caddy's user", listen, who),
			Fix:     adminFix}}
	}
	path, mode, _ := strings.Cut(addr.Host, "|")
	why, reachable := socketReachable(path, mode, cred.Uid, cred.Gid)
	if !reachable {
		return nil
	}
	return []Finding{{ID: "HG-ADMIN-01", Blocking: true,
		Problem: fmt.Sprintf("the app (%s) can open Caddy's admin socket %s (%s): it can load a config that runs any command as Caddy's user", who, path, why),
		Fix:     adminFix}}
}

// socketReachable reports whether uid (with gid as its only group, as
// Hearth starts processes) can connect to the unix socket at path: search
// permission on every directory above it and write permission on the
// socket. A socket not created yet is judged by mode (Caddy's default
// 0200) with Caddy as its owner.
func socketReachable(path, mode string, uid, gid uint32) (string, bool) {
	path = filepath.Clean(path)
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if st, err := stat(dir); err == nil && !permits(st, uid, gid, 0o1) {
			return "", false
		}
		if dir == "/" || dir == "." {
			break
		}
	}
	st, err := stat(path)
	if err != nil {
		perm, perr := strconv.ParseUint(mode, 8, 32)
		if mode == "" || perr != nil {
			perm = 0o200
		}
		st = &syscall.Stat_t{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid()), Mode: uint32(perm)}
	}
	if !permits(st, uid, gid, 0o2) {
		return "", false
	}
	return fmt.Sprintf("socket mode %04o, owner %s; no directory above it keeps %s out", fs.FileMode(st.Mode).Perm(), accountName(st.Uid), accountName(uid)), true
}

func stat(path string) (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// permits applies the owner, group or other bits of st for uid and gid.
func permits(st *syscall.Stat_t, uid, gid uint32, bit uint32) bool {
	switch {
	case uid == 0:
		return true
	case st.Uid == uid:
		return st.Mode&(bit<<6) != 0
	case st.Gid == gid:
		return st.Mode&(bit<<3) != 0
	default:
		return st.Mode&bit != 0
	}
}

// accountName is the user name of uid, or the number.
func accountName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// adminEndpointFindings is adminFindings for the pool, with the admin
// address of the config it belongs to.
func (a *App) adminEndpointFindings() []Finding {
	listen, enabled := hearth.AdminEndpoint()
	return adminFindings(listen, enabled, a.spec.Credential)
}
