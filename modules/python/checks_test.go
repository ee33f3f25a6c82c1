package python

import (
	"encoding/json"
	"github.com/hearth-dev/hearth/modules/hearth"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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
		{"no csrf", `{"django": ` + strings.Replace(cleanDjango, `"csrf_middleware": true`, `"csrf_middleware": false`, 1) + `}`, []string{"HG-CSRF-01"}},
		{"csrf star", `{"django": ` + strings.Replace(cleanDjango, `["https://example.net"]`, `["*"]`, 1) + `}`, []string{"HG-CSRF-02"}},
		{"csrf subdomain wildcard is fine", `{"django": ` + strings.Replace(cleanDjango, `["https://example.net"]`, `["https://*.example.net"]`, 1) + `}`, nil},
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
			findings := reportFindings(&r, hearth.Site{})
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
		if got := ids(reportFindings(report(tc.hosts, tc.origins), https)); !slices.Equal(got, tc.want) {
			t.Errorf("hosts %s origins %s: %v, want %v", tc.hosts, tc.origins, got, tc.want)
		}
	}
}

func TestFileFindings(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, ".env")
	os.WriteFile(env, []byte("A=1\n"), 0o644)
	p := &Pool{spec: &poolSpec{EnvFile: env, Dir: dir}}
	if got := ids(p.fileFindings(hearth.Site{})); !slices.Equal(got, []string{"HG-FILE-01"}) {
		t.Errorf("0644 env_file: %v", got)
	}
	os.Chmod(env, 0o600)
	if got := ids(p.fileFindings(hearth.Site{})); got != nil {
		t.Errorf("0600 env_file: %v", got)
	}
	// served by file_server: the env_file, and the app with its .git
	os.Mkdir(filepath.Join(dir, ".git"), 0o755)
	if got := ids(p.fileFindings(hearth.Site{Roots: []string{filepath.Dir(dir)}})); !slices.Equal(got, []string{"HG-FILE-03", "HG-FILE-04"}) {
		t.Errorf("under a served root: %v", got)
	}
	if got := ids(p.fileFindings(hearth.Site{Roots: []string{filepath.Join(dir, "static")}})); got != nil {
		t.Errorf("a served root inside the app: %v", got)
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
}
