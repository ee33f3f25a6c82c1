package tests

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWorkersRunAsUser(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody on this machine: %v", err)
	}
	// an app directory the other user can read
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	writeFile(t, filepath.Join(dir, "whoami.py"), "import os\n\ndef application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [('%d %d' % (os.getuid(), os.getgid())).encode()]\n")
	os.Chmod(filepath.Join(dir, "whoami.py"), 0o644)
	config := func(options string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi whoami:application {
		dir %s
		python {PYTHON}
		workers 1
		%s
	}
}`, freePort(t), dir, options)
	}
	if os.Geteuid() != 0 {
		// Caddy is not root: it cannot switch, and says so
		c := launchCaddy(t, config("user nobody"))
		if code := c.waitExit(30 * time.Second); code == 0 || !strings.Contains(c.log.String(), "cannot start processes as nobody") {
			t.Errorf("user nobody without root: exit %d\n%s", code, tail(c.log.String(), 5))
		}
		return
	}
	c := startCaddy(t, config("user nobody"))
	apps := c.mustApps()
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", apps[0].Workers[0].Pid))
	if !strings.Contains(string(data), "Uid:\t"+nobody.Uid+"\t") {
		t.Errorf("the worker does not run as nobody (%s):\n%s", nobody.Uid, data)
	}
	// root is refused unless allowed
	c2 := launchCaddy(t, config("user root"))
	if code := c2.waitExit(30 * time.Second); code == 0 || !strings.Contains(c2.log.String(), "user root is root") {
		t.Errorf("user root accepted: exit %d\n%s", code, tail(c2.log.String(), 5))
	}
	startCaddy(t, config("user root\n\t\tallow_root"))
}
