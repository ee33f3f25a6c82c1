// Package hearth brings every Hearth module into a Caddy build:
//
//	xcaddy build --with github.com/hearth-dev/hearth
package hearth

import (
	// the Caddyfile directives
	_ "github.com/hearth-dev/hearth/caddyfile"
	// the modules
	_ "github.com/hearth-dev/hearth/modules/guard"
	_ "github.com/hearth-dev/hearth/modules/hearth"
	_ "github.com/hearth-dev/hearth/modules/python"
)
