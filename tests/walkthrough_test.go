package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hearthCLI runs `caddy hearth <args>` in dir with Caddy's data directory
// data (where the secret keys are), and returns its exit code and output.
func hearthCLI(t *testing.T, dir, data string, args ...string) (int, string) {
	t.Helper()
	if len(args) > 0 && (args[0] == "manage" || args[0] == "exec" || args[0] == "check") {
		args = append([]string{args[0]}, append(asAppUser(), args[1:]...)...)
	}
	cmd := exec.Command(caddyBinary(t), append([]string{"hearth"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+data)
	out, err := cmd.CombinedOutput()
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("caddy hearth %v: %v", args, err)
	}
	return code, string(out)
}

// asAppUser is what check, manage and exec need to run the apps of these
// tests, which run as the tests' own account: as root, `--user root` (they
// refuse to run an app's code as root unasked).
func asAppUser() []string {
	if os.Geteuid() == 0 {
		return []string{"--user", "root"}
	}
	return nil
}

// TestNewcomerWalkthrough does what the README tells a newcomer, on an
// untouched `startproject`: init, check, caddy run (guard enforce passes),
// a page and a static file with DEBUG off, manage createsuperuser and
// shell seeing the user, a code change (a failing view) applied by
// restart, and that view's traceback in Caddy's log.
func TestNewcomerWalkthrough(t *testing.T) {
	t.Parallel()
	dir := startproject(t, "mysite")
	data := t.TempDir()
	port := freePort(t)
	code, out := hearthCLI(t, dir, data, "init", "--site", fmt.Sprintf(":%d", port))
	if code != 0 || !strings.Contains(out, "Wrote "+filepath.Join(dir, "Caddyfile")) || !strings.Contains(out, "caddy hearth manage mysite createsuperuser") {
		t.Fatalf("init: %d\n%s", code, out)
	}
	caddyfile, _ := os.ReadFile(filepath.Join(dir, "Caddyfile"))
	for _, want := range []string{"wsgi mysite.wsgi:application", "dir " + dir, "python " + pythonPath(), "settings overlay",
		"before_start python manage.py migrate --noinput", "before_start python manage.py collectstatic --noinput",
		"root * " + filepath.Join(dir, "staticfiles"), "guard enforce"} {
		if !strings.Contains(string(caddyfile), want) {
			t.Errorf("the Caddyfile lacks %q:\n%s", want, caddyfile)
		}
	}
	gitignore, _ := os.ReadFile(filepath.Join(dir, ".gitignore"))
	for _, want := range []string{".env", "db.sqlite3", "staticfiles/"} {
		if !strings.Contains(string(gitignore), want+"\n") {
			t.Errorf(".gitignore lacks %s:\n%s", want, gitignore)
		}
	}
	if code, out := hearthCLI(t, dir, data, "init"); code == 0 || !strings.Contains(out, "never writes over it") {
		t.Errorf("a second init: %d\n%s", code, out)
	}
	if code, out := hearthCLI(t, dir, data, "check"); code != 0 || !strings.Contains(out, "settings overlay, over mysite.settings") {
		t.Errorf("check: %d\n%s", code, out)
	}

	c := launchCaddyIn(t, dir, data)
	c.waitRunning()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if resp, body := get(t, base+"/admin/login/"); resp.StatusCode != 200 || !strings.Contains(body, "csrfmiddlewaretoken") {
		t.Errorf("the admin login page: %d\n%s", resp.StatusCode, tail(body, 5))
	}
	if resp, body := get(t, base+"/static/admin/css/base.css"); resp.StatusCode != 200 || !strings.Contains(body, "{") {
		t.Errorf("a static file: %d", resp.StatusCode)
	}
	if resp, body := get(t, base+"/no/such/page"); resp.StatusCode != 404 || strings.Contains(body, "DEBUG = True") || strings.Contains(body, "URLconf") {
		t.Errorf("a missing page with DEBUG off: %d\n%s", resp.StatusCode, tail(body, 5))
	}

	if os.Geteuid() == 0 { // as root, the account must be named
		cmd := exec.Command(caddyBinary(t), "hearth", "manage", "mysite", "check")
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "XDG_DATA_HOME="+data)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "--user") {
			t.Errorf("manage as root without --user: %v\n%s", err, out)
		}
	}
	code, out = hearthCLI(t, dir, data, "manage", "mysite", "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.invalid")
	if code != 0 {
		t.Fatalf("manage createsuperuser: %d\n%s", code, out)
	}
	code, out = hearthCLI(t, dir, data, "manage", "mysite", "shell", "-c",
		"from django.contrib.auth.models import User; from django.conf import settings; print('superusers:', User.objects.filter(is_superuser=True).count(), 'debug:', settings.DEBUG)")
	if code != 0 || !strings.Contains(out, "superusers: 1 debug: False") { // the overlay's settings, as the workers have them
		t.Errorf("manage shell: %d\n%s", code, out)
	}
	if code, out := hearthCLI(t, dir, data, "exec", "mysite", "--", "python", "-c", "import sys; sys.exit(7)"); code != 7 {
		t.Errorf("exec's exit code: %d, want 7\n%s", code, out)
	}

	// a code change: a view that fails; restart applies it
	urls := filepath.Join(dir, "mysite", "urls.py")
	src, _ := os.ReadFile(urls)
	writeFile(t, urls, string(src)+"\n\ndef boom(request):\n    return 1 / 0\n\n\nurlpatterns.append(path('boom/', boom))\n")
	if resp, _ := get(t, base+"/boom/"); resp.StatusCode != 404 {
		t.Errorf("before restart, /boom/: %d", resp.StatusCode)
	}
	code, out = hearthCLI(t, dir, data, "restart", "mysite", "--address", c.admin)
	if code != 0 || !strings.Contains(out, "restarted mysite") {
		t.Fatalf("restart: %d\n%s", code, out)
	}
	if resp, body := get(t, base+"/boom/"); resp.StatusCode != 500 || strings.Contains(body, "ZeroDivisionError") {
		t.Errorf("the failing view: %d\n%s", resp.StatusCode, tail(body, 5))
	}
	waitFor(t, 10*time.Second, "the traceback in Caddy's log", func() bool {
		log := c.log.String()
		return strings.Contains(log, "ZeroDivisionError") && strings.Contains(log, "/boom/")
	})
	// code that cannot start: restart says so, and the running workers keep serving
	writeFile(t, urls, string(src)+"\ndef broken(:\n")
	code, out = hearthCLI(t, dir, data, "restart", "mysite", "--address", c.admin)
	if code == 0 || !strings.Contains(out, "SyntaxError") {
		t.Errorf("restart into broken code: %d\n%s", code, out)
	}
	if resp, _ := get(t, base+"/admin/login/"); resp.StatusCode != 200 {
		t.Errorf("after a failed restart, the admin login page: %d", resp.StatusCode)
	}
	if code, out := hearthCLI(t, dir, data, "restart", "nosuch", "--address", c.admin); code == 0 || !strings.Contains(out, `no app named "nosuch"`) {
		t.Errorf("restart of an unknown app: %d\n%s", code, out)
	}
}
