package python

import (
	"os"
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
	nobody.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	rootDaemon := &poolSpec{Options: engine.Options{Name: "mysite"}} // user root, group daemon, allow_root
	rootDaemon.Credential = &syscall.Credential{Uid: 0, Gid: 1}
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
		{rootDaemon, "nobody", -1, "names user root"},
		{rootDaemon, "root", 0, ""},
	} {
		cred, err := commandCredential(c.spec, c.account)
		switch {
		case c.uid < 0 && (err == nil || !strings.Contains(err.Error(), c.says)):
			t.Errorf("block uid %d, --user %q: %+v %v; want refused, saying %q", c.spec.Credential.Uid, c.account, cred, err, c.says)
		case c.uid >= 0 && (err != nil || cred == nil || int64(cred.Uid) != c.uid):
			t.Errorf("block uid %d, --user %q: %+v %v; want uid %d", c.spec.Credential.Uid, c.account, cred, err, c.uid)
		}
	}
}
