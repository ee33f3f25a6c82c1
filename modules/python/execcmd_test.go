package python

import (
	"github.com/hearth-dev/hearth/modules/python/engine"

	"os"
	"strings"
	"testing"
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
}
