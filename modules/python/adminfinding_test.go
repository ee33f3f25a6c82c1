package python

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAdminFindings: HG-ADMIN-01 for each kind of admin endpoint and
// worker account.
func TestAdminFindings(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("judging another user's access needs files owned by root")
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	listen := func(sub string, dirMode, sockMode os.FileMode) string {
		d := filepath.Join(dir, sub)
		os.Mkdir(d, dirMode)
		os.Chmod(d, dirMode)
		path := filepath.Join(d, "admin.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		os.Chmod(path, sockMode)
		return path
	}
	private := listen("private", 0o700, 0o666) // the unit's: /run/caddy is 0700
	open := listen("open", 0o755, 0o666)
	ownerOnly := listen("owner", 0o755, 0o600)
	for _, tc := range []struct {
		name     string
		listen   string
		enabled  bool
		cred     *syscall.Credential
		want     string // "" none, "warning", "blocking"
		contains string
	}{
		{"tcp, Caddy's own user", "localhost:2019", true, nil, "warning", "runs as Caddy's own user"},
		{"tcp, another user", "localhost:2019", true, nobody, "blocking", "listens on TCP localhost:2019"},
		{"tcp, another user, admin off", "localhost:2019", false, nobody, "", ""},
		{"unix in a 0700 directory", "unix/" + private + "|0666", true, nobody, "", ""},
		{"unix, world-writable socket", "unix/" + open + "|0666", true, nobody, "blocking", "can open Caddy's admin socket " + open},
		{"unix, socket 0600", "unix/" + ownerOnly + "|0600", true, nobody, "", ""},
		{"unix, Caddy's own user", "unix/" + private, true, nil, "warning", "runs as Caddy's own user"},
		{"unix, socket not there yet, default mode", "unix/" + filepath.Join(dir, "open", "later.sock"), true, nobody, "", ""},
		{"unix, socket not there yet, mode 0666", "unix/" + filepath.Join(dir, "open", "later.sock") + "|0666", true, nobody, "blocking", "later.sock"},
		{"fd", "fd/3", true, nobody, "", ""},
	} {
		got := adminFindings(tc.listen, tc.enabled, tc.cred)
		switch {
		case tc.want == "" && len(got) != 0:
			t.Errorf("%s: unexpected %v", tc.name, got)
		case tc.want != "" && len(got) != 1:
			t.Errorf("%s: want one finding, got %v", tc.name, got)
		case tc.want != "" && (got[0].ID != "HG-ADMIN-01" || got[0].Blocking != (tc.want == "blocking") || !strings.Contains(got[0].Problem, tc.contains) || got[0].Fix == ""):
			t.Errorf("%s: want %s containing %q, got %+v", tc.name, tc.want, tc.contains, got[0])
		}
	}
}
