package python

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/publicsuffix"

	"github.com/hearth-dev/hearth/modules/guard"
	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/textcut"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// Guard modes of the pre-launch checks.
const (
	GuardEnforce = "enforce" // blocking findings refuse the config
	GuardWarn    = "warn"    // findings are logged, the app starts
	GuardOff     = "off"     // no checks, no HTTP guard
)

// GuardConfig configures an app's pre-launch checks and its HTTP guard.
type GuardConfig struct {
	// Mode is enforce (blocking findings refuse the config load), warn
	// (findings are logged at WARN and the app starts) or off (no checks and
	// no HTTP guard). Default: enforce.
	Mode string `json:"mode,omitempty"`

	// Allow acknowledges findings by id (such as "HG-HOST-01"): they are
	// logged but never block.
	Allow []string `json:"allow,omitempty"`

	// HTTP configures the HTTP guard that wraps the app's handler when
	// Mode is not off (see the guard handler: hosts, refuse, …).
	HTTP *guard.Guard `json:"http,omitempty"`
}

// checkMode validates the mode and allow list and applies the default.
func (g *GuardConfig) checkMode() error {
	switch g.Mode {
	case "":
		g.Mode = GuardEnforce
	case GuardEnforce, GuardWarn, GuardOff:
	default:
		return fmt.Errorf("guard mode %q is not one of enforce, warn, off", g.Mode)
	}
	for _, id := range g.Allow {
		if !strings.HasPrefix(id, "HG-") {
			return fmt.Errorf("guard allow %q is not a finding id (they look like HG-HOST-01; see the README)", id)
		}
	}
	if g.Mode == GuardOff && (len(g.Allow) > 0 || g.HTTP != nil) {
		// off runs neither the checks allow speaks to nor the HTTP guard
		// the other options configure: they would do nothing, silently
		return fmt.Errorf("guard is off (set here or by the hearth global option's `guard off`), which runs no checks and no HTTP guard, so its options (allow, hosts, refuse, …) would do nothing: remove them, or use `guard warn` to keep the HTTP guard and only log the findings")
	}
	return nil
}

// Finding is one problem found before launch.
type Finding struct {
	// ID is stable and documented; Allow takes it.
	ID string `json:"id"`
	// Blocking findings refuse the config in enforce mode.
	Blocking bool `json:"blocking"`
	// Problem says what is wrong; it never contains a secret.
	Problem string `json:"problem"`
	// Fix says exactly what to do.
	Fix string `json:"fix"`
}

func (f Finding) String() string {
	return fmt.Sprintf("%s %s; fix: %s", f.ID, f.Problem, f.Fix)
}

// appReport is what the worker runtime reports in inspect mode.
type appReport struct {
	Framework string            `json:"framework"`
	EnvFlags  map[string]string `json:"env_flags"`
	Django    *djangoReport     `json:"django"`
	Overlay   *overlayReport    `json:"overlay"`
	Flask     *struct {
		Debug     bool         `json:"debug"`
		Debugger  bool         `json:"debugger"`
		SecretKey secretReport `json:"secret_key"`
	} `json:"flask"`
}

// overlayReport is what `settings overlay` set over the project's
// settings module (the secret key as "(hidden)").
type overlayReport struct {
	Module  string         `json:"module"`
	Applied map[string]any `json:"applied"`
}

// sqliteReport is what the runtime reports of a SQLite database.
type sqliteReport struct {
	Path         string `json:"path"`
	FileWritable *bool  `json:"file_writable"`
	DirWritable  bool   `json:"dir_writable"`
}

// djangoReport is what the runtime reports of a Django project.
type djangoReport struct {
	DeployChecks       []djangoCheck    `json:"deploy_checks"`
	Migrations         *migrationReport `json:"migrations"`
	SQLite             []sqliteReport   `json:"sqlite"`
	Debug              bool             `json:"debug"`
	SecretKey          secretReport     `json:"secret_key"`
	AllowedHosts       []string         `json:"allowed_hosts"`
	CSRFMiddleware     bool             `json:"csrf_middleware"`
	CSRFTrustedOrigins []string         `json:"csrf_trusted_origins"`
	PasswordValidators int              `json:"password_validators"`
	DebugTooling       []string         `json:"debug_tooling"`
	// ProjectSecretKey is, under `settings overlay`, settings.py's own
	// key when other settings hold a copy of it (nil: none do).
	ProjectSecretKey *projectKeyReport `json:"project_secret_key"`
}

// projectKeyReport describes settings.py's own SECRET_KEY, which the
// overlay replaced, and the settings that still hold a copy of it.
type projectKeyReport struct {
	secretReport
	CopiedTo []string `json:"copied_to"`
}

// secretReport describes a secret key without revealing it.
type secretReport struct {
	InFiles        []string `json:"in_files"`
	Present        bool     `json:"present"`
	Length         int      `json:"length"`
	Distinct       int      `json:"distinct"`
	InsecurePrefix bool     `json:"insecure_prefix"`
	Placeholder    bool     `json:"placeholder"`
}

// inspectApp imports the app in its real environment (interpreter, venv,
// env, dir) with the runtime in inspect mode and returns its report.
func (a *App) inspectApp() (*appReport, error) {
	payload, err := a.pool.Inspect(a.appEnv())
	if err != nil {
		return nil, err
	}
	var report appReport
	if err := json.Unmarshal(payload, &report); err != nil {
		return nil, fmt.Errorf("checking the app: malformed report: %w", err)
	}
	return &report, nil
}

// runGuardChecks runs the pre-launch checks and, in enforce mode, refuses
// the app when a blocking finding is not allowed.
func (a *App) runGuardChecks() error {
	if a.spec.GuardMode == GuardOff {
		return nil
	}
	findings, err := a.collectFindings()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.findings = findings
	a.mu.Unlock()
	var blocking []string
	for _, f := range findings {
		if a.blocks(f) {
			blocking = append(blocking, "  "+f.String())
			continue
		}
		a.logger.Warn("guard finding", zap.String("id", f.ID), zap.String("problem", f.Problem),
			zap.String("fix", f.Fix), zap.Bool("allowed", slices.Contains(a.spec.GuardAllow, f.ID)))
	}
	if len(blocking) > 0 {
		return fmt.Errorf("guard refused to start app %s (guard enforce):\n%s\nfix them, or acknowledge one with `guard enforce { allow <id> }` in its wsgi block",
			a.spec.Name, strings.Join(blocking, "\n"))
	}
	return nil
}

// blocks reports whether f refuses the app under the pool's guard settings.
func (a *App) blocks(f Finding) bool {
	return f.Blocking && a.spec.GuardMode == GuardEnforce && !slices.Contains(a.spec.GuardAllow, f.ID)
}

// collectFindings inspects the app and its surroundings.
func (a *App) collectFindings() ([]Finding, error) {
	report, err := a.inspectApp()
	if err != nil {
		return nil, err
	}
	a.appHosts.Store(report.appHosts(a.autoHosts))
	a.mu.Lock()
	site := a.site
	a.overlay = report.Overlay
	a.mu.Unlock()
	findings := append(a.fileFindings(site), reportFindings(report, site, a.spec.HSTSMaxAge)...)
	if report.Django != nil {
		findings = append(findings, migrationFindings(report.Django.Migrations, a.spec.Name, a.migratesBeforeStart())...)
		findings = append(findings, servedDatabaseFindings(report.Django.SQLite, a.spec.Dir, site)...)
	}
	if a.spec.Settings == SettingsOverlay && report.Framework != "django" {
		findings = append(findings, Finding{ID: "HG-SET-01", Problem: fmt.Sprintf("`settings overlay` sets Django's settings, but this app is %s: it gets nothing from it", frameworkName(report.Framework)),
			Fix: "use `settings auto` and read SECRET_KEY, DEBUG and ALLOWED_HOSTS from os.environ in the app"})
	}
	findings = append(findings, a.adminEndpointFindings()...)
	listen, adminOn := hearth.AdminEndpoint()
	return append(findings, networkFindings(site.ServerPorts, listen, adminOn)...), nil
}

// reportFindings turns the app's report into findings; site is where
// Caddy serves the app, hsts the max-age of the HSTS its guard adds (0:
// none).
func reportFindings(r *appReport, site hearth.Site, hsts int) []Finding {
	var out []Finding
	add := func(id string, blocking bool, problem, fix string) {
		out = append(out, Finding{ID: id, Blocking: blocking, Problem: problem, Fix: fix})
	}
	for _, flag := range sortedKeys(r.EnvFlags) {
		add("HG-ENV-01", true, fmt.Sprintf("the environment sets %s=%s, a development flag", flag, r.EnvFlags[flag]),
			fmt.Sprintf("remove %s from the app's env and env_file", flag))
	}
	if d := r.Django; d != nil {
		if d.Debug {
			add("HG-DEBUG-01", true, "Django runs with DEBUG = True: error pages show settings and code to anyone",
				"set DEBUG = False in production, e.g. `DEBUG = os.environ.get(\"DJANGO_DEBUG\") == \"1\"` in settings.py")
		}
		out = append(out, keyFindings("SECRET_KEY", "Django", d.SecretKey)...)
		if p := d.ProjectSecretKey; p != nil && len(p.CopiedTo) > 0 {
			if weak := keyFindings("SECRET_KEY", "settings.py's own", p.secretReport); len(weak) > 0 {
				verb := "holds"
				if len(p.CopiedTo) > 1 {
					verb = "hold"
				}
				add("HG-KEY-06", true, fmt.Sprintf("%s %s a copy of settings.py's own SECRET_KEY, made when settings.py was imported: `settings overlay` replaced the key in SECRET_KEY only, and that one is not fit to sign with (%s)", strings.Join(p.CopiedTo, ", "), verb, weak[0].Problem),
					"in settings.py, take them from the key at its source (os.environ, the same variable SECRET_KEY reads) rather than from a key written in the file, or give each its own key from the environment; then replace that key wherever it signed tokens")
			}
		}
		hostFindings(d.AllowedHosts, site.Hosts, add)
		if !d.CSRFMiddleware {
			add("HG-CSRF-01", true, "django.middleware.csrf.CsrfViewMiddleware is not in MIDDLEWARE: forms can be forged from other sites",
				"add 'django.middleware.csrf.CsrfViewMiddleware' to MIDDLEWARE")
		}
		for _, origin := range d.CSRFTrustedOrigins {
			_, afterWildcard, subdomains := strings.Cut(origin, "://*.")
			switch {
			case strings.Contains(origin, "*") && !subdomains || origin == "*":
				add("HG-CSRF-02", true, fmt.Sprintf("CSRF_TRUSTED_ORIGINS contains %q: any site may post forms", origin),
					"list the exact origins, like https://example.net")
			case subdomains && wholeSuffix(afterWildcard):
				// Django trusts every origin ending in what follows the *
				add("HG-CSRF-02", true, fmt.Sprintf("CSRF_TRUSTED_ORIGINS contains %q: every site under a public suffix, anyone's, may post forms", origin),
					"list the exact origins, like https://example.net, or a wildcard under your own domain, like https://*.example.net")
			}
			if strings.HasPrefix(origin, "http://") && servesHTTPS(site) {
				add("HG-CSRF-03", true, fmt.Sprintf("CSRF_TRUSTED_ORIGINS contains %q, a plain-HTTP origin, for a site served over HTTPS", origin),
					"use the https:// origins of the site")
			}
		}
		out = append(out, djangoDeployFindings(d.DeployChecks, site, hsts)...)
		for _, db := range d.SQLite {
			if db.FileWritable != nil && !*db.FileWritable || !db.DirWritable {
				add("HG-DB-01", true, fmt.Sprintf("the SQLite database %s (or its directory, for the journal) is not writable by the worker user: writes fail with \"attempt to write a readonly database\"", db.Path),
					fmt.Sprintf("give the worker user write access to %s and to its directory", db.Path))
			}
		}
		if d.PasswordValidators == 0 {
			add("HG-PASS-01", false, "AUTH_PASSWORD_VALIDATORS is empty: any password is accepted",
				"keep the validators `startproject` writes in settings.py")
		}
		for _, app := range d.DebugTooling {
			add("HG-TOOL-01", true, fmt.Sprintf("%s is in INSTALLED_APPS: a development tool that exposes internals", app),
				fmt.Sprintf("remove %s from INSTALLED_APPS in production", app))
		}
	}
	if f := r.Flask; f != nil {
		if f.Debug || f.Debugger {
			add("HG-FLASK-01", true, "Flask runs in debug mode (the Werkzeug debugger lets anyone run code)",
				"do not set app.debug or FLASK_DEBUG, and do not wrap the app in DebuggedApplication")
		}
		out = append(out, keyFindings("SECRET_KEY", "Flask", f.SecretKey)...)
	}
	return out
}

// keyFindings judges a secret key from its description.
func keyFindings(name, framework string, k secretReport) []Finding {
	fix := fmt.Sprintf("set %s from the environment (an env_file, mode 0600) to a fresh random value; generate one with `caddy hearth secret-key`, or use `settings auto`", name)
	if len(k.InFiles) > 0 {
		return []Finding{{ID: "HG-KEY-05", Blocking: true, Problem: fmt.Sprintf("%s %s is written in files tracked by git: %s", framework, name, strings.Join(k.InFiles, ", ")),
			Fix: "remove it from those files, read it from the environment, and replace it (it is in your history): " + fix}}
	}
	switch {
	case !k.Present && framework == "Flask":
		// without a key Flask refuses to use sessions (an error, not a
		// forgery): an app that keeps no session needs none
		return []Finding{{ID: "HG-KEY-01", Blocking: false, Problem: "Flask SECRET_KEY is not set: sessions and logins fail with an error until it is", Fix: fix}}
	case !k.Present:
		return []Finding{{ID: "HG-KEY-01", Blocking: true, Problem: fmt.Sprintf("%s %s is missing or empty", framework, name), Fix: fix}}
	case k.InsecurePrefix:
		return []Finding{{ID: "HG-KEY-03", Blocking: true, Problem: fmt.Sprintf("%s is the django-insecure- key that startproject wrote (it is in your repository)", name), Fix: fix}}
	case k.Length < 32 || k.Distinct < 10:
		return []Finding{{ID: "HG-KEY-02", Blocking: true, Problem: fmt.Sprintf("%s %s is weak (%d characters, %d distinct; want at least 32 and 10)", framework, name, k.Length, k.Distinct), Fix: fix}}
	case k.Placeholder:
		return []Finding{{ID: "HG-KEY-04", Blocking: true, Problem: fmt.Sprintf("%s %s looks like a placeholder (a repeated chunk or words like secret, changeme, example)", framework, name), Fix: fix}}
	}
	return nil
}

// wholeSuffix reports whether host (a port after it ignored) is a public
// suffix (a top-level domain, or one under which anyone may register a
// name: co.uk, github.io) rather than a domain of someone's: a wildcard
// over it takes in everyone's sites.
func wholeSuffix(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || !strings.Contains(host, ".") {
		return true
	}
	if host == "home.arpa" {
		return false // a home network's own names (RFC 8375), no one else's
	}
	suffix, _ := publicsuffix.PublicSuffix(host)
	return suffix == host
}

// hostFindings judges Django's ALLOWED_HOSTS, also against the hosts the
// Caddy site serves.
func hostFindings(hosts, siteHosts []string, add func(id string, blocking bool, problem, fix string)) {
	const fix = "list the site's host names in ALLOWED_HOSTS, like ['example.net', 'www.example.net']"
	if len(hosts) == 0 {
		add("HG-HOST-02", true, "ALLOWED_HOSTS is empty: with DEBUG off Django answers every request with 400", fix)
	}
	for _, h := range hosts {
		switch {
		case h == "*":
			add("HG-HOST-01", true, "ALLOWED_HOSTS contains '*': Host-header attacks (poisoned password-reset links) are possible", fix)
		case strings.HasPrefix(h, ".") && wholeSuffix(h[1:]):
			add("HG-HOST-03", true, fmt.Sprintf("ALLOWED_HOSTS contains %q, a whole public suffix (a top-level domain, or one under which anyone registers names, like .co.uk or .github.io)", h), fix)
		}
	}
	for _, site := range siteHosts {
		if !strings.Contains(site, "*") && !djangoAllows(hosts, site) {
			add("HG-HOST-04", true, fmt.Sprintf("ALLOWED_HOSTS does not allow %s, a host the Caddy site serves: Django answers it with 400", site),
				fmt.Sprintf("add %q to ALLOWED_HOSTS", site))
		}
	}
}

// djangoAllows matches a host as Django's ALLOWED_HOSTS does.
func djangoAllows(allowed []string, host string) bool {
	hosts := guard.NewAppHosts(allowed, "ALLOWED_HOSTS")
	return hosts == nil || hosts.Allows(host)
}

// appHosts are the hosts the app allows, for the HTTP guard of a site
// without `hosts`: Django's ALLOWED_HOSTS as the app read it (with
// Django's own default under DEBUG when it is empty), or for another
// framework the ALLOWED_HOSTS `settings auto` gave it (auto). Nil: any
// host (unknown, or "*").
func (r *appReport) appHosts(auto []string) *guard.AppHosts {
	if d := r.Django; d != nil {
		hosts := d.AllowedHosts
		if len(hosts) == 0 && d.Debug {
			hosts = []string{".localhost", "127.0.0.1", "[::1]"}
		}
		return guard.NewAppHosts(hosts, "ALLOWED_HOSTS")
	}
	if len(auto) > 0 {
		return guard.NewAppHosts(auto, "the ALLOWED_HOSTS of `settings auto`")
	}
	return nil
}

// frameworkName is how findings name the framework the runtime found.
func frameworkName(framework string) string {
	switch framework {
	case "flask":
		return "a Flask app"
	case "django":
		return "a Django project"
	}
	return "not a Django project"
}

// servesHTTPS reports whether the site has an HTTPS origin.
func servesHTTPS(site hearth.Site) bool {
	for _, o := range site.Origins {
		if strings.HasPrefix(o, "https://") {
			return true
		}
	}
	return false
}

// servedDatabaseFindings reports the SQLite databases a file_server serves
// outside the app's directory (inside it, HG-FILE-04 says so already).
func servedDatabaseFindings(dbs []sqliteReport, dir string, site hearth.Site) []Finding {
	var out []Finding
	for _, db := range dbs {
		if root := hearth.ServedRootOf(db.Path, site.Roots); root != "" && hearth.ServedRootOf(db.Path, []string{dir}) == "" {
			out = append(out, Finding{ID: "HG-FILE-05", Blocking: true,
				Problem: fmt.Sprintf("the SQLite database %s is inside %s, which file_server serves: anyone can download it, password hashes and sessions included", db.Path, root),
				Fix:     "move the database out of every directory Caddy serves (and set DATABASES to its new path)"})
		}
	}
	return out
}

// fileFindings checks the files around the app.
func (a *App) fileFindings(site hearth.Site) []Finding {
	var out []Finding
	if root := hearth.ServedRootOf(a.spec.Dir, site.Roots); root != "" {
		// with or without a .git: the settings, the .env a library reads,
		// the database are in it (deployed by rsync or an archive too)
		// blocking with its .git (its history holds every secret ever
		// committed); without, a warning: the served roots are read
		// without the routes' path matchers, so a site that serves only
		// /static/* of the app's directory is reported too
		what := "its code, settings and whatever else it keeps there (a .env, a database), unless the route that serves it takes only some paths"
		_, err := os.Stat(filepath.Join(a.spec.Dir, ".git"))
		if err == nil {
			what = "its code and history (.git), settings and whatever else it keeps there"
		}
		out = append(out, Finding{ID: "HG-FILE-04", Blocking: err == nil,
			Problem: fmt.Sprintf("the app directory %s is inside %s, which file_server serves: %s can be downloaded", a.spec.Dir, root, what),
			Fix:     "serve only a directory of collected static files (like Django's STATIC_ROOT), outside the app directory"})
	}
	path := a.spec.EnvFile
	if path == "" {
		return out
	}
	if root := hearth.ServedRootOf(path, site.Roots); root != "" {
		out = append(out, Finding{ID: "HG-FILE-03", Blocking: true,
			Problem: fmt.Sprintf("env_file %s is inside %s, which file_server serves", path, root),
			Fix:     "move the env_file out of every directory Caddy serves"})
	}
	if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
		out = append(out, Finding{ID: "HG-FILE-01", Blocking: true,
			Problem: fmt.Sprintf("env_file %s is readable by other users (mode %04o)", path, info.Mode().Perm()),
			Fix:     fmt.Sprintf("chmod 600 %s", path)})
	}
	tracked, unknown := a.trackedByGit(path)
	if unknown != "" {
		a.logger.Warn("could not ask git whether it tracks the env_file (HG-FILE-02 not checked)", zap.String("env_file", path), zap.String("error", unknown))
	}
	if tracked {
		out = append(out, Finding{ID: "HG-FILE-02", Blocking: true,
			Problem: fmt.Sprintf("env_file %s is tracked by git: its secrets are in the repository", path),
			Fix:     fmt.Sprintf("`git rm --cached %s`, add it to .gitignore, and replace the secrets it held", filepath.Base(path))})
	}
	return out
}

// trackedByGit reports whether git tracks path, and why it cannot tell
// ("" when it can). git runs as the app's account, not Caddy's, and with
// the repository's own programs off (core.fsmonitor names one git would
// run): whoever can write the repository's config does not get to run
// code as another account. safe.directory=* lets it read a repository
// another account owns (the deploy user's, with the app as hearth-apps;
// the developer's under `sudo caddy run`), which is safe with those
// programs off. Its environment is only PATH and what keeps it to the
// repository (no system or global config, no prompt), and it has
// gitTimeout to answer.
func (a *App) trackedByGit(path string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), gitTimeout)
	defer cancel()
	out, err := supervisor.Run(ctx, supervisor.Command{
		Path: "git", Args: []string{"-c", "safe.directory=*", "-c", "core.fsmonitor=false", "ls-files", "--error-unmatch", "--", filepath.Base(path)},
		Dir: filepath.Dir(path), Env: gitEnv, Credential: a.spec.Credential,
	}, a.logger)
	var exit *supervisor.ExitError
	switch {
	case err == nil:
		return true, ""
	case errors.As(err, &exit) && exit.Code == 1: // --error-unmatch: not tracked
		return false, ""
	case errors.As(err, &exit) && strings.Contains(string(out), "not a git repository"),
		errors.Is(err, exec.ErrNotFound): // no git: a checkout it made is unlikely
		return false, ""
	}
	return false, fmt.Sprintf("%v: %s", err, textcut.Prefix(strings.TrimSpace(string(out)), 200))
}

// gitEnv is the whole environment trackedByGit gives git.
var gitEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "GIT_CONFIG_NOSYSTEM=1",
	"GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0", "GIT_OPTIONAL_LOCKS=0"}

// gitTimeout bounds trackedByGit's git (a repository on a hung network
// mount would otherwise hold the app's start).
const gitTimeout = 10 * time.Second

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
