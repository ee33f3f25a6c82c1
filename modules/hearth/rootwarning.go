package hearth

import (
	"os"
	"syscall"

	"go.uber.org/zap"
)

// WarnIfRoot says in the log, when the config loads, that what (an app,
// a service, a job or a process upstream) will run as root because Caddy
// runs as root and what's block names no account (cred nil: Caddy's own).
// Not refused (`user root` needs allow_root; this is the old default),
// but never silent: a flaw in that code is then the whole machine's.
func WarnIfRoot(logger *zap.Logger, what string, cred *syscall.Credential) {
	if cred != nil || os.Geteuid() != 0 {
		return
	}
	logger.Warn("runs as root: Caddy runs as root and its block names no other account",
		zap.String("what", what),
		zap.String("fix", "set `user <account>` in its block (an unprivileged account that owns what it writes), or HEARTH_DEFAULT_USER for every block, as the unit of `caddy hearth systemd` does"))
}
