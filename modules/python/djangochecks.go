package python

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/redact"
)

// djangoCheck is one message of Django's deployment checks
// (`manage.py check --deploy`), as the runtime reports it.
type djangoCheck struct {
	ID       string `json:"id"`
	Level    int    `json:"level"`
	Msg      string `json:"msg"`
	Hint     string `json:"hint"`
	Silenced bool   `json:"silenced"`
}

// coveredDjangoChecks are Django checks that Hearth's own findings report
// more precisely, or that Caddy and the guard already take care of.
var coveredDjangoChecks = map[string]string{
	"security.W002": "the guard adds X-Frame-Options: SAMEORIGIN",
	"security.W003": "HG-CSRF-01",
	"security.W005": "HSTS is the guard's: including subdomains is a choice, not a defect",
	"security.W006": "the guard adds X-Content-Type-Options: nosniff",
	"security.W009": "HG-KEY-*",
	"security.W018": "HG-DEBUG-01",
	"security.W020": "HG-HOST-02",
	"security.W021": "HSTS preload is a choice, not a defect",
	"security.W022": "the guard adds Referrer-Policy: strict-origin-when-cross-origin",
}

// plainHTTPChecks are Django's warnings that all say one thing when the
// site is served over plain HTTP: HG-HTTPS-01 says it once.
var plainHTTPChecks = []string{"security.W004", "security.W008", "security.W012", "security.W016"}

// djangoFixes are Hearth's fixes for Django's deploy checks whose own hint
// is only a pointer to the documentation.
var djangoFixes = map[string]string{
	"security.W001": "add 'django.middleware.security.SecurityMiddleware' to MIDDLEWARE in settings.py (startproject puts it first)",
	"security.W012": "use `settings overlay` (it sets SESSION_COOKIE_SECURE = True on HTTPS sites), or set it in settings.py",
	"security.W016": "use `settings overlay` (it sets CSRF_COOKIE_SECURE = True on HTTPS sites), or set it in settings.py",
	"security.W019": "set X_FRAME_OPTIONS = 'DENY' in settings.py, unless the site frames its own pages",
}

// djangoDeployFindings turns Django's deploy checks into findings, in
// Hearth's words where Hearth knows the deployment: site is where Caddy
// serves the app, hsts the max-age of the HSTS header its guard adds (0:
// none). Django's errors block; its warnings do not.
func djangoDeployFindings(checks []djangoCheck, site hearth.Site, hsts int) []Finding {
	var out []Finding
	https := servesHTTPS(site)
	var plain []string // plain-HTTP warnings of a site without HTTPS
	for _, dc := range checks {
		if _, ok := coveredDjangoChecks[dc.ID]; ok {
			continue
		}
		if !https && slices.Contains(plainHTTPChecks, dc.ID) {
			plain = append(plain, strings.TrimPrefix(dc.ID, "security."))
			continue
		}
		fix := djangoFixes[dc.ID]
		switch dc.ID {
		case "security.W004": // no SECURE_HSTS_SECONDS, on an HTTPS site
			if hsts > 0 {
				continue // the guard adds Strict-Transport-Security
			}
			fix = "the guard's HSTS is off (`hsts off`): remove that, or set SECURE_HSTS_SECONDS in settings.py"
		case "security.W008": // no SECURE_SSL_REDIRECT, on an HTTPS site
			var httpOrigins []string
			for _, o := range site.Origins {
				if strings.HasPrefix(o, "http://") {
					httpOrigins = append(httpOrigins, o)
				}
			}
			if len(httpOrigins) == 0 {
				continue // Caddy redirects plain HTTP to HTTPS itself
			}
			fix = fmt.Sprintf("the site also answers over plain HTTP (%s): remove the http:// address from the site block and Caddy redirects it to HTTPS", strings.Join(httpOrigins, ", "))
		}
		if fix == "" {
			fix = dc.Hint
		}
		if fix == "" {
			fix = "Django documents it under " + dc.ID + " at https://docs.djangoproject.com/en/stable/ref/checks/#security"
		}
		problem := fmt.Sprintf("Django's deploy check %s: %s", dc.ID, dc.Msg)
		if dc.Silenced {
			problem += " (silenced in SILENCED_SYSTEM_CHECKS)"
		}
		out = append(out, Finding{ID: "HG-DJANGO-" + dc.ID, Blocking: dc.Level >= 40 && !dc.Silenced, Problem: problem, Fix: fix})
	}
	if len(plain) > 0 {
		slices.Sort(plain)
		out = append(out, Finding{ID: "HG-HTTPS-01",
			Problem: fmt.Sprintf("the site is served over plain HTTP: passwords, session and CSRF cookies cross the network readable (Django's deploy checks %s)", strings.Join(plain, ", ")),
			Fix: "before going online, give the site a domain name as its address (like `example.net:2929 {`, kept pointed here by `ddns`): Caddy gets it a certificate and serves HTTPS, " +
				"`settings overlay` sets the secure cookies and the guard adds HSTS; for a private network, acknowledge it with `guard enforce { allow HG-HTTPS-01 }`"})
	}
	return out
}

// migrationReport is the state of a Django project's migrations.
type migrationReport struct {
	// Unapplied names the first unapplied migrations (app.name).
	Unapplied []string `json:"unapplied"`
	// UnappliedCount counts them all.
	UnappliedCount int `json:"unapplied_count"`
	// ChangedApps have model changes without a migration.
	ChangedApps []string `json:"changed_apps"`
	// Error says why the state could not be read.
	Error string `json:"error"`
}

// migratesBeforeStart reports whether a before_start command runs
// Django's migrate.
func (a *App) migratesBeforeStart() bool {
	for _, argv := range a.spec.BeforeStart {
		if slices.Contains(argv, "migrate") {
			return true
		}
	}
	return false
}

// migrationFindings: migrations the database lacks block the app (its
// pages would fail with 500) unless before_start applies them; models
// changed without a migration are a warning.
func migrationFindings(m *migrationReport, name string, migrates bool) []Finding {
	if m == nil {
		return nil
	}
	var out []Finding
	if m.UnappliedCount > 0 && !migrates {
		listed := strings.Join(m.Unapplied, ", ")
		if m.UnappliedCount > len(m.Unapplied) {
			listed += fmt.Sprintf(" and %d more", m.UnappliedCount-len(m.Unapplied))
		}
		out = append(out, Finding{ID: "HG-MIGRATE-01", Blocking: true,
			Problem: fmt.Sprintf("%d migration(s) are not applied to the database (%s): pages that use those tables fail with 500", m.UnappliedCount, listed),
			Fix:     fmt.Sprintf("add `before_start python manage.py migrate --noinput` to the app's block (it runs before the workers start), or run `caddy hearth manage %s migrate` now", name)})
	}
	if len(m.ChangedApps) > 0 {
		out = append(out, Finding{ID: "HG-MIGRATE-02",
			Problem: fmt.Sprintf("models changed without a migration in %s: the database will not match the code", strings.Join(m.ChangedApps, ", ")),
			Fix:     fmt.Sprintf("run `caddy hearth manage %s makemigrations` where you develop, commit the new migration files, then migrate", name)})
	}
	if m.Error != "" {
		out = append(out, Finding{ID: "HG-MIGRATE-03",
			Problem: "the state of the migrations could not be read: " + redact.Text(m.Error), // the driver's text may quote a DSN with its password; the dashboard shows findings
			Fix:     "check DATABASES in the settings and that the database server is running; `caddy hearth manage " + name + " showmigrations` shows the same error"})
	}
	return out
}
