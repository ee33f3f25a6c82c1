package tests

import (
	"crypto/sha256"
	"encoding/hex"
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
	t.Parallel()
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
	keyFiles, _ := filepath.Glob(filepath.Join(data, "caddy", "hearth", "secrets", "djsettings-*.key"))
	if len(keyFiles) != 1 {
		t.Fatalf("key files: %v", keyFiles)
	}
	keyFile := keyFiles[0]
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	run := func(args ...string) (int, string) { return checkConfig(t, caddyfile, "", args...) }
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

// checkConfig runs `caddy hearth check` on caddyfile in dir ("": here),
// importing the apps as asAppUser says, and returns its exit code and
// output.
func checkConfig(t *testing.T, caddyfile, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(caddyBinary(t), append(append([]string{"hearth", "check", "--config", caddyfile}, asAppUser()...), args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestCheckSeesServedRoots: `caddy hearth check` reports an env_file
// inside a directory file_server serves (HG-FILE-03), as a load does:
// with a root for /static/* only, file_server serves the working
// directory for the other paths.
func TestCheckSeesServedRoots(t *testing.T) {
	t.Parallel()
	envDir := t.TempDir()
	envFile := filepath.Join(envDir, ".env")
	if err := os.WriteFile(envFile, []byte("GREETING=hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	static := t.TempDir()
	run := func(fileServer string, args ...string) (int, string) {
		writeFile(t, caddyfile, fmt.Sprintf("{\n\tadmin off\n}\n:3131 {\n\troot /static/* %s\n\t%s\n\twsgi hello:application {\n\t\tdir %s\n\t\tpython %s\n\t\tenv_file %s\n\t}\n}\n",
			static, fileServer, repoPath("tests", "apps"), pythonPath(), envFile))
		return checkConfig(t, caddyfile, envDir, args...) // where Caddy started here would serve from
	}
	if code, out := run("file_server"); code != 1 || !strings.Contains(out, "HG-FILE-03") {
		t.Errorf("env_file in the working directory, which file_server serves outside /static/: exit %d\n%s\nwant exit 1 with HG-FILE-03", code, out)
	}
	_, out := run("file_server", "--json")
	var report struct{ Notes []string }
	if err := json.Unmarshal([]byte(out), &report); err != nil || len(report.Notes) != 1 || !strings.Contains(report.Notes[0], "took it as "+envDir+",") {
		t.Errorf("--json: %v\n%s\nwant a note naming the directory taken as Caddy's", err, out)
	}
	if code, out := run("file_server /static/*"); code != 0 || strings.Contains(out, "HG-FILE-03") {
		t.Errorf("file_server only where its root is set: exit %d\n%s\nwant a clean report", code, out)
	}
}

// keyApp writes app.py (default name "app") into a new directory: it
// answers a hash of its SECRET_KEY.
func keyApp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "app.py"), `import hashlib, os

def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [hashlib.sha256(os.environ.get('SECRET_KEY', '').encode()).hexdigest().encode()]
`)
	return dir
}

// keySite is a site serving the keyApp in dir with `settings auto`.
func keySite(port int, dir, options string) string {
	return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi app:app {
		dir %s
		python {PYTHON}
		workers 1
		settings auto
		guard warn
		%s
	}
}`, port, dir, options)
}

// TestSettingsAutoKeyPerAppIdentity: the key of `settings auto` belongs
// to the app's name and directory. Two apps of one name in different
// directories in one config are refused, by `caddy run` and by
// `caddy validate`, naming both directories and the fix; run one after
// the other they get different keys; a key stored by name alone (earlier
// versions) stays with the first app of that name, and only with it.
func TestSettingsAutoKeyPerAppIdentity(t *testing.T) {
	t.Parallel()
	dirA, dirB := keyApp(t), keyApp(t)
	portA, portB := freePort(t), freePort(t)
	both := keySite(portA, dirA, "") + keySite(portB, dirB, "")
	wants := []string{"two apps are named", dirA, dirB, "`name <another>`"}
	log := refused(t, both)
	for _, want := range wants {
		if !strings.Contains(log, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, tail(log, 5))
		}
	}
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, caddyfile, strings.ReplaceAll(both, "{PYTHON}", pythonPath()))
	validate := exec.Command(caddyBinary(t), "validate", "--config", caddyfile, "--adapter", "caddyfile")
	validate.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir())
	out, err := validate.CombinedOutput()
	if err == nil {
		t.Errorf("caddy validate accepted two apps named app")
	}
	for _, want := range wants {
		if !strings.Contains(string(out), want) {
			t.Errorf("caddy validate's refusal lacks %q:\n%s", want, tail(string(out), 5))
		}
	}

	// run alone, one after the other, with one data directory
	data := t.TempDir()
	keyOf := func(config string, ports ...int) []string {
		c := launchCaddyWithData(t, config, data)
		c.waitRunning()
		var hashes []string
		for _, port := range ports {
			_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
			hashes = append(hashes, body)
		}
		c.stop()
		return hashes
	}
	a := keyOf(keySite(portA, dirA, ""), portA)[0]
	b := keyOf(keySite(portB, dirB, ""), portB)[0]
	if a == b {
		t.Errorf("two apps named app in different directories got the same key")
	}
	if again := keyOf(keySite(portA, dirA, ""), portA)[0]; again != a {
		t.Errorf("the key of app in %s changed across restarts", dirA)
	}
	// the fix the refusal gives: a name
	named := keyOf(keySite(portA, dirA, "")+keySite(portB, dirB, "name b"), portA, portB)
	if named[0] != a || named[1] == a || named[1] == b {
		t.Errorf("with a name for the second app: keys %v, want %s and a new one", named, a)
	}
	secrets, _ := filepath.Glob(filepath.Join(data, "caddy", "hearth", "secrets", "*.key"))
	if len(secrets) != 3 {
		t.Errorf("key files %v, want one per app identity (3)", secrets)
	}

	// a key stored by name alone, as earlier versions did
	data = t.TempDir()
	legacy := "a-key-stored-by-an-earlier-version-0123456789abcdef0123456789"
	if err := os.MkdirAll(filepath.Join(data, "caddy", "hearth", "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "caddy", "hearth", "secrets", "app.key"), []byte(legacy+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(legacy))
	if got := keyOf(keySite(portA, dirA, ""), portA)[0]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("the app did not keep the key stored under its name")
	}
	if got := keyOf(keySite(portB, dirB, ""), portB)[0]; got == hex.EncodeToString(sum[:]) {
		t.Errorf("another app of the same name in another directory got the stored key too")
	}
	if got := keyOf(keySite(portA, dirA, ""), portA)[0]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("the app lost the key it took over")
	}
}

// TestEnvFileErrorShowsLineNotValue: an env_file line that does not parse
// is reported as file:line with the variable's name, never with the
// value, in Caddy's log and in the admin API's answer to a reload.
func TestEnvFileErrorShowsLineNotValue(t *testing.T) {
	t.Parallel()
	const secret = "sk_live_51Hx9f8e7d6c5b4a3f2e1d0c"
	for _, tc := range []struct {
		name, env string
		line      int
		want      []string
	}{
		{"an unterminated quote", "DEBUG=False\nSECRET_KEY=\"" + secret + "\n", 2, []string{"SECRET_KEY", "unterminated double quote"}},
		{"a value without its name", "DEBUG=False\n# the key\n" + secret + "\n", 3, []string{"expected KEY=value, and the line has no"}},
		{"a space in the name", "STRIPE KEY=" + secret + "\n", 1, []string{"a space at column 7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := keyApp(t)
			envFile := filepath.Join(dir, ".env")
			if err := os.WriteFile(envFile, []byte(tc.env), 0o600); err != nil {
				t.Fatal(err)
			}
			site := fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi app:app {
		dir %s
		python {PYTHON}
		env_file .env
	}
}`, freePort(t), dir)
			log := refused(t, site)
			// and through the admin API, into a running Caddy
			c := startCaddy(t, keySite(freePort(t), keyApp(t), ""))
			code, body := c.load(site)
			if code == 200 {
				t.Errorf("the reload was accepted")
			}
			for what, text := range map[string]string{"the log": log, "the reload's answer": body, "the running Caddy's log": c.log.String()} {
				for _, want := range append([]string{fmt.Sprintf("%s:%d: ", envFile, tc.line)}, tc.want...) {
					if what != "the running Caddy's log" && !strings.Contains(text, want) {
						t.Errorf("%s lacks %q:\n%s", what, want, tail(text, 3))
					}
				}
				for i := 0; i+6 <= len(secret); i++ {
					if strings.Contains(text, secret[i:i+6]) {
						t.Fatalf("%s shows part of the value (%q):\n%s", what, secret[i:i+6], tail(text, 3))
					}
				}
			}
		})
	}
}

// TestSecretKeyInSharedStorage: `settings auto` keeps the app's key in
// Caddy's storage. Two Caddy processes (their own data directories, as on
// two machines) that share a storage give the app the same key; a key an
// earlier run kept in this machine's data directory moves into the shared
// storage the first time it is used, never generated anew.
func TestSecretKeyInSharedStorage(t *testing.T) {
	t.Parallel()
	dir := keyApp(t)
	shared := t.TempDir()
	withStorage := func(port int, storage string) string {
		return "{\n\tadmin {ADMIN}\n\tstorage file_system " + storage + "\n}\n" + keySite(port, dir, "")
	}
	hashOf := func(c *caddyProc, port int) string {
		c.waitRunning()
		_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
		if len(body) != 64 {
			t.Fatalf("the app answered %q", body)
		}
		return body
	}
	portA, portB := freePort(t), freePort(t)
	a := launchCaddyWithData(t, withStorage(portA, shared), t.TempDir())
	keyA := hashOf(a, portA)
	b := launchCaddyWithData(t, withStorage(portB, shared), t.TempDir())
	if keyB := hashOf(b, portB); keyB != keyA {
		t.Errorf("two instances sharing a storage gave the app different keys")
	}
	a.stop()
	b.stop()
	if _, err := os.Stat(filepath.Join(shared, "hearth", "secrets")); err != nil {
		t.Errorf("the key is not in the shared storage: %v", err)
	}

	// an earlier run's key, in this machine's data directory, is moved
	data, moved := t.TempDir(), t.TempDir()
	port := freePort(t)
	c := launchCaddyWithData(t, keySite(port, dir, ""), data)
	before := hashOf(c, port)
	c.stop()
	local, _ := filepath.Glob(filepath.Join(data, "caddy", "hearth", "secrets", "app-*.key"))
	if len(local) != 1 {
		t.Fatalf("the first run kept its key in %v", local)
	}
	c = launchCaddyWithData(t, withStorage(port, moved), data)
	if after := hashOf(c, port); after != before {
		t.Errorf("the key changed when the storage did: it must be moved, never generated anew")
	}
	c.stop()
	if _, err := os.Stat(local[0]); !os.IsNotExist(err) {
		t.Errorf("the local copy of the key is still there (%v): one copy of a secret", err)
	}
	if stored, _ := filepath.Glob(filepath.Join(moved, "hearth", "secrets", "app-*.key")); len(stored) != 1 {
		t.Errorf("the key is not in the new storage: %v", stored)
	}
}

// TestCommandsUseTheConfigStorage: with a config's `storage`, the secret
// key `settings auto` gives the running app is the one `caddy hearth exec`
// (and manage, and check) give the command: read from that storage, not
// from the data directory of whoever runs the command.
func TestCommandsUseTheConfigStorage(t *testing.T) {
	t.Parallel()
	dir, port := keyApp(t), freePort(t)
	shared := t.TempDir()
	config := "{\n\tadmin {ADMIN}\n\tstorage file_system " + shared + "\n}\n" + keySite(port, dir, "")
	c := launchCaddyWithData(t, config, t.TempDir())
	c.waitRunning()
	_, served := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, caddyfile, caddyfileVars(c).Replace(config))
	code, out := hearthCLI(t, filepath.Dir(caddyfile), t.TempDir(), "exec", "app", "--", "python", "-c",
		"import hashlib, os; print(hashlib.sha256(os.environ['SECRET_KEY'].encode()).hexdigest())")
	if code != 0 || strings.TrimSpace(out) != served {
		t.Errorf("exec's SECRET_KEY hashes to %q (exit %d), the running app's to %q", strings.TrimSpace(out), code, served)
	}
}
