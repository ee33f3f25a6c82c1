package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// startproject runs `django-admin startproject name` into a new directory
// and returns it; the project is never edited.
func startproject(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(pythonPath(), "-m", "django", "startproject", name, dir).CombinedOutput(); err != nil {
		t.Fatalf("startproject: %v\n%s", err, out)
	}
	return dir
}

// overlayProbe is a WSGI app beside an untouched project: /probe answers the
// settings Django runs with, the rest goes to the project.
const overlayProbe = `import json
import os
from mysite.wsgi import application as project
from django.conf import settings

def application(environ, start_response):
    if environ['PATH_INFO'] != '/probe':
        return project(environ, start_response)
    names = ['DEBUG', 'ALLOWED_HOSTS', 'CSRF_TRUSTED_ORIGINS', 'STATIC_ROOT',
             'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'ROOT_URLCONF']
    body = {n: getattr(settings, n, None) for n in names}
    body['SECRET_KEY_LENGTH'] = len(settings.SECRET_KEY)
    body['SECRET_KEY_INSECURE'] = settings.SECRET_KEY.startswith('django-insecure-')
    # where the key is in the environment: only under names Django's debug
    # pages hide (a dev server's request.META holds the environment)
    body['KEY_IN'] = sorted(n for n, v in os.environ.items() if settings.SECRET_KEY in v)
    body['STATIC_ROOT'] = str(body['STATIC_ROOT'])
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(body).encode()]
`

// TestSettingsOverlay: an untouched startproject runs under guard enforce
// with `settings overlay`: the project's own settings (ROOT_URLCONF) plus
// a generated key, DEBUG off, the site's hosts (env wins: ALLOWED_HOSTS)
// and origins, STATIC_ROOT for collectstatic in before_start; the key is
// never in the log. Without the overlay the same project is refused.
func TestSettingsOverlay(t *testing.T) {
	t.Parallel()
	dir := startproject(t, "mysite")
	writeFile(t, filepath.Join(dir, "probe.py"), overlayProbe)
	port := freePort(t)
	site := func(settings string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi probe:application {
		dir %s
		python {PYTHON}
		workers 1
		%s
		env ALLOWED_HOSTS 127.0.0.1,example.net
		before_start python manage.py migrate --noinput
		before_start python manage.py collectstatic --noinput
	}
}`, port, dir, settings)
	}
	log := refused(t, site(""))
	for _, want := range []string{"HG-DEBUG-01", "HG-KEY-03"} {
		if !strings.Contains(log, want) {
			t.Errorf("the untouched project without the overlay was not refused for %s:\n%s", want, tail(log, 8))
		}
	}
	data := t.TempDir()
	c := launchCaddyWithData(t, site("settings overlay mysite.settings"), data)
	c.waitRunning()
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/probe", port))
	var got map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("probe: %q", body)
	}
	want := map[string]any{
		"DEBUG": false, "ALLOWED_HOSTS": []any{"127.0.0.1", "example.net"},
		"CSRF_TRUSTED_ORIGINS": []any{fmt.Sprintf("http://127.0.0.1:%d", port)},
		"STATIC_ROOT":          filepath.Join(dir, "staticfiles"), "ROOT_URLCONF": "mysite.urls",
		"SESSION_COOKIE_SECURE": false, "CSRF_COOKIE_SECURE": false, "SECURE_HSTS_SECONDS": float64(0),
		"SECRET_KEY_INSECURE": false, "KEY_IN": []any{"HEARTH_SECRET_KEY"},
	}
	for name, w := range want {
		if fmt.Sprint(got[name]) != fmt.Sprint(w) {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
	if n, _ := got["SECRET_KEY_LENGTH"].(float64); n < 50 {
		t.Errorf("the overlay's secret key has %v characters", got["SECRET_KEY_LENGTH"])
	}
	if _, err := os.Stat(filepath.Join(dir, "staticfiles", "admin", "css", "base.css")); err != nil {
		t.Errorf("collectstatic in before_start did not fill STATIC_ROOT: %v", err)
	}
	status, page := get(t, fmt.Sprintf("http://127.0.0.1:%d/admin/login/", port))
	if status.StatusCode != 200 || !strings.Contains(page, "csrfmiddlewaretoken") {
		t.Errorf("the project's admin login: %d\n%s", status.StatusCode, tail(page, 5))
	}
	keys, _ := filepath.Glob(filepath.Join(data, "caddy", "hearth", "secrets", "*.key"))
	for _, k := range keys {
		key, _ := os.ReadFile(k)
		if s := strings.TrimSpace(string(key)); s != "" && strings.Contains(c.log.String(), s) {
			t.Errorf("the secret key is in the log")
		}
	}
	if len(keys) != 1 {
		t.Errorf("stored keys: %v", keys)
	}
}

// TestCheckShowsOverlay: `caddy hearth check` says what the overlay set
// (detecting mysite.settings from wsgi.py), the secure cookies and HSTS of
// an HTTPS site, never the key; an untouched project passes; every line
// fits 80 columns; a Flask app under the overlay gets HG-SET-01.
func TestCheckShowsOverlay(t *testing.T) {
	t.Parallel()
	dir := startproject(t, "mysite")
	caddyfile := filepath.Join(t.TempDir(), "site.caddyfile") // taken as a Caddyfile, as `caddy run` takes it
	writeFile(t, caddyfile, fmt.Sprintf(`{
	admin off
}
https://localhost:2929 {
	tls internal
	wsgi mysite.wsgi:application {
		dir %s
		python %s
		settings overlay
		before_start python manage.py migrate --noinput
	}
}
:3131 {
	wsgi flask_errors:app {
		dir %s
		python %s
		settings overlay
	}
}`, dir, pythonPath(), repoPath("tests", "apps"), pythonPath()))
	data := t.TempDir()
	check := func() (string, string) {
		cmd := exec.Command(caddyBinary(t), append([]string{"hearth", "check", "--config", caddyfile}, asAppUser()...)...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+data)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("check: %v\n%s%s", err, out, stderr.String())
		}
		return string(out), stderr.String()
	}
	report, said := check()
	// the key it had to create, it says where (once: the next run uses it)
	if !strings.Contains(said, "created app mysite's secret key ("+filepath.Join(data, "caddy", "hearth", "secrets")) {
		t.Errorf("check did not say it created the key:\n%s", said)
	}
	if _, said := check(); strings.Contains(said, "created") {
		t.Errorf("the second check created a key again:\n%s", said)
	}
	for _, want := range []string{"settings overlay, over mysite.settings, set:", "DEBUG", "False",
		`["localhost"]`, `["https://localhost:2929"]`, "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
		"SECURE_HSTS_SECONDS", "31536000", filepath.Join(dir, "staticfiles"), "SECRET_KEY", "(hidden", "HG-SET-01"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	for _, bad := range []string{"HG-KEY-03", "HG-DEBUG-01", "django-insecure"} {
		if strings.Contains(report, bad) {
			t.Errorf("the report has %q:\n%s", bad, report)
		}
	}
	for _, line := range strings.Split(report, "\n") {
		if len(line) > 80 && strings.Contains(strings.TrimSpace(line), " ") {
			t.Errorf("a line of %d columns:\n%s", len(line), line)
		}
	}
}

// TestMigrationChecks: a project whose database lacks migrations is
// refused unless before_start migrates (and the check never creates the
// SQLite file); a model changed without a migration is a warning until
// makemigrations; after migrate, nothing is found.
func TestMigrationChecks(t *testing.T) {
	t.Parallel()
	dir, data := startproject(t, "mysite"), t.TempDir()
	os.MkdirAll(filepath.Join(dir, "notes"), 0o755) // startapp fills an existing directory
	if out, err := exec.Command(pythonPath(), "-m", "django", "startapp", "notes", filepath.Join(dir, "notes")).CombinedOutput(); err != nil {
		t.Fatalf("startapp: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(dir, "notes", "models.py"), "from django.db import models\n\n\nclass Note(models.Model):\n    text = models.TextField()\n")
	settings := filepath.Join(dir, "mysite", "settings.py")
	src, _ := os.ReadFile(settings)
	writeFile(t, settings, string(src)+"\nINSTALLED_APPS += ['notes']\n")
	check := func(beforeStart string) map[string]bool {
		t.Helper()
		writeFile(t, filepath.Join(dir, "Caddyfile"), fmt.Sprintf(":%d {\n\twsgi mysite.wsgi:application {\n\t\tdir %s\n\t\tpython %s\n\t\tsettings overlay\n\t\t%s\n\t}\n}\n", freePort(t), dir, pythonPath(), beforeStart))
		cmd := exec.Command(caddyBinary(t), append([]string{"hearth", "check", "--json"}, asAppUser()...)...)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "XDG_DATA_HOME="+data)
		out, _ := cmd.Output() // the report; what it says on stderr is not JSON
		var report struct {
			Apps []struct {
				Findings []struct {
					ID     string `json:"id"`
					Blocks bool   `json:"blocks"`
				} `json:"findings"`
				Error string `json:"error"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(out, &report); err != nil || len(report.Apps) != 1 || report.Apps[0].Error != "" {
			t.Fatalf("check --json: %v\n%s", err, out)
		}
		found := map[string]bool{}
		for _, f := range report.Apps[0].Findings {
			if strings.HasPrefix(f.ID, "HG-MIGRATE-") {
				found[f.ID] = f.Blocks
			}
		}
		return found
	}
	if got := check(""); len(got) != 2 || !got["HG-MIGRATE-01"] || got["HG-MIGRATE-02"] {
		t.Errorf("no migrate before start: %v, want HG-MIGRATE-01 blocking and HG-MIGRATE-02 a warning", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "db.sqlite3")); err == nil {
		t.Errorf("the check created the SQLite database")
	}
	if got := check("before_start python manage.py migrate --noinput"); len(got) != 1 || !hasKey(got, "HG-MIGRATE-02") || got["HG-MIGRATE-02"] {
		t.Errorf("migrate before start: %v, want HG-MIGRATE-02 alone", got)
	}
	for _, args := range [][]string{{"makemigrations", "notes", "-v0"}, {"migrate", "-v0"}} {
		if code, out := hearthCLI(t, dir, data, append([]string{"manage", "mysite"}, args...)...); code != 0 {
			t.Fatalf("manage %v: %d\n%s", args, code, out)
		}
	}
	if got := check(""); len(got) != 0 {
		t.Errorf("after makemigrations and migrate: %v", got)
	}
}

func hasKey(m map[string]bool, k string) bool { _, ok := m[k]; return ok }

// TestCheckBesideRunningCaddy: `caddy hearth check` of the config a
// running Caddy serves on every interface does not report that Caddy's
// listener as "not Caddy" (HG-NET-01); another process there still is.
func TestCheckBesideRunningCaddy(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	config := fmt.Sprintf(":%d {\n\twsgi hello:application {\n\t\tdir {APPS}\n\t\tpython {PYTHON}\n\t\tworkers 1\n\t}\n}\n", port)
	c := startCaddy(t, config)
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, caddyfile, caddyfileVars(c).Replace(config))
	code, out := hearthCLI(t, filepath.Dir(caddyfile), t.TempDir(), "check")
	if code != 0 || strings.Contains(out, fmt.Sprintf(":%d,", port)) || strings.Contains(out, fmt.Sprintf(":%d ", port)) {
		t.Errorf("check beside the running Caddy: %d\n%s", code, out)
	}
	// a process that is not Caddy on another of the config's ports is reported
	other := exec.Command(pythonPath(), "-c", "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)")
	stdout, _ := other.StdoutPipe()
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	var otherPort int
	if _, err := fmt.Fscan(stdout, &otherPort); err != nil {
		t.Fatal(err)
	}
	writeFile(t, caddyfile, caddyfileVars(c).Replace(config)+fmt.Sprintf(":%d {\n\trespond hi\n}\n", otherPort))
	if _, out := hearthCLI(t, filepath.Dir(caddyfile), t.TempDir(), "check"); !strings.Contains(out, fmt.Sprintf("0.0.0.0:%d", otherPort)) {
		t.Errorf("the python listener on a config port is not reported:\n%s", out)
	}
}

// TestOverlayRefusesCopiesOfTheProjectKey: settings.py that copies its own
// key into another setting at import (SIMPLE_JWT's SIGNING_KEY, as
// simplejwt's docs write it) keeps that copy under `settings overlay`,
// which replaces SECRET_KEY only: with startproject's django-insecure- key,
// anyone holding the repository could sign tokens the app accepts. The
// app is refused, naming the setting (never the key); the same project
// without the copy starts.
func TestOverlayRefusesCopiesOfTheProjectKey(t *testing.T) {
	t.Parallel()
	dir := startproject(t, "mysite")
	settingsPy := filepath.Join(dir, "mysite", "settings.py")
	original, err := os.ReadFile(settingsPy)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, settingsPy, string(original)+"\nSIMPLE_JWT = {'ALGORITHM': 'HS256', 'SIGNING_KEY': SECRET_KEY}\n")
	port := freePort(t)
	site := fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi mysite.wsgi:application {
		dir %s
		python {PYTHON}
		workers 1
		settings overlay mysite.settings
		before_start python manage.py migrate --noinput
	}
}`, port, dir)
	log := refused(t, site)
	if !strings.Contains(log, "HG-KEY-06") || !strings.Contains(log, "SIMPLE_JWT holds a copy") {
		t.Errorf("a copy of the project's insecure key was not refused:\n%s", tail(log, 8))
	}
	for _, line := range strings.Split(string(original), "\n") {
		if key, ok := strings.CutPrefix(line, "SECRET_KEY = "); ok && strings.Contains(log, strings.Trim(key, "'\"")) {
			t.Errorf("the project's key is in the log")
		}
	}
	writeFile(t, settingsPy, string(original))
	c := launchCaddyWithData(t, site, t.TempDir())
	c.waitRunning()
}
