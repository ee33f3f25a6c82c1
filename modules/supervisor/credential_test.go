package supervisor

import (
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
)

// TestCredentialRefusesPrivilegedGroups: a config's `group` (or the
// user's own primary group) may not be root's, nor one whose members can
// act as root (docker's socket starts a container with the host's root;
// disk reads every file): `user nobody` with `group root` got past the
// refusal of `user root`. allow_root lets it, where Caddy runs as root.
func TestCredentialRefusesPrivilegedGroups(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to start processes as other accounts")
	}
	for _, tc := range []struct {
		user, group string
		allowRoot   bool
		want        string // "" when accepted
	}{
		{"nobody", "", false, ""},
		{"nobody", "nogroup", false, ""},
		{"nobody", "root", false, "group root (gid 0): the processes would read and write what root's group owns"},
		{"nobody", "disk", false, "group disk (gid 6): its members can act as root"},
		{"nobody", "shadow", false, "group shadow (gid "},
		{"nobody", "root", true, ""},
		{"root", "", false, "user root is root"},
	} {
		_, err := Credential(tc.user, tc.group, tc.allowRoot)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("user %s, group %q, allow_root %v: %v, want %q", tc.user, tc.group, tc.allowRoot, err, tc.want)
		}
	}
}

// TestPrivilegedGroup: root's group and the groups whose members can act
// as root are named; others are not (no root needed).
func TestPrivilegedGroup(t *testing.T) {
	if PrivilegedGroup(0) == "" {
		t.Error("root's group is not refused")
	}
	for _, name := range []string{"disk", "shadow", "tty"} {
		g, err := user.LookupGroup(name)
		if err != nil {
			continue // (not on this machine)
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		if PrivilegedGroup(gid) == "" {
			t.Errorf("group %s (gid %d) is not refused", name, gid)
		}
	}
	if g, err := user.LookupGroup("nogroup"); err == nil {
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		if why := PrivilegedGroup(gid); why != "" {
			t.Errorf("nogroup refused: %s", why)
		}
	}
}
