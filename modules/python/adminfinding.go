package python

import (
	"fmt"
	"os"
	"syscall"

	"github.com/caddyserver/caddy/v2"

	"github.com/hearth-dev/hearth/modules/hearth"
)

// adminFix is how to keep apps away from the admin API.
const adminFix = hearth.AdminFix + "; and run the app under its own account (`user <name>` in its block, or HEARTH_DEFAULT_USER, as that unit does)"

// adminFindings is HG-ADMIN-01: the pool's processes (running as cred, or
// as Caddy's own user when cred is nil) could reach Caddy's admin API,
// which loads configs and so runs any command (before_start) as Caddy's
// user. A warning when the app runs as Caddy's own user (development),
// unless Caddy is not root yet may switch users (then, like an app of
// another user that can reach the API, a privilege escalation: blocking).
func adminFindings(listen string, enabled bool, cred *syscall.Credential) []Finding {
	if !enabled {
		return nil
	}
	addr, err := caddy.ParseNetworkAddress(listen)
	if err != nil || addr.IsFdNetwork() {
		return nil
	}
	if problem := hearth.AdminReachableBy(listen, enabled, cred, "the app"); problem != "" {
		return []Finding{{ID: "HG-ADMIN-01", Blocking: true, Problem: problem, Fix: adminFix}}
	}
	if cred == nil {
		return []Finding{{ID: "HG-ADMIN-01", Blocking: false,
			Problem: fmt.Sprintf("the app runs as Caddy's own user (%s): it can use Caddy's admin API at %s, which can load a config that runs any command as Caddy", accountName(uint32(os.Geteuid())), listen),
			Fix:     adminFix}}
	}
	return nil
}

// accountName is the user name of uid, or the number.
func accountName(uid uint32) string { return hearth.AccountName(uid) }

// adminEndpointFindings is adminFindings for the pool, with the admin
// address of the config it belongs to.
func (a *App) adminEndpointFindings() []Finding {
	listen, enabled := hearth.AdminEndpoint()
	return adminFindings(listen, enabled, a.spec.Credential)
}
