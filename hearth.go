// Package hearth brings every Hearth module into a Caddy build:
//
//	xcaddy build --with github.com/hearth-dev/hearth
package hearth

import (
	// DNS providers for the ddns app (and ACME DNS challenges)
	_ "github.com/caddy-dns/cloudflare"
	_ "github.com/caddy-dns/rfc2136"

	// the Caddyfile directives
	_ "github.com/hearth-dev/hearth/caddyfile"
	// the modules
	_ "github.com/hearth-dev/hearth/modules/ddns"
	_ "github.com/hearth-dev/hearth/modules/guard"
	_ "github.com/hearth-dev/hearth/modules/hearth"
	_ "github.com/hearth-dev/hearth/modules/process"
	_ "github.com/hearth-dev/hearth/modules/python"
	_ "github.com/hearth-dev/hearth/modules/hearthio"
)
