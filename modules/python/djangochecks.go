package python

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hearth-dev/hearth/modules/hearth"
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
