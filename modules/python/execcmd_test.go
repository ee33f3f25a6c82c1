package python

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hearth-dev/hearth/modules/python/engine"
)

// TestCommandCredential: manage and exec never run an app's code as root
// unasked; --user names the account when the block has none.
func TestCommandCredential(t *testing.T) {
	if os.Geteuid() != 0 {
		if cred, err := commandCredential(&poolSpec{Options: engine.Options{Name: "mysite"}}, ""); cred != nil || err != nil {
			t.Errorf("as a user, no block user: %v %v", cred, err)
		}
		return
	}
	if _, err := commandCredential(&poolSpec{Options: engine.Options{Name: "mysite"}}, ""); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Errorf("as root, no user named: %v", err)
	}
	if cred, err := commandCredential(&poolSpec{Options: engine.Options{Name: "mysite"}}, "root"); cred != nil || err != nil {
		t.Errorf("--user root: %v %v", cred, err)
	}
	cred, err := commandCredential(&poolSpec{Options: engine.Options{Name: "mysite"}}, "nobody")
	if err != nil || cred == nil || cred.Uid == 0 {
		t.Errorf("--user nobody: %+v %v", cred, err)
	}
	if _, err := commandCredential(&poolSpec{Options: engine.Options{Name: "mysite"}}, "no-such-account-here"); err == nil {
		t.Errorf("an unknown account accepted")
	}
	// a block that names a user: root confirms it with --user, and a
	// config changed to another account, or to root, is refused
	nobody := &poolSpec{Options: engine.Options{Name: "mysite"}}
	nobody.Credential, nobody.User = &syscall.Credential{Uid: 65534, Gid: 65534}, "nobody"
	nobodyRootGroup := &poolSpec{Options: engine.Options{Name: "mysite"}} // user nobody, group root
	nobodyRootGroup.Credential, nobodyRootGroup.User, nobodyRootGroup.Group = &syscall.Credential{Uid: 65534, Gid: 0}, "nobody", "root"
	fromDefault := &poolSpec{Options: engine.Options{Name: "mysite"}} // no user in the block: HEARTH_DEFAULT_USER's
	fromDefault.Credential = &syscall.Credential{Uid: 65534, Gid: 33}
	rootDaemon := &poolSpec{Options: engine.Options{Name: "mysite"}} // user root, group daemon, allow_root
	rootDaemon.Credential, rootDaemon.User, rootDaemon.Group = &syscall.Credential{Uid: 0, Gid: 1}, "root", "daemon"
	for _, c := range []struct {
		spec    *poolSpec
		account string
		uid     int64 // -1: refused
		says    string
	}{
		{nobody, "", -1, "--user nobody"},
		{nobody, "nobody", 65534, ""},
		{nobody, "root", -1, "not --user root"},
		{nobody, "nobody:root", -1, "not --user nobody:root"},
		{nobodyRootGroup, "nobody", -1, "with group root (gid 0) (a privileged group"}, // a block changed to group root (or docker, shadow)
		{nobodyRootGroup, "nobody:root", 65534, ""},                                    // (a block with allow_root: the group typed confirms it)
		{rootDaemon, "nobody", -1, "names user root"},
		{rootDaemon, "root:daemon", 0, ""},
		{rootDaemon, "root", -1, "with group daemon (gid 1), not --user root"},
		// from HEARTH_DEFAULT_USER in root's own environment, not the
		// block: --user decides, and takes that group for the same account
		{fromDefault, "nobody", 65534, ""},
		{fromDefault, "", -1, "--user <name>"},
		{fromDefault, "root", 0, ""},
	} {
		cred, err := commandCredential(c.spec, c.account)
		switch {
		case c.uid < 0 && (err == nil || !strings.Contains(err.Error(), c.says)):
			t.Errorf("block uid %d, --user %q: %+v %v; want refused, saying %q", c.spec.Credential.Uid, c.account, cred, err, c.says)
		case c.uid >= 0 && (err != nil || cred == nil && c.uid != 0 || cred != nil && int64(cred.Uid) != c.uid): // nil: root itself
			t.Errorf("block uid %d, --user %q: %+v %v; want uid %d", c.spec.Credential.Uid, c.account, cred, err, c.uid)
		}
	}
}

// TestCommandEnvFileAsTheAccount: `sudo caddy hearth manage --user nobody`
// for a block without `user` reads the app's env_file as nobody, not as
// root: a .env the app's account linked to root's secrets is refused, and
// the environment is nobody's (HOME, USER), not root's.
func TestCommandEnvFileAsTheAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("as root")
	}
	base := t.TempDir()
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	secret := filepath.Join(base, "caddy.env")
	os.WriteFile(secret, []byte("DDNS_TSIG_KEY=root-only-secret\n"), 0o600)
	app := filepath.Join(base, "app")
	os.Mkdir(app, 0o755)
	os.Chown(app, 65534, 65534)
	os.WriteFile(filepath.Join(app, "wsgi.py"), []byte("def application(e, s): pass\n"), 0o644)
	config := func(envFile string) []byte {
		return []byte(fmt.Sprintf(`{"apps": {"http": {"servers": {"s": {"listen": [":0"], "routes": [{"handle": [
			{"handler": "wsgi", "app": "wsgi:application", "dir": %q, "python": "/usr/bin/python3", "env_file": %q}]}]}}}}}`, app, envFile))
	}
	os.Symlink(secret, filepath.Join(app, ".env"))
	pools, err := configuredPools(config(".env"), "nobody")
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 1 || pools[0].err == nil || !strings.Contains(pools[0].err.Error(), "cannot read") {
		t.Fatalf("a .env linked to root's file, read for --user nobody: %+v (%v)", pools, pools[0].err)
	}
	own := filepath.Join(app, "own.env")
	os.WriteFile(own, []byte("DATABASE_PASSWORD=the-apps-own\n"), 0o600)
	os.Chown(own, 65534, 65534)
	pools, err = configuredPools(config("own.env"), "nobody")
	if err != nil || len(pools) != 1 || pools[0].err != nil {
		t.Fatalf("the app's own env_file, --user nobody: %v %+v", err, pools)
	}
	env := strings.Join(pools[0].app.spec.Env, "\n")
	if !strings.Contains(env, "DATABASE_PASSWORD=the-apps-own") || !strings.Contains(env, "USER=nobody") || strings.Contains(env, "HOME=/root") {
		t.Errorf("the environment for --user nobody:\n%s", env)
	}
}
