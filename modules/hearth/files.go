package hearth

import (
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/linkfs"
)

// serveFilesThroughLinkFS makes linkfs the file system of the config's file
// servers and try_files that name none (`fs`), in place of Caddy's plain
// one: an app's account owns the directories they serve, and must not be
// able to link Caddy's private keys or another app's secrets into them. A
// default file system the config chose itself (the `filesystem` global
// option named "default") is left alone.
func serveFilesThroughLinkFS(ctx caddy.Context, logger *zap.Logger) {
	fss := ctx.FileSystems()
	if fss.Default() != (&caddy.Context{}).FileSystems().Default() {
		return
	}
	fss.Register("default", linkfs.FS{Logger: logger.Named("files")})
}
