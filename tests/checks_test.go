package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// checkedSite is a Caddyfile serving app from dir with extra wsgi options.
func checkedSite(t *testing.T, app, dir, options string) string {
	config, _ := appSite(t, "wsgi", app, dir, "workers 1\n\t\t"+options)
	return config
}

func TestGuardRefusesStartprojectDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// a project exactly as Django's own startproject writes it
	if out, err := exec.Command(pythonPath(), "-m", "django", "startproject", "mysite", dir).CombinedOutput(); err != nil {
		t.Fatalf("startproject: %v\n%s", err, out)
	}
	sawDeploy := false
	log := refused(t, checkedSite(t, "mysite.wsgi:application", dir, ""))
	for _, id := range []string{"HG-DEBUG-01", "HG-KEY-03", "HG-HOST-02", "HG-MIGRATE-01"} {
		if !strings.Contains(log, id) {
			t.Errorf("the refusal lacks %s:\n%s", id, tail(log, 20))
		}
	}
	if strings.Contains(log, "django-insecure-") && strings.Contains(log, "SECRET_KEY = ") {
		t.Errorf("the key's value leaked into the log")
	}
	// apply the fixes the lines give: settings read DEBUG, the key and the
	// hosts from the environment, which the Caddyfile sets
	settings := filepath.Join(dir, "mysite", "settings.py")
	src, _ := os.ReadFile(settings)
	fixed := string(src) + `
import os
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
ALLOWED_HOSTS = os.environ["DJANGO_ALLOWED_HOSTS"].split(",")
`
	writeFile(t, settings, fixed)
	envFile := filepath.Join(dir, ".env")
	writeFile(t, envFile, "DJANGO_SECRET_KEY=k9Vq2ZrT7mWb4NxLp8HsYc3DfGj6QaEu1RtKo5PiMnBv0XlJzSw\nDJANGO_ALLOWED_HOSTS=127.0.0.1,localhost\n")
	// a world-readable env_file is refused too
	os.Chmod(envFile, 0o644)
	log = refused(t, checkedSite(t, "mysite.wsgi:application", dir, "env_file "+envFile))
	if !strings.Contains(log, "HG-FILE-01") || !strings.Contains(log, "chmod 600 "+envFile) {
		t.Errorf("world-readable env_file not refused with its fix:\n%s", tail(log, 10))
	}
	os.Chmod(envFile, 0o600)
	c := startCaddy(t, checkedSite(t, "mysite.wsgi:application", dir, "env_file "+envFile+"\n\t\tbefore_start python manage.py migrate --noinput"))
	for _, f := range c.mustApps()[0].Findings {
		if f.Blocking {
			t.Errorf("a blocking finding after the fixes: %+v", f)
		}
		if f.ID == "HG-HTTPS-01" && strings.Contains(f.Problem, "W004") { // Django's deploy checks, in Hearth's words for a plain-HTTP site
			sawDeploy = true
		}
	}
	if !sawDeploy {
		t.Errorf("Django's own deploy checks (security.W004, no HSTS, on a plain-HTTP site: HG-HTTPS-01) are not reported")
	}
}

func TestGuardRefusesFlaskDebug(t *testing.T) {
	t.Parallel()
	log := refused(t, checkedSite(t, "flask_debug:app", "{APPS}", ""))
	for _, id := range []string{"HG-FLASK-01", "HG-KEY-02"} {
		if !strings.Contains(log, id) {
			t.Errorf("the refusal lacks %s:\n%s", id, tail(log, 20))
		}
	}
	log = refused(t, checkedSite(t, "werkzeug_debug:application", "{APPS}", ""))
	if !strings.Contains(log, "HG-FLASK-01") {
		t.Errorf("the Werkzeug debugger was not refused:\n%s", tail(log, 10))
	}
}

func TestGuardWarnAndAllow(t *testing.T) {
	t.Parallel()
	// warn: the app starts, the findings are in the log and the status
	c := startCaddy(t, checkedSite(t, "flask_debug:app", "{APPS}", "guard warn"))
	a := c.mustApps()[0]
	ids := map[string]bool{}
	for _, f := range a.Findings {
		ids[f.ID] = true
	}
	if !ids["HG-FLASK-01"] || !ids["HG-KEY-02"] || a.Guard != "warn" {
		t.Errorf("status findings %+v (guard %q)", a.Findings, a.Guard)
	}
	if !strings.Contains(c.log.String(), `"level":"warn"`) || !strings.Contains(c.log.String(), "HG-FLASK-01") {
		t.Errorf("findings not logged at WARN")
	}
	// enforce with both findings acknowledged: starts
	startCaddy(t, checkedSite(t, "flask_debug:app", "{APPS}", "guard enforce {\n\t\t\tallow HG-FLASK-01 HG-KEY-02\n\t\t}"))
	// one acknowledged, one not: refused for the other only
	log := refused(t, checkedSite(t, "flask_debug:app", "{APPS}", "guard enforce {\n\t\t\tallow HG-FLASK-01\n\t\t}"))
	if !strings.Contains(log, "HG-KEY-02") || strings.Contains(log, "  HG-FLASK-01") {
		t.Errorf("allow did not work per finding:\n%s", tail(log, 10))
	}
}

func TestGuardDevelopmentEnvFlags(t *testing.T) {
	t.Parallel()
	log := refused(t, checkedSite(t, "hello:application", "{APPS}", "env FLASK_DEBUG 1"))
	if !strings.Contains(log, "HG-ENV-01") || !strings.Contains(log, "FLASK_DEBUG") {
		t.Errorf("FLASK_DEBUG=1 not refused:\n%s", tail(log, 10))
	}
	startCaddy(t, checkedSite(t, "hello:application", "{APPS}", "env FLASK_DEBUG 0"))
}

func TestGuardRefusesPublicAdminAndServedCode(t *testing.T) {
	t.Parallel()
	// Caddy's admin API on every interface: blocking
	log := refused(t, fmt.Sprintf("{\n\tadmin 0.0.0.0:%d\n}\n", freePort(t))+checkedSite(t, "hello:application", "{APPS}", ""))
	if !strings.Contains(log, "HG-NET-02") {
		t.Errorf("a public admin API was not refused:\n%s", tail(log, 8))
	}
	// the app directory, with its .git, served by file_server
	dir := t.TempDir()
	writeFile(t, dir+"/served.py", "def application(e, s):\n    s('200 OK', [])\n    return [b'x']\n")
	os.Mkdir(dir+"/.git", 0o755)
	port := freePort(t)
	log = refused(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	handle_path /files/* {
		root * %s
		file_server
	}
	wsgi served:application {
		dir %s
		python {PYTHON}
		workers 1
	}
}`, port, dir, dir))
	if !strings.Contains(log, "HG-FILE-04") {
		t.Errorf("an app served by file_server with its .git was not refused:\n%s", tail(log, 8))
	}
}

func TestGuardRefusalOnReloadKeepsOldConfig(t *testing.T) {
	t.Parallel()
	config := checkedSite(t, "hello:application", "{APPS}", "")
	c := startCaddy(t, config)
	before := c.workerPIDs()
	code, body := c.load(checkedSite(t, "flask_debug:app", "{APPS}", ""))
	if code == 200 || !strings.Contains(body, "HG-FLASK-01") {
		t.Fatalf("a config refused by the guard was loaded: %d %s", code, body)
	}
	if after := c.workerPIDs(); sortedPIDs(after) != sortedPIDs(before) {
		t.Errorf("the running app changed: %v → %v", before, after)
	}
}
