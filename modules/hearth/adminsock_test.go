package hearth

import (
	"strings"
	"syscall"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestAdminFromContext: the admin address of the config being provisioned
// is read from Caddy's context (a Caddy upgrade that moves it fails here).
func TestAdminFromContext(t *testing.T) {
	defer SetAdminEndpoint("", false)
	for _, tc := range []struct {
		admin   *caddy.AdminConfig
		listen  string
		enabled bool
	}{
		{&caddy.AdminConfig{Listen: "unix//run/caddy/admin.sock|0600"}, "unix//run/caddy/admin.sock|0600", true},
		{&caddy.AdminConfig{Disabled: true}, "", false},
		{&caddy.AdminConfig{Listen: "127.0.0.1:2999"}, "127.0.0.1:2999", true},
		{nil, caddy.DefaultAdminListen, true},
	} {
		ctx, err := caddy.ProvisionContext(&caddy.Config{Admin: tc.admin})
		SetAdminEndpoint("stale", true)
		recordAdminEndpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if listen, enabled := AdminEndpoint(); listen != tc.listen || enabled != tc.enabled {
			t.Errorf("admin %+v: got %q %v, want %q %v", tc.admin, listen, enabled, tc.listen, tc.enabled)
		}
	}
}

// TestAdminOpenToEveryAccount: a TCP admin API of a Caddy that runs as
// root (or may switch users) is a way to root for every local account:
// said; a unix socket, an admin API turned off, or an unprivileged Caddy
// is not.
func TestAdminOpenToEveryAccount(t *testing.T) {
	for _, c := range []struct {
		listen              string
		enabled, privileged bool
		want                bool
	}{
		{"localhost:2019", true, true, true},
		{"127.0.0.1:2999", true, true, true},
		{"tcp/[::1]:2019", true, true, true},
		{"localhost:2019", true, false, false},
		{"localhost:2019", false, true, false},
		{"unix//run/caddy/admin.sock|0600", true, true, false},
		{"unix/@caddy-admin", true, true, true}, // abstract: no permissions
		{"fd/3", true, true, false},
	} {
		if got := adminOpenToEveryAccount(c.listen, c.enabled, c.privileged) != ""; got != c.want {
			t.Errorf("%s (enabled %v, privileged %v): %v, want %v", c.listen, c.enabled, c.privileged, got, c.want)
		}
	}
}

// TestAdminReachableByAbstractSocket: an abstract unix socket keeps no
// account out, whatever its mode.
func TestAdminReachableByAbstractSocket(t *testing.T) {
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, listen := range []string{"unix/@caddy-admin", "unix/@caddy-admin|0600", "localhost:2019"} {
		if got := AdminReachableBy(listen, true, nobody, "the app"); !strings.Contains(got, "every local process can reach") {
			t.Errorf("%s: %q", listen, got)
		}
	}
}
