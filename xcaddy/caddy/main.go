// Command caddy is Caddy with Hearth's modules, for builds without xcaddy
// (xcaddy/build.sh falls back to `go build` of this package).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/hearth-dev/hearth"
)

func main() {
	caddycmd.Main()
}
