// Package guard is Hearth's per-response protection for apps served from a
// home machine: the `guard` HTTP handler refuses requests for a foreign Host
// and for files that must never be served, keeps framework debug pages and
// tracebacks from reaching clients, and adds the security headers an app
// forgot.
package guard

import (
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/loglimit"
	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/internal/proxyheaders"
	"github.com/hearth-dev/hearth/modules/internal/textcut"
)

func init() {
	caddy.RegisterModule(Guard{})
}

// Guard is the `guard` HTTP handler. It wraps the handlers after it:
//
//   - a request whose Host is not one of Hosts gets 421 Misdirected Request
//     (Host-header attacks poison password-reset links and caches); without
//     Hosts, a guard that serves an app (the wsgi and asgi handlers' own)
//     uses the hosts the app itself allows (Django's ALLOWED_HOSTS, read
//     before launch, or what `settings auto` gave it);
//   - a WebSocket opening made by a page of another site (its Origin is
//     not the site's) gets 403: the browser sends this site's cookies
//     with it (origin.go);
//   - requests for debugger consoles and for files that are never meant to
//     be served (`__debugger__`, `/console`, `/.env`, `/.git/`, `*.sqlite3`,
//     `*.py`, …) get 404, judged by their decoded path and query in every
//     reading an app or a file system may make of them (refuse.go);
//   - an error response that carries a Django, Werkzeug/Flask or Starlette
//     debug page or a Python traceback, compressed or not, is replaced by a
//     plain page of its status class (a 4xx keeps its status, a 5xx becomes
//     500), and the original is logged;
//   - security headers are added when the app did not set them:
//     Strict-Transport-Security (HTTPS only), X-Content-Type-Options,
//     X-Frame-Options and Referrer-Policy;
//   - Server and X-Powered-By headers set by the app are removed;
//   - the headers a proxy or CDN sets (X-Forwarded-*, Forwarded,
//     X-Real-IP, CF-Connecting-IP, …) are removed from requests whose
//     peer is not one of the server's trusted_proxies: apps behind the
//     guard (a reverse_proxy to Node, not only Python's) would take them
//     for the client's address, scheme or host.
type Guard struct {
	// Hosts are the host names requests may carry (a leading "*." matches
	// one label). Empty: the hosts the app allows, when the guard serves
	// an app whose hosts are known (see UseAppHosts); any host otherwise.
	Hosts []string `json:"hosts,omitempty"`

	// WebSocketOrigins are the origins (scheme://host[:port]) whose pages
	// may open WebSockets to this site besides its own ("*": any site's).
	// Default: only the site's own pages (an Origin of the request's host
	// and port, or of a name in Hosts) and clients that send no Origin.
	WebSocketOrigins []string `json:"websocket_origins,omitempty"`

	// Refuse adds path patterns to refuse (404), in the syntax of
	// path.Match, matched in any case against the path and each of its
	// segments; a pattern ending in "/*" also refuses every path under it.
	Refuse []string `json:"refuse,omitempty"`

	// HSTSMaxAge is the max-age of Strict-Transport-Security on HTTPS
	// responses, in seconds. Default: 31536000 (one year); -1 disables it.
	HSTSMaxAge int `json:"hsts_max_age,omitempty"`

	// ScanLimit is how many bytes of an error response are held back and
	// searched for debug pages; of a compressed one, how many decoded bytes
	// are searched (and up to 128 KiB more of it are held, a zstd block).
	// Default: 256 KiB.
	ScanLimit int `json:"scan_limit,omitempty"`

	hosts     hostSet
	origins   map[string]bool  // WebSocketOrigins as origin.String writes them
	anyOrigin bool             // "*" among WebSocketOrigins
	refuse    []string         // Refuse in lower case, as paths are compared
	hsts      string           // the Strict-Transport-Security value of max-age hstsAge, made once
	hstsAge   int              // HSTSMaxAge when hsts was made
	appHosts  func() *AppHosts // the hosts the app allows, when Hosts is empty
	logger    *zap.Logger
	logs      *responseLogs // one line a second of each kind a client can cause
}

// CaddyModule returns the Caddy module information.
func (Guard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.guard",
		New: func() caddy.Module { return new(Guard) },
	}
}

// Provision sets defaults.
func (g *Guard) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	return g.Prepare(g.logger)
}

// DefaultHSTSMaxAge is the max-age of Strict-Transport-Security when
// HSTSMaxAge is unset: one year.
const DefaultHSTSMaxAge = 31536000

// maxScanLimit bounds scan_limit (1 GiB).
const maxScanLimit = 1 << 30

// Prepare validates the settings and applies defaults; it is used by
// handlers that embed a Guard.
func (g *Guard) Prepare(logger *zap.Logger) error {
	g.logger = logger
	g.logs = newResponseLogs()
	if g.HSTSMaxAge == 0 {
		g.HSTSMaxAge = DefaultHSTSMaxAge
	}
	g.hsts, g.hstsAge = "max-age="+strconv.Itoa(g.HSTSMaxAge), g.HSTSMaxAge
	if g.ScanLimit > maxScanLimit { // (the Caddyfile's bound, for JSON too: past it the hold's arithmetic overflows)
		return fmt.Errorf("guard: scan_limit %d is more than 1GiB; error pages are held in memory up to it", g.ScanLimit)
	}
	if g.ScanLimit <= 0 {
		g.ScanLimit = 256 << 10
	}
	g.refuse = nil
	for _, p := range g.Refuse {
		if _, err := path.Match(p, "x"); err != nil {
			return fmt.Errorf("guard: refuse pattern %q: %w", p, err)
		}
		if strings.Contains(p, "/") && !strings.HasPrefix(p, "/") {
			return fmt.Errorf("guard: refuse pattern %q would never match: a pattern is matched against the whole path, which starts with /, or against one segment, which has no /; write /%s or a pattern of one segment", p, p)
		}
		g.refuse = append(g.refuse, strings.ToLower(p))
	}
	hosts, err := newHostSet(g.Hosts)
	if err != nil {
		return err
	}
	g.hosts = hosts
	g.origins, g.anyOrigin, err = newOrigins(g.WebSocketOrigins)
	return err
}

// ServeHTTP guards the request and its response.
func (g *Guard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	defer panics.RecoverRequest(g.logger, "guarding", r, &err) // a 500 for this request only
	if err := g.Check(r); err != nil {
		return err
	}
	dropProxyHeaders(r)
	gw := g.wrap(w, r)
	defer gw.drop() // a page held when the handler panicked gives its memory back too
	err = next.ServeHTTP(gw, r)
	if ferr := gw.finish(); ferr != nil && err == nil {
		err = ferr
	}
	return err
}

// refusalWarnings rate-limits the warning about refused requests.
var refusalWarnings = loglimit.Limit{Every: time.Second}

// Check judges a request before anything serves it: a Host that is not
// the site's (Hosts, or the hosts the app allows) gets 421, a trusted
// proxy's scheme, port or prefix that no proxy sets gets 400, a WebSocket
// opening from another site's page gets 403, and a path or
// query that is never served gets 404, as a caddyhttp.HandlerError. It
// returns nil for a request that may go on. Handlers that serve what the
// guard cannot wrap (WebSocket openings) call it themselves.
func (g *Guard) Check(r *http.Request) error {
	if err := g.checkHost(r); err != nil {
		return err
	}
	if err := checkForwardedPlace(r); err != nil {
		return err
	}
	if IsWebSocket(r) {
		if err := g.checkOrigin(r); err != nil {
			return err
		}
	}
	if reason := g.refused(r); reason != "" {
		if ok, skipped := refusalWarnings.Allow(); ok { // scanners ask for /.env all day
			g.logger.Warn("guard refused a request (at most one such line a second)", loggedPath(r.URL.Path),
				zap.String("reason", reason), zap.Int64("not_logged_since", skipped))
		}
		return caddyhttp.Error(http.StatusNotFound, fmt.Errorf("guard: %s", reason))
	}
	return nil
}

// dropProxyHeaders removes the proxy headers (proxyheaders.Is) from r
// unless its peer is one of the server's trusted_proxies, and those
// spelled with '_' whatever the peer: no proxy sends them, the guard does
// not judge them (checkHost), and FastCGI, CGI and older gunicorn read
// X_Forwarded_Host as X-Forwarded-Host, joined to the one the proxy set.
// Caddy's reverse_proxy then sets X-Forwarded-For, -Proto and -Host itself.
func dropProxyHeaders(r *http.Request) {
	trusted := fromTrustedProxy(r)
	for name := range r.Header {
		if proxyheaders.Is(name) && (!trusted || strings.Contains(name, "_")) {
			delete(r.Header, name)
		}
	}
}

// IsWebSocket reports a WebSocket opening: an HTTP/1.1 upgrade or an
// HTTP/2 extended CONNECT (RFC 8441). It is lenient (the Connection header,
// in any of its lines, mentions upgrade): the handler checks the opening
// more closely, and answers one that is not right with 400 saying why.
func IsWebSocket(r *http.Request) bool {
	if r.ProtoMajor == 2 && r.Method == http.MethodConnect {
		return r.Header.Get(":protocol") == "websocket"
	}
	return r.Method == http.MethodGet && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") &&
		slices.ContainsFunc(r.Header.Values("Connection"), func(v string) bool {
			return strings.Contains(strings.ToLower(v), "upgrade")
		})
}

// refusedSegments are path segments (or suffixes) never served, in lower
// case (paths are compared in lower case).
var (
	refusedSegments = []string{".env", ".envrc", ".flaskenv", ".git", ".git-credentials", ".gitconfig", ".hg", ".svn",
		"__debugger__", ".ds_store", "__pycache__", ".venv", ".ssh", ".aws", ".htpasswd", ".pgpass", ".netrc",
		".pypirc", ".npmrc",
		// SSH private keys by their default names
		"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk"}
	refusedSuffixes = []string{".sqlite3", ".sqlite", ".db", ".py", ".pyc", ".env", ".bak", ".swp", ".orig", "~",
		".sql", ".sql.gz", // database dumps
		// private keys and the stores that hold them (a public certificate
		// is served as .crt or .cer)
		".key", ".pem", ".ppk", ".p12", ".pfx", ".jks", ".keystore",
		// SQLite's journal, write-ahead log and shared memory beside a database
		".sqlite3-wal", ".sqlite3-journal", ".sqlite3-shm", ".sqlite-wal", ".sqlite-journal", ".sqlite-shm",
		".db-wal", ".db-journal", ".db-shm"}
	refusedPaths = []string{"/console"}
)

// refused says why a request must not reach the app, or "". It judges the
// decoded query and path, in every reading an app or a file system may make
// of them (see refuse.go). It runs on every request, so it does not
// allocate for the requests it lets through, unless their path is odd.
func (g *Guard) refused(r *http.Request) string { return g.refusedAs(r, true) }

// refusedAs is refused; sitePaths says whether the rules for the site's
// own paths apply (/console): not to what is left of a path a strip
// (handle_path) took a prefix off, which names a file, not a page.
func (g *Guard) refusedAs(r *http.Request, sitePaths bool) string {
	if debuggerQuery(r.URL.RawQuery) {
		return "a Werkzeug debugger request"
	}
	p := r.URL.Path
	if reason := g.refusedPath(p, sitePaths); reason != "" || !oddPath(p) {
		return reason
	}
	for _, reading := range pathReadings(p) {
		if reason := g.refusedPath(reading, sitePaths); reason != "" {
			return reason
		}
	}
	return ""
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Guard)(nil)
	_ caddyhttp.MiddlewareHandler = (*Guard)(nil)
)

// quoted is what a client sent, shortened and quoted for an error's text:
// Go's quoting, ASCII only, with <, > and & escaped too. An error reaches
// a handle_errors that may write {err.message} into an HTML page's text;
// %q alone leaves markup as it is, and the page would run the client's
// script. (It keeps its double quotes: the message is text, not for an
// attribute or a script.)
func quoted(s string) string {
	return htmlSafe.Replace(strconv.QuoteToASCII(textcut.Shorten(s, 64)))
}

var htmlSafe = strings.NewReplacer("<", `\u003c`, ">", `\u003e`, "&", `\u0026`)
