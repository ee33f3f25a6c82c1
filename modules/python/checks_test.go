package python

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/python/engine"
)

func ids(findings []Finding) []string {
	var out []string
	for _, f := range findings {
		out = append(out, f.ID)
	}
	slices.Sort(out)
	return out
}

const goodKey = `{"present": true, "length": 50, "distinct": 40, "insecure_prefix": false, "placeholder": false}`

// TestReportFindings triggers, and does not trigger, every finding the app
// report can produce.
func TestReportFindings(t *testing.T) {
	cleanDjango := `{"debug": false, "secret_key": ` + goodKey + `, "allowed_hosts": ["example.net"],
		"csrf_middleware": true, "csrf_trusted_origins": ["https://example.net"], "password_validators": 4, "debug_tooling": []}`
	for _, tc := range []struct {
		name   string
		report string
		want   []string
	}{
		{"clean django", `{"framework": "django", "django": ` + cleanDjango + `}`, nil},
		{"clean flask", `{"framework": "flask", "flask": {"debug": false, "debugger": false, "secret_key": ` + goodKey + `}}`, nil},
		{"unknown app", `{"framework": "unknown"}`, nil},
		{"env flags", `{"framework": "unknown", "env_flags": {"FLASK_DEBUG": "1", "PYTHONDEVMODE": "1"}}`, []string{"HG-ENV-01", "HG-ENV-01"}},
		{"django debug", `{"django": ` + strings.Replace(cleanDjango, `"debug": false`, `"debug": true`, 1) + `}`, []string{"HG-DEBUG-01"}},
		{"missing key", `{"django": ` + strings.Replace(cleanDjango, goodKey, `{"present": false}`, 1) + `}`, []string{"HG-KEY-01"}},
		{"short key", `{"django": ` + strings.Replace(cleanDjango, goodKey, `{"present": true, "length": 12, "distinct": 10}`, 1) + `}`, []string{"HG-KEY-02"}},
		{"low-entropy key", `{"django": ` + strings.Replace(cleanDjango, goodKey, `{"present": true, "length": 60, "distinct": 3}`, 1) + `}`, []string{"HG-KEY-02"}},
		{"insecure key", `{"django": ` + strings.Replace(cleanDjango, goodKey, `{"present": true, "length": 66, "distinct": 30, "insecure_prefix": true}`, 1) + `}`, []string{"HG-KEY-03"}},
		{"placeholder key", `{"django": ` + strings.Replace(cleanDjango, goodKey, `{"present": true, "length": 40, "distinct": 20, "placeholder": true}`, 1) + `}`, []string{"HG-KEY-04"}},
		{"wildcard host", `{"django": ` + strings.Replace(cleanDjango, `["example.net"]`, `["example.net", "*"]`, 1) + `}`, []string{"HG-HOST-01"}},
		{"no hosts", `{"django": ` + strings.Replace(cleanDjango, `["example.net"]`, `[]`, 1) + `}`, []string{"HG-HOST-02"}},
		{"tld wildcard", `{"django": ` + strings.Replace(cleanDjango, `["example.net"]`, `[".net"]`, 1) + `}`, []string{"HG-HOST-03"}},
		{"subdomain wildcard is fine", `{"django": ` + strings.Replace(cleanDjango, `["example.net"]`, `[".example.net"]`, 1) + `}`, nil},
		{"public suffix wildcard", `{"django": ` + strings.Replace(cleanDjango, `["example.net"]`, `[".co.uk"]`, 1) + `}`, []string{"HG-HOST-03"}},
		{"private public suffix wildcard", `{"django": ` + strings.Replace(cleanDjango, `["example.net"]`, `[".github.io"]`, 1) + `}`, []string{"HG-HOST-03"}},
		{"a home network's names are fine", `{"django": ` + strings.Replace(cleanDjango, `["example.net"]`, `[".home.arpa"]`, 1) + `}`, nil},
		{"wildcard under a public suffix is fine", `{"django": ` + strings.Replace(cleanDjango, `["example.net"]`, `[".example.co.uk"]`, 1) + `}`, nil},
		{"no csrf", `{"django": ` + strings.Replace(cleanDjango, `"csrf_middleware": true`, `"csrf_middleware": false`, 1) + `}`, []string{"HG-CSRF-01"}},
		{"csrf star", `{"django": ` + strings.Replace(cleanDjango, `["https://example.net"]`, `["*"]`, 1) + `}`, []string{"HG-CSRF-02"}},
		{"csrf subdomain wildcard is fine", `{"django": ` + strings.Replace(cleanDjango, `["https://example.net"]`, `["https://*.example.net"]`, 1) + `}`, nil},
		{"csrf wildcard with a port is fine", `{"django": ` + strings.Replace(cleanDjango, `["https://example.net"]`, `["https://*.example.co.uk:8443"]`, 1) + `}`, nil},
		{"csrf tld wildcard", `{"django": ` + strings.Replace(cleanDjango, `["https://example.net"]`, `["https://*.com"]`, 1) + `}`, []string{"HG-CSRF-02"}},
		{"csrf public suffix wildcard", `{"django": ` + strings.Replace(cleanDjango, `["https://example.net"]`, `["https://*.github.io"]`, 1) + `}`, []string{"HG-CSRF-02"}},
		{"no validators", `{"django": ` + strings.Replace(cleanDjango, `"password_validators": 4`, `"password_validators": 0`, 1) + `}`, []string{"HG-PASS-01"}},
		{"debug toolbar", `{"django": ` + strings.Replace(cleanDjango, `"debug_tooling": []`, `"debug_tooling": ["debug_toolbar"]`, 1) + `}`, []string{"HG-TOOL-01"}},
		{"flask debug", `{"flask": {"debug": true, "secret_key": ` + goodKey + `}}`, []string{"HG-FLASK-01"}},
		{"werkzeug debugger", `{"flask": {"debugger": true, "secret_key": ` + goodKey + `}}`, []string{"HG-FLASK-01"}},
		{"readonly sqlite", `{"django": ` + strings.Replace(cleanDjango, `"debug": false`, `"debug": false, "sqlite": [{"path": "/srv/db.sqlite3", "file_writable": false, "dir_writable": true}]`, 1) + `}`, []string{"HG-DB-01"}},
		{"readonly sqlite dir", `{"django": ` + strings.Replace(cleanDjango, `"debug": false`, `"debug": false, "sqlite": [{"path": "/srv/db.sqlite3", "file_writable": true, "dir_writable": false}]`, 1) + `}`, []string{"HG-DB-01"}},
		{"writable sqlite", `{"django": ` + strings.Replace(cleanDjango, `"debug": false`, `"debug": false, "sqlite": [{"path": "/srv/db.sqlite3", "file_writable": null, "dir_writable": true}]`, 1) + `}`, nil},
		{"key in git", `{"django": ` + strings.Replace(cleanDjango, goodKey, `{"present": true, "length": 50, "distinct": 40, "in_files": ["mysite/settings.py"]}`, 1) + `}`, []string{"HG-KEY-05"}},
		{"flask weak key", `{"flask": {"secret_key": {"present": true, "length": 3, "distinct": 3}}}`, []string{"HG-KEY-02"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r appReport
			if err := json.Unmarshal([]byte(tc.report), &r); err != nil {
				t.Fatal(err)
			}
			findings := reportFindings(&r, hearth.Site{}, guard.DefaultHSTSMaxAge)
			if got := ids(findings); !slices.Equal(got, tc.want) {
				t.Fatalf("findings %v, want %v", got, tc.want)
			}
			for _, f := range findings {
				if f.Problem == "" || f.Fix == "" {
					t.Errorf("%s lacks a problem or a fix", f.ID)
				}
			}
		})
	}
}

func TestSiteFindings(t *testing.T) {
	report := func(hosts, origins string) *appReport {
		var r appReport
		json.Unmarshal([]byte(`{"django": {"secret_key": `+goodKey+`, "allowed_hosts": `+hosts+`, "csrf_middleware": true,
			"csrf_trusted_origins": `+origins+`, "password_validators": 1}}`), &r)
		return &r
	}
	https := hearth.Site{Hosts: []string{"example.net", "www.example.net"}, Origins: []string{"https://example.net", "https://www.example.net"}}
	for _, tc := range []struct {
		hosts, origins string
		want           []string
	}{
		{`["example.net", "www.example.net"]`, `[]`, nil},
		{`[".example.net"]`, `["https://example.net"]`, nil},
		{`["example.net"]`, `[]`, []string{"HG-HOST-04"}},
		{`["example.net", "www.example.net"]`, `["http://example.net"]`, []string{"HG-CSRF-03"}},
	} {
		if got := ids(reportFindings(report(tc.hosts, tc.origins), https, guard.DefaultHSTSMaxAge)); !slices.Equal(got, tc.want) {
			t.Errorf("hosts %s origins %s: %v, want %v", tc.hosts, tc.origins, got, tc.want)
		}
	}
}

func TestFileFindings(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, ".env")
	os.WriteFile(env, []byte("A=1\n"), 0o644)
	p := &App{spec: &poolSpec{EnvFile: env, Options: engine.Options{Dir: dir}}, logger: zap.NewNop()}
	if got := ids(p.fileFindings(hearth.Site{})); !slices.Equal(got, []string{"HG-FILE-01"}) {
		t.Errorf("0644 env_file: %v", got)
	}
	os.Chmod(env, 0o600)
	if got := ids(p.fileFindings(hearth.Site{})); got != nil {
		t.Errorf("0600 env_file: %v", got)
	}
	// served by file_server: the env_file, and the app, with its .git or
	// without (deployed by rsync, an archive)
	if got := p.fileFindings(hearth.Site{Roots: []string{filepath.Dir(dir)}}); !slices.Equal(ids(got), []string{"HG-FILE-03", "HG-FILE-04"}) || slices.ContainsFunc(got, func(f Finding) bool { return f.ID == "HG-FILE-04" && f.Blocking }) {
		t.Errorf("under a served root, no .git (a warning): %+v", got)
	}
	os.Mkdir(filepath.Join(dir, ".git"), 0o755)
	if got := p.fileFindings(hearth.Site{Roots: []string{filepath.Dir(dir)}}); !slices.Equal(ids(got), []string{"HG-FILE-03", "HG-FILE-04"}) || !slices.ContainsFunc(got, func(f Finding) bool { return f.ID == "HG-FILE-04" && f.Blocking }) {
		t.Errorf("under a served root, with its .git (blocking): %+v", got)
	}
	if got := ids(p.fileFindings(hearth.Site{Roots: []string{filepath.Join(dir, "static")}})); got != nil {
		t.Errorf("a served root inside the app: %v", got)
	}
}

// TestServedDatabaseFindings: a SQLite database a file_server serves is a
// finding of its own when it is outside the app's directory (inside, the
// app directory's finding says so).
func TestServedDatabaseFindings(t *testing.T) {
	dbs := []sqliteReport{{Path: "/srv/www/data/db.sqlite3"}, {Path: "/var/lib/shop/db.sqlite3"}}
	if got := ids(servedDatabaseFindings(dbs, "/srv/shop", hearth.Site{Roots: []string{"/srv/www"}})); !slices.Equal(got, []string{"HG-FILE-05"}) {
		t.Errorf("a database in a served root: %v", got)
	}
	if got := ids(servedDatabaseFindings(dbs[:1], "/srv/www/data", hearth.Site{Roots: []string{"/srv/www"}})); got != nil {
		t.Errorf("a database inside the app's served directory (HG-FILE-04's): %v", got)
	}
	if got := ids(servedDatabaseFindings(dbs, "/srv/www/shop", hearth.Site{Roots: []string{"/srv/www"}})); !slices.Equal(got, []string{"HG-FILE-05"}) {
		t.Errorf("a database outside the app's directory, both served: %v", got)
	}
	if got := ids(servedDatabaseFindings(dbs, "/srv/shop", hearth.Site{Roots: []string{"/srv/static"}})); got != nil {
		t.Errorf("no database served: %v", got)
	}
}

// TestTrackedByGitAsTheApp: git answers as the app's account, in a
// repository that account owns (as root, git refused it: "dubious
// ownership", and a tracked env_file went unreported) or another's, and
// never runs the program the repository's config names (core.fsmonitor),
// which whoever writes that config chose.
func TestTrackedByGitAsTheApp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching to the app's account needs root")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir's own is 0700
	env := filepath.Join(dir, ".env")
	os.WriteFile(env, []byte("SECRET_KEY=x\n"), 0o600)
	// a program the repository's config names, which git runs
	marker := filepath.Join(dir, "ran-as")
	monitor := filepath.Join(dir, "monitor.sh")
	os.WriteFile(monitor, []byte("#!/bin/sh\nid -u > "+marker+"\n"), 0o755)
	for _, args := range [][]string{{"init", "-q"}, {"add", ".env"}, {"config", "core.fsmonitor", monitor}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	// the repository is the app account's (nobody's), as `caddy hearth
	// init` leaves a project it is given
	const nobody = 65534
	filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(path, nobody, nobody)
		}
		return err
	})
	app := &App{spec: &poolSpec{EnvFile: env, Options: engine.Options{Dir: dir,
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}}, logger: zap.NewNop()}
	if got := ids(app.fileFindings(hearth.Site{})); !slices.Equal(got, []string{"HG-FILE-02"}) {
		t.Errorf("a tracked env_file in the app account's repository: %v, want HG-FILE-02", got)
	}
	if uid, err := os.ReadFile(marker); err == nil {
		t.Errorf("the repository's core.fsmonitor ran (as uid %s)", uid)
	}
	// a repository another account owns (the deploy user's, here root's),
	// the app running as nobody: git still answers
	filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(path, 0, 0)
		}
		return err
	})
	if got := ids(app.fileFindings(hearth.Site{})); !slices.Equal(got, []string{"HG-FILE-02"}) {
		t.Errorf("a tracked env_file in another account's repository: %v, want HG-FILE-02", got)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the repository's core.fsmonitor ran")
	}
	// not a repository: nothing to say, nothing logged
	os.RemoveAll(filepath.Join(dir, ".git"))
	if tracked, unknown := app.trackedByGit(env); tracked || unknown != "" {
		t.Errorf("outside a repository: tracked %v, %q", tracked, unknown)
	}
}

func TestGuardModes(t *testing.T) {
	for mode, ok := range map[string]bool{"": true, "enforce": true, "warn": true, "off": true, "strict": false} {
		g := GuardConfig{Mode: mode}
		if err := g.checkMode(); (err == nil) != ok {
			t.Errorf("mode %q: %v", mode, err)
		}
	}
	if err := (&GuardConfig{Allow: []string{"DEBUG"}}).checkMode(); err == nil {
		t.Errorf("allow DEBUG accepted")
	}
	// off runs no checks and no HTTP guard: options for them would be
	// ignored, so they are refused
	for _, g := range []GuardConfig{
		{Mode: GuardOff, Allow: []string{"HG-HOST-01"}},
		{Mode: GuardOff, HTTP: &guard.Guard{Hosts: []string{"example.net"}}},
	} {
		if err := g.checkMode(); err == nil || !strings.Contains(err.Error(), "guard warn") {
			t.Errorf("guard off with options %+v: %v", g, err)
		}
	}
	if err := (&GuardConfig{Mode: GuardWarn, HTTP: &guard.Guard{Hosts: []string{"example.net"}}}).checkMode(); err != nil {
		t.Errorf("guard warn with hosts: %v", err)
	}
}

// describeSecrets runs the worker runtime's describe_secret, in a real
// interpreter, on each key.
func describeSecrets(t *testing.T, keys []string) []secretReport {
	t.Helper()
	script := "import json, sys\nfrom hearth_runtime.inspection import describe_secret\n" +
		"print(json.dumps([describe_secret(k) for k in json.load(sys.stdin)]))\n"
	cmd := exec.Command("/usr/bin/python3", "-B", "-c", script)
	cmd.Dir = "engine/runtime"
	input, _ := json.Marshal(keys)
	cmd.Stdin = strings.NewReader(string(input))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("describe_secret: %v", err)
	}
	var reports []secretReport
	if err := json.Unmarshal(out, &reports); err != nil || len(reports) != len(keys) {
		t.Fatalf("describe_secret output %.200s: %v", out, err)
	}
	return reports
}

// TestDescribeSecret judges keys written by people and keys made by
// generators, with the runtime's own code.
func TestDescribeSecret(t *testing.T) {
	generated, err := hearth.NewSecretKey()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		key         string
		placeholder bool
	}{
		{"your-secret-key-goes-here-please-change-it", true},
		{"my-production-secret-key-please-change-me-soon-2024", true},
		{"dev-key-change-in-production-do-not-use-it-in-prod", false}, // no placeholder word: HG-KEY-02/distinct judge it
		{"THIS_IS_A_TEST_KEY_FOR_THE_STAGING_SERVER_1234567", true},
		{strings.Repeat("aB3$", 12), true},
		{generated, false},
		{generated[:20] + "xxx" + generated[23:], false}, // a word by chance in a generated key
		{generated[:30] + "Test" + generated[34:], false},
		{"q8#n(v)2m!k@x4=r_p+w9&z^y7%j*c-b6h5g3f1d0s$a", false},
		{"django-insecure-q8#n(v)2m!k@x4=r_p+w9&z^y7%j*c-b6h5g", false}, // HG-KEY-03 judges it
	}
	keys := make([]string, len(cases))
	for i, c := range cases {
		keys[i] = c.key
	}
	for i, r := range describeSecrets(t, keys) {
		if r.Placeholder != cases[i].placeholder {
			t.Errorf("%q: placeholder %v, want %v", cases[i].key, r.Placeholder, cases[i].placeholder)
		}
	}
}

// TestGeneratedKeysPass: keys from `caddy hearth secret-key` (and so
// `settings auto`) are never judged placeholders. Before this held, about one
// key in 300 held a placeholder word by chance and the guard refused it.
func TestGeneratedKeysPass(t *testing.T) {
	keys := make([]string, 20000)
	for i := range keys {
		var err error
		if keys[i], err = hearth.NewSecretKey(); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range describeSecrets(t, keys) {
		if r.Placeholder || r.Length < 32 || r.Distinct < 10 || r.InsecurePrefix {
			t.Fatalf("generated key %d judged weak: %+v", i, r)
		}
	}
}

// TestAppHostsFromReport: the hosts the guard holds a site without
// `hosts` to are Django's ALLOWED_HOSTS (its DEBUG default when empty),
// else what `settings auto` gave the app; "*" or nothing known: no check.
func TestAppHostsFromReport(t *testing.T) {
	django := func(debug bool, hosts ...string) *appReport {
		r := &appReport{Framework: "django"}
		r.Django = &djangoReport{Debug: debug, AllowedHosts: hosts}
		return r
	}
	for _, tc := range []struct {
		name   string
		report *appReport
		auto   []string
		allows map[string]bool // nil: no check at all
	}{
		{"django list", django(false, "localhost"), []string{"ignored.example"}, map[string]bool{"localhost:80": true, "ignored.example": false}},
		{"django star", django(false, "*"), nil, nil},
		{"django empty, debug", django(true), nil, map[string]bool{"localhost": true, "a.localhost": true, "127.0.0.1:8000": true, "[::1]": true, "evil.example": false}},
		{"django empty", django(false), nil, map[string]bool{"localhost": false}},
		{"flask with settings auto", &appReport{Framework: "flask"}, []string{"localhost", "127.0.0.1"}, map[string]bool{"127.0.0.1:2929": true, "evil.example": false}},
		{"flask", &appReport{Framework: "flask"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := tc.report.appHosts(tc.auto)
			if (hosts == nil) != (tc.allows == nil) {
				t.Fatalf("hosts %v, want a check: %v", hosts, tc.allows != nil)
			}
			for host, want := range tc.allows {
				if got := hosts.Allows(host); got != want {
					t.Errorf("Allows(%q) = %v, want %v", host, got, want)
				}
			}
		})
	}
}
