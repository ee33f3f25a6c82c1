package python

import (
	"slices"
	"strings"
	"testing"

	"github.com/hearth-dev/hearth/modules/hearth"
)

// TestDjangoDeployFindings: Django's deploy checks become findings in
// Hearth's words where Hearth knows the deployment: one HG-HTTPS-01 for
// the plain-HTTP warnings of a site without HTTPS, nothing for what Caddy
// and the guard do (HSTS, the HTTPS redirect, X-Frame-Options), a fix
// naming `settings overlay` for the cookies, and every fix actionable.
func TestDjangoDeployFindings(t *testing.T) {
	checks := func(ids ...string) []djangoCheck {
		var out []djangoCheck
		for _, id := range ids {
			level := 30
			if strings.Contains(id, ".E") {
				level = 40
			}
			out = append(out, djangoCheck{ID: id, Level: level, Msg: "Django says " + id})
		}
		return out
	}
	plain := hearth.Site{Origins: []string{"http://127.0.0.1:2929"}}
	https := hearth.Site{Hosts: []string{"example.net"}, Origins: []string{"https://example.net"}}
	both := hearth.Site{Hosts: []string{"example.net"}, Origins: []string{"https://example.net", "http://example.net"}}
	httpsWarnings := checks("security.W004", "security.W008", "security.W012", "security.W016")
	for _, tc := range []struct {
		name   string
		checks []djangoCheck
		site   hearth.Site
		hsts   int
		want   []string
		fixHas map[string]string
	}{
		{"plain HTTP: one finding", httpsWarnings, plain, 31536000, []string{"HG-HTTPS-01"},
			map[string]string{"HG-HTTPS-01": "domain name"}},
		{"port-only site: one finding", httpsWarnings, hearth.Site{}, 31536000, []string{"HG-HTTPS-01"}, nil},
		{"HTTPS with the guard's HSTS", httpsWarnings, https, 31536000,
			[]string{"HG-DJANGO-security.W012", "HG-DJANGO-security.W016"},
			map[string]string{"HG-DJANGO-security.W012": "settings overlay", "HG-DJANGO-security.W016": "settings overlay"}},
		{"HTTPS, guard HSTS off", checks("security.W004"), https, 0, []string{"HG-DJANGO-security.W004"},
			map[string]string{"HG-DJANGO-security.W004": "hsts off"}},
		{"HTTPS and plain HTTP", checks("security.W008"), both, 31536000, []string{"HG-DJANGO-security.W008"},
			map[string]string{"HG-DJANGO-security.W008": "http://example.net"}},
		{"what the guard adds", checks("security.W002", "security.W006", "security.W022", "security.W005", "security.W021"), https, 31536000, nil, nil},
		{"unknown warning", checks("security.W999"), https, 31536000, []string{"HG-DJANGO-security.W999"},
			map[string]string{"HG-DJANGO-security.W999": "docs.djangoproject.com"}},
		{"an error blocks", checks("security.E100"), https, 31536000, []string{"HG-DJANGO-security.E100"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			findings := djangoDeployFindings(tc.checks, tc.site, tc.hsts)
			if got := ids(findings); !slices.Equal(got, tc.want) {
				t.Fatalf("findings %v, want %v", got, tc.want)
			}
			for _, f := range findings {
				if f.Fix == "" || strings.HasPrefix(f.Fix, "see ") {
					t.Errorf("%s: no actionable fix: %q", f.ID, f.Fix)
				}
				if want, ok := tc.fixHas[f.ID]; ok && !strings.Contains(f.Fix, want) {
					t.Errorf("%s: the fix %q lacks %q", f.ID, f.Fix, want)
				}
				if f.Blocking != strings.Contains(f.ID, ".E") {
					t.Errorf("%s: blocking %v", f.ID, f.Blocking)
				}
			}
		})
	}
}

// TestMigrationFindings: unapplied migrations block unless before_start
// migrates; models changed without a migration warn; an unreadable state
// is said; the fixes name the app.
func TestMigrationFindings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		m        *migrationReport
		migrates bool
		want     []string
	}{
		{"no report", nil, false, nil},
		{"clean", &migrationReport{}, false, nil},
		{"unapplied", &migrationReport{Unapplied: []string{"auth.0001_initial"}, UnappliedCount: 12}, false, []string{"HG-MIGRATE-01"}},
		{"unapplied, migrate before start", &migrationReport{Unapplied: []string{"auth.0001_initial"}, UnappliedCount: 12}, true, nil},
		{"models changed", &migrationReport{ChangedApps: []string{"notes"}}, true, []string{"HG-MIGRATE-02"}},
		{"unreadable", &migrationReport{Error: "OperationalError: could not connect"}, false, []string{"HG-MIGRATE-03"}},
		// a DATABASE_URL put where a host goes: libpq quotes it whole
		{"unreadable, a password in the text", &migrationReport{Error: `OperationalError: could not translate host name "postgres://app:s3cret@db.internal/app" to address`}, false, []string{"HG-MIGRATE-03"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			findings := migrationFindings(tc.m, "mysite", tc.migrates)
			if got := ids(findings); !slices.Equal(got, tc.want) {
				t.Fatalf("findings %v, want %v", got, tc.want)
			}
			for _, f := range findings {
				if f.Blocking != (f.ID == "HG-MIGRATE-01") || !strings.Contains(f.Fix, "caddy hearth manage mysite") {
					t.Errorf("%+v", f)
				}
			}
			if tc.name == "unreadable, a password in the text" && (strings.Contains(findings[0].Problem, "s3cret") || !strings.Contains(findings[0].Problem, "db.internal")) {
				t.Errorf("the finding keeps the password or loses the host: %s", findings[0].Problem)
			}
			if tc.name == "unapplied" && !strings.Contains(findings[0].Problem, "auth.0001_initial and 11 more") {
				t.Errorf("%s", findings[0].Problem)
			}
		})
	}
}
