package hearth

import (
	"slices"
	"testing"
)

// TestCommandEnvDropped: as root, for another account's code, a command
// beside a config keeps only what it needs of its environment; as root for
// root's code, or not as root, it keeps everything.
func TestCommandEnvDropped(t *testing.T) {
	environ := []string{"PATH=/usr/bin", "HOME=/root", "LC_ALL=C", "XDG_DATA_HOME=/var/lib/caddy", "TERM=xterm",
		"CLOUDFLARE_API_TOKEN=secret", "AWS_SECRET_ACCESS_KEY=secret", "DATABASE_URL=postgres://x", "=odd", "NOVALUE"}
	for _, tc := range []struct {
		name    string
		account string
		euid    int
		want    []string
	}{
		{"root, for another account", "nobody", 0, []string{"AWS_SECRET_ACCESS_KEY", "CLOUDFLARE_API_TOKEN", "DATABASE_URL", "NOVALUE"}},
		{"root, for another account and group", "hearth-apps:caddy", 0, []string{"AWS_SECRET_ACCESS_KEY", "CLOUDFLARE_API_TOKEN", "DATABASE_URL", "NOVALUE"}},
		{"root, for root", "root", 0, nil},
		{"root, no account given (refused later)", "", 0, nil},
		{"not root: its own code", "alice", 1000, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := commandEnvDropped(environ, tc.account, tc.euid); !slices.Equal(got, tc.want) {
				t.Errorf("dropped %q, want %q", got, tc.want)
			}
		})
	}
}
