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
		"SECRET_KEY_INSECURE": false,
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
	}
}
:3131 {
	wsgi flask_errors:app {
		dir %s
		python %s
		settings overlay
	}
}`, dir, pythonPath(), repoPath("tests", "apps"), pythonPath()))
	cmd := exec.Command(caddyBinary(t), "hearth", "check", "--config", caddyfile)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	report := string(out)
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
