package hearth

import (
	"errors"
	"io/fs"
	"os"
	"reflect"
	"sync"

	"github.com/caddyserver/caddy/v2"
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
	// a socket in a directory this user may not enter is still the one
	// meant: the request then fails with "permission denied"
	if info, err := os.Stat(DefaultAdminSocket); err == nil && info.Mode().Type() == os.ModeSocket || errors.Is(err, fs.ErrPermission) {
		caddy.DefaultAdminListen = "unix/" + DefaultAdminSocket
	}
}

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
	if err != nil || addr.IsUnixNetwork() || addr.IsFdNetwork() {
		return ""
	}
	return "Caddy's admin API listens on TCP " + listen + " while Caddy runs as root (or may switch users): every local account, and every service or job running as one, can load a config that runs any command with Caddy's privileges"
}
