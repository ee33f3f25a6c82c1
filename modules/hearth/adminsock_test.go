package hearth

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// TestAdminSocketInADirectoryTheAccountWrites: an account that may write
// the admin socket's directory can put a socket of its own there in
// Caddy's place (removed, or not made yet), and `caddy reload` and
// `caddy hearth` would talk to it: it counts as reaching the admin API,
// even with the socket's mode keeping it out, and with a sticky bit.
func TestAdminSocketInADirectoryTheAccountWrites(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("as root, which sets the owners")
	}
	base := t.TempDir()
	os.Chmod(filepath.Dir(base), 0o755)
	os.Chmod(base, 0o755)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, tc := range []struct {
		name      string
		owner     int
		mode      fs.FileMode
		reachable bool
	}{
		{"the account's own directory", 65534, 0o755, true},
		{"a directory everyone writes, sticky as tmp", 0, fs.ModeSticky | 0o777, true},
		{"root's directory", 0, 0o755, false},
		{"root's directory the account cannot enter", 0, 0o700, false},
	} {
		dir := filepath.Join(base, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chown(dir, tc.owner, tc.owner)
		os.Chmod(dir, tc.mode)
		got := AdminReachableBy("unix/"+filepath.Join(dir, "admin.sock")+"|0600", true, nobody, "the app")
		if (got != "") != tc.reachable || tc.reachable && !strings.Contains(got, "may write "+dir+" (") {
			t.Errorf("%s: %q, want reachable %v", tc.name, got, tc.reachable)
		}
	}
	// a directory above, which the account may write without the sticky
	// bit: it renames root's 0700 directory of the socket away and makes
	// its own; with the sticky bit (as /tmp) it cannot
	for _, tc := range []struct {
		mode      fs.FileMode
		reachable bool
	}{{0o777, true}, {fs.ModeSticky | 0o777, false}} {
		above := filepath.Join(base, fmt.Sprintf("above-%o", tc.mode))
		os.Mkdir(above, 0o700)
		os.Chmod(above, tc.mode)
		os.Mkdir(filepath.Join(above, "caddy"), 0o700)
		got := AdminReachableBy("unix/"+filepath.Join(above, "caddy", "admin.sock")+"|0600", true, nobody, "the app")
		if (got != "") != tc.reachable || tc.reachable && !strings.Contains(got, "may write "+above+" (") {
			t.Errorf("a directory above of mode %v: %q, want reachable %v", tc.mode, got, tc.reachable)
		}
	}
}
