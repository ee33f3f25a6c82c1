package hearth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// DefaultAdminSocket is where the unit `caddy hearth systemd` writes puts
// Caddy's admin API (CADDY_ADMIN=unix//run/caddy/admin.sock|0600, in
// RuntimeDirectory=caddy, mode 0700): only Caddy's user and root can open
// it, no app can.
const DefaultAdminSocket = "/run/caddy/admin.sock"

// adminClientCommands are the caddy subcommands that talk to a running
// Caddy's admin API.
var adminClientCommands = map[string]bool{"reload": true, "stop": true, "hearth": true}

func init() {
	// `caddy reload`, `caddy stop` and `caddy hearth …` find the unit's
	// socket without flags: with CADDY_ADMIN unset, their default admin
	// address is the socket when it exists. `caddy run` keeps Caddy's
	// default (a second Caddy must never take over the socket).
	if len(os.Args) < 2 || !adminClientCommands[os.Args[1]] {
		return
	}
	if _, set := os.LookupEnv("CADDY_ADMIN"); set {
		return
	}
	if unitsSocket(DefaultAdminSocket, installedUnit) {
		caddy.DefaultAdminListen = "unix/" + DefaultAdminSocket
	}
}

// installedUnit is where `caddy hearth systemd` says to install its unit.
const installedUnit = "/etc/systemd/system/caddy.service"

// unitsSocket says whether the admin API to talk to is the unit's socket:
// when it exists; when it is in a directory this user may not enter (the
// request then fails with "permission denied", which says what to do);
// and when the unit at unit puts the admin API there, socket or not.
// While the unit's Caddy is down (stopped, or restarting after a bad
// edit) the socket is gone, and falling back to localhost:2019 would send
// `caddy reload`'s whole config (its env values, DNS keys) to whatever
// any local account listens there with, and take its answer for
// Caddy's: the command fails instead, saying no Caddy answers.
func unitsSocket(socket, unit string) bool {
	info, err := os.Stat(socket)
	if err == nil && info.Mode().Type() == os.ModeSocket || errors.Is(err, fs.ErrPermission) {
		return true
	}
	data, err := os.ReadFile(unit)
	return err == nil && strings.Contains(string(data), "CADDY_ADMIN=unix/"+socket)
}

// addressFlagHelp describes the --address flag of the commands that call
// the admin API: where they look without it.
const addressFlagHelp = "the admin API address (default: $CADDY_ADMIN, else the unit's socket " + DefaultAdminSocket + " when it exists or the unit " + installedUnit + " names it, else localhost:2019; the config is not read)"

var (
	adminMu     sync.Mutex
	adminListen = "" // "" before any config: caddy.DefaultAdminListen
	adminOff    bool
)

// AdminEndpoint is the admin API address of the config Caddy runs (or is
// loading, or `caddy hearth check` reads), and whether it is enabled.
func AdminEndpoint() (listen string, enabled bool) {
	adminMu.Lock()
	defer adminMu.Unlock()
	if adminOff {
		return "", false
	}
	if adminListen == "" {
		return caddy.DefaultAdminListen, true
	}
	return adminListen, true
}

// SetAdminEndpoint records a config's admin settings ("" is the default
// address).
func SetAdminEndpoint(listen string, disabled bool) {
	adminMu.Lock()
	defer adminMu.Unlock()
	adminListen, adminOff = listen, disabled
}

// recordAdminEndpoint reads the admin settings of the config being
// provisioned. Caddy does not export them to modules; its context holds the
// config, read here without changing anything (and if a Caddy version moves
// them, the default is kept: TestAdminFromContext catches that).
func recordAdminEndpoint(ctx caddy.Context) {
	cfg := reflect.ValueOf(ctx).FieldByName("cfg")
	if !cfg.IsValid() || cfg.Kind() != reflect.Pointer || cfg.IsNil() {
		return
	}
	admin := cfg.Elem().FieldByName("Admin")
	if !admin.IsValid() || admin.Kind() != reflect.Pointer {
		return
	}
	if admin.IsNil() {
		SetAdminEndpoint("", false)
		return
	}
	SetAdminEndpoint(admin.Elem().FieldByName("Listen").String(), admin.Elem().FieldByName("Disabled").Bool())
}

// adminOpenToEveryAccount says how Caddy's admin API hands Caddy's
// privileges to every local account, or "": it listens on TCP (any local
// process can connect; a POST /load runs any command, as before_start)
// while Caddy runs as root or may switch users (CAP_SETUID). Hearth's
// checks of each app (HG-ADMIN-01) cover apps; this covers every other
// account on the machine, a background service's or job's among them.
func adminOpenToEveryAccount(listen string, enabled, privileged bool) string {
	if !enabled || !privileged {
		return ""
	}
	addr, err := caddy.ParseNetworkAddress(listen)
	if err != nil || addr.IsFdNetwork() || addr.IsUnixNetwork() && !abstractSocket(addr.Host) {
		return ""
	}
	return "Caddy's admin API listens on " + openTo(addr, listen) + " while Caddy runs as root (or may switch users): every local account, and every service or job running as one, can load a config that runs any command with Caddy's privileges"
}

// abstractSocket reports a unix socket address in Linux's abstract
// namespace (@name): it has no file, so no permission keeps any process of
// the network namespace from connecting.
func abstractSocket(host string) bool { return strings.HasPrefix(host, "@") }

// openTo names an admin address every local process can reach: TCP, or an
// abstract unix socket.
func openTo(addr caddy.NetworkAddress, listen string) string {
	if addr.IsUnixNetwork() {
		return "the abstract unix socket " + listen + " (which has no permissions: every local process can connect)"
	}
	return "TCP " + listen
}

// AdminReachableBy says how a process running as cred (nil: Caddy's own
// account) can use Caddy's admin API to gain what it does not hold (the
// API loads configs, and so runs any command with Caddy's privileges), or
// "" when it cannot: the API is off, on a file descriptor, or a unix
// socket that account may not open. what names the process in the message
// ("the app", "service redis"). Root holds every privilege already; so
// does Caddy's own account, unless Caddy is not root yet may start
// processes as any account (CAP_SETUID, as under the unit): that is more
// than the account's own rights.
func AdminReachableBy(listen string, enabled bool, cred *syscall.Credential, what string) string {
	if !enabled || cred != nil && cred.Uid == 0 {
		return ""
	}
	addr, err := caddy.ParseNetworkAddress(listen)
	if err != nil || addr.IsFdNetwork() {
		return ""
	}
	if cred == nil {
		if os.Geteuid() == 0 || !supervisor.CanSwitchUsers() {
			return ""
		}
		return fmt.Sprintf("%s runs as Caddy's own account (%s), which can use the admin API at %s, and Caddy may start processes as any account (CAP_SETUID): its code could load a config that runs anything as any account but root", what, AccountName(uint32(os.Geteuid())), listen)
	}
	who := "user " + AccountName(cred.Uid)
	if !addr.IsUnixNetwork() || abstractSocket(addr.Host) {
		return fmt.Sprintf("Caddy's admin API listens on %s, which every local process can reach: %s (%s) can load a config that runs any command as Caddy's user", openTo(addr, listen), what, who)
	}
	path, mode, _ := strings.Cut(addr.Host, "|")
	why, reachable := socketReachable(path, mode, cred.Uid, cred.Gid)
	if !reachable {
		return ""
	}
	return fmt.Sprintf("%s (%s) can open Caddy's admin socket %s (%s): it can load a config that runs any command as Caddy's user", what, who, path, why)
}

// CheckAdminReach refuses to start what (a service, job or process
// upstream with an account of its own) as cred when that account could
// use the admin API of the config being loaded (AdminReachableBy): its
// code, compromised, would run anything with Caddy's privileges. A Python
// app's check is its HG-ADMIN-01.
func CheckAdminReach(what string, cred *syscall.Credential) error {
	listen, enabled := AdminEndpoint()
	if problem := AdminReachableBy(listen, enabled, cred, what); problem != "" {
		return fmt.Errorf("%s: refused; %s", problem, AdminFix)
	}
	return nil
}

// AdminFix is how to keep every process Hearth starts away from the
// admin API.
const AdminFix = "put Caddy's admin API on a unix socket in a directory only Caddy's user can enter (the unit `caddy hearth systemd` writes sets CADDY_ADMIN=unix//run/caddy/admin.sock|0600 in RuntimeDirectory=caddy, mode 0700), or turn it off with `admin off`"

// socketReachable reports whether uid (with gid as its only group, as
// Hearth starts processes) can connect to the unix socket at path: search
// permission on every directory above it and write permission on the
// socket. A socket not created yet is judged by mode (Caddy's default
// 0200) with Caddy as its owner.
func socketReachable(path, mode string, uid, gid uint32) (string, bool) {
	path = filepath.Clean(path)
	// from the top down, as far as it may search: a directory on the way
	// it may write lets it put a socket of its own where Caddy's is — the
	// socket's own (removed, or not made yet: a sticky bit only keeps it
	// from removing Caddy's), or one above without the sticky bit, whose
	// entry on the way it may rename away and make anew — and `caddy
	// reload` would hand it the config
	var dirs []string
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		dirs = append(dirs, dir)
		if dir == "/" || dir == "." {
			break
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		st, err := statOf(dirs[i])
		if err != nil {
			continue
		}
		if !permits(st, uid, gid, 0o1) {
			return "", false
		}
		if permits(st, uid, gid, 0o2) && (i == 0 || st.Mode&syscall.S_ISVTX == 0) {
			return fmt.Sprintf("it may write %s (mode %04o, owner %s), on the way to the socket, where it could put a socket of its own in Caddy's place", dirs[i], fs.FileMode(st.Mode).Perm(), AccountName(st.Uid)), true
		}
	}
	st, err := statOf(path)
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
	return fmt.Sprintf("socket mode %04o, owner %s; no directory above it keeps %s out", fs.FileMode(st.Mode).Perm(), AccountName(st.Uid), AccountName(uid)), true
}

func statOf(path string) (*syscall.Stat_t, error) {
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

// AccountName is the user name of uid, or the number.
func AccountName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}
