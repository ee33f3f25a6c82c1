package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestSettingsAuto(t *testing.T) {
	port := freePort(t)
	config := fmt.Sprintf(`
http://localhost:%d, http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi djsettings:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		settings auto
	}
}`, port, port)
	data := t.TempDir()
	c := launchCaddyWithData(t, config, data)
	c.waitRunning()
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	var got struct {
		Debug              bool     `json:"debug"`
		KeyLength          int      `json:"key_length"`
		AllowedHosts       []string `json:"allowed_hosts"`
		CSRFTrustedOrigins []string `json:"csrf_trusted_origins"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("reply %q", body)
	}
	wantOrigins := fmt.Sprintf("http://localhost:%d,http://127.0.0.1:%d", port, port)
	if got.Debug || got.KeyLength < 50 || strings.Join(got.AllowedHosts, ",") != "localhost,127.0.0.1" || strings.Join(got.CSRFTrustedOrigins, ",") != wantOrigins {
		t.Errorf("settings auto gave %+v", got)
	}
	keyFile := filepath.Join(data, "caddy", "hearth", "secrets", "djsettings.key")
	info, err := os.Stat(keyFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info, err)
	}
	key, _ := os.ReadFile(keyFile)
	if strings.Contains(c.log.String(), strings.TrimSpace(string(key))) {
		t.Errorf("the secret key is in the log")
	}
	// a second Caddy with the same data directory uses the same key
	c.stop()
	c2 := launchCaddyWithData(t, config, data)
	c2.waitRunning()
	again, _ := os.ReadFile(keyFile)
	if string(again) != string(key) {
		t.Errorf("the key changed across restarts")
	}
}

func TestSecretKeyCommand(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		out, err := exec.Command(caddyBinary(t), "hearth", "secret-key").Output()
		if err != nil {
			t.Fatal(err)
		}
		key := strings.TrimSpace(string(out))
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{67}$`).MatchString(key) || seen[key] {
			t.Errorf("secret-key printed %q", key)
		}
		seen[key] = true
	}
}

func TestGuardReportsNetworkListeners(t *testing.T) {
	// a service listening on every interface, as PostgreSQL on 0.0.0.0:5432 would
	l, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	c := startCaddy(t, checkedSite(t, "hello:application", "{APPS}", ""))
	found := false
	for _, f := range c.mustApps()[0].Findings {
		found = found || f.ID == "HG-NET-01" && strings.Contains(f.Problem, fmt.Sprintf("0.0.0.0:%d", port)) && !f.Blocking
	}
	if !found {
		t.Errorf("the listener on 0.0.0.0:%d was not reported: %+v", port, c.mustApps()[0].Findings)
	}
}

func TestGuardSQLiteAndHosts(t *testing.T) {
	env := "env SECRET_KEY k9Vq2ZrT7mWb4NxLp8HsYc3DfGj6QaEu1RtKo5PiMnBv0XlJzSw\n\t\tenv ALLOWED_HOSTS example.net\n\t\t"
	if os.Geteuid() != 0 { // root may write anything: the unit test covers HG-DB-01 then
		dir := t.TempDir()
		db := filepath.Join(dir, "db.sqlite3")
		writeFile(t, db, "")
		os.Chmod(db, 0o444)
		log := refused(t, checkedSite(t, "djsettings:application", "{APPS}", env+"env DB_PATH "+db))
		if !strings.Contains(log, "HG-DB-01") {
			t.Errorf("read-only SQLite not refused:\n%s", tail(log, 8))
		}
	}
	// ALLOWED_HOSTS without the site's host 127.0.0.1
	log := refused(t, checkedSite(t, "djsettings:application", "{APPS}", env))
	if !strings.Contains(log, "HG-HOST-04") || !strings.Contains(log, `add \"127.0.0.1\" to ALLOWED_HOSTS`) {
		t.Errorf("ALLOWED_HOSTS missing the site's host not refused:\n%s", tail(log, 8))
	}
	startCaddy(t, checkedSite(t, "djsettings:application", "{APPS}", strings.Replace(env, "example.net", "example.net,127.0.0.1", 1)))
}

func TestGuardFindsSecretsInGit(t *testing.T) {
	dir := t.TempDir()
	key := "k9Vq2ZrT7mWb4NxLp8HsYc3DfGj6QaEu1RtKo5PiMnBv0XlJzSw"
	writeFile(t, filepath.Join(dir, "gitapp.py"), fmt.Sprintf(`
import os
os.environ.setdefault("SECRET_KEY", %q)
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
from djsettings import application
`, key))
	writeFile(t, filepath.Join(dir, ".env"), "ALLOWED_HOSTS=127.0.0.1\n")
	os.Chmod(filepath.Join(dir, ".env"), 0o600)
	for _, args := range [][]string{{"init", "-q"}, {"add", "gitapp.py", ".env"}, {"-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "app"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	log := refused(t, checkedSite(t, "gitapp:application", dir, "env_file .env\n\t\tenv PYTHONPATH {APPS}"))
	for _, want := range []string{"HG-KEY-05", "gitapp.py", "HG-FILE-02"} {
		if !strings.Contains(log, want) {
			t.Errorf("the refusal lacks %s:\n%s", want, tail(log, 10))
		}
	}
	if strings.Count(log, key) > 0 {
		t.Errorf("the key leaked into the log")
	}
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command(pythonPath(), "-m", "django", "startproject", "mysite", dir).CombinedOutput(); err != nil {
		t.Fatalf("startproject: %v\n%s", err, out)
	}
	caddyfile := filepath.Join(dir, "Caddyfile")
	writeFile(t, caddyfile, fmt.Sprintf(`
{
	admin off
}
example.net:2929 {
	wsgi mysite.wsgi:application {
		dir %s
		python %s
	}
}
:3131 {
	wsgi hello:application {
		dir %s
		python %s
	}
}`, dir, pythonPath(), repoPath("tests", "apps"), pythonPath()))
	run := func(args ...string) (int, string) {
		cmd := exec.Command(caddyBinary(t), append([]string{"hearth", "check", "--config", caddyfile}, args...)...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		code := 0
		if exit, ok := err.(*exec.ExitError); ok {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	code, out := run()
	if code != 1 {
		t.Errorf("exit code %d with blocking findings, want 1:\n%s", code, out)
	}
	for _, want := range []string{"APP", "mysite", "HG-DEBUG-01", "HG-KEY-03", "HG-HOST-04", "blocking", "hello"} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	code, out = run("--json")
	var report struct {
		Apps []struct {
			App      string `json:"app"`
			Findings []struct {
				ID string `json:"id"`
			} `json:"findings"`
		} `json:"apps"`
		ExitCode int `json:"exit_code"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil || code != 1 || report.ExitCode != 1 || len(report.Apps) != 2 {
		t.Errorf("--json: code %d, %v:\n%s", code, err, out)
	}
	// nothing was started: no worker, no listener
	if conn, err := net.Dial("tcp", "127.0.0.1:3131"); err == nil {
		conn.Close()
		t.Errorf("check started a server")
	}
	// an app that cannot be imported: exit 2
	writeFile(t, caddyfile, fmt.Sprintf(":3131 {\n\twsgi broken_import:application {\n\t\tdir %s\n\t\tpython %s\n\t}\n}\n", repoPath("tests", "apps"), pythonPath()))
	if code, out := run(); code != 2 || !strings.Contains(out, "JSONDecodeError") {
		t.Errorf("unimportable app: code %d:\n%s", code, out)
	}
	// a clean config: exit 0
	writeFile(t, caddyfile, fmt.Sprintf(":3131 {\n\twsgi hello:application {\n\t\tdir %s\n\t\tpython %s\n\t}\n}\n", repoPath("tests", "apps"), pythonPath()))
	if code, out := run(); code != 0 {
		t.Errorf("clean config: code %d:\n%s", code, out)
	}
}
