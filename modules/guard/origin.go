package guard

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/loglimit"
	"github.com/hearth-dev/hearth/modules/internal/textcut"
)

// AnyOrigin in WebSocketOrigins lets a page of any site open WebSockets.
const AnyOrigin = "*"

// checkOrigin refuses, with 403, a WebSocket opening that a page of
// another site made: a browser sends the page's Origin with every
// opening, and with it the cookies of this site (Firefox sends cookies
// without a SameSite attribute on cross-site openings; any browser sends
// them from a sibling subdomain), but the same-origin policy that keeps
// a page from reading another site's responses does not apply to
// WebSockets. So without this check a page anyone can lure the user to
// would talk to the app as the logged-in user ("cross-site WebSocket
// hijacking"): Django Channels checks origins only when the app wraps
// its routes in AllowedHostsOriginValidator, and Starlette, FastAPI and
// Flask's WebSocket extensions never do.
//
// An opening is let through when it has no Origin (not a browser: a
// script or a native client, which sends no other site's cookies), when
// its Origin is the request's own host and port (or a host the server's
// trusted proxy forwarded, which checkHost judged), a name in Hosts, or
// one of WebSocketOrigins. Other requests are not judged: a form's
// cross-site POST is the app's CSRF protection's to refuse.
func (g *Guard) checkOrigin(r *http.Request) error {
	values := r.Header.Values("Origin")
	if len(values) == 0 || originListedBefore(r) {
		return nil
	}
	if g.anyOrigin {
		caddyhttp.SetVar(r.Context(), originListedVar, true)
		return nil
	}
	if len(values) > 1 {
		return g.refuseOrigin(r, strings.Join(values, ", "), "a browser sends one Origin")
	}
	origin, ok := parseOrigin(values[0])
	if !ok {
		return g.refuseOrigin(r, values[0], "it is not a site's origin (scheme://host[:port]); browsers send \"null\" from sandboxed frames and local files")
	}
	if g.origins[origin.String()] {
		caddyhttp.SetVar(r.Context(), originListedVar, true)
		return nil
	}
	if g.sameSite(r, origin) {
		return nil
	}
	return g.refuseOrigin(r, values[0], "a page of another site opened it")
}

// originListedVar marks a request whose Origin a guard's websocket_origins
// let through: a site's guard directive and an app's own guard (the asgi
// handler's) judge the same opening, and an origin the site lists is not
// refused by the app's guard, which has no such list. Only a listed origin
// is passed on: each guard judges what is the same site by its own hosts.
const originListedVar = "hearth.guard.origin_listed"

func originListedBefore(r *http.Request) bool {
	listed, _ := caddyhttp.GetVar(r.Context(), originListedVar).(bool)
	return listed
}

// origin is a web origin: scheme, host and port, in the form browsers
// serialize it (lower case, the scheme's default port left out).
type origin struct {
	scheme, host, port string // host without brackets; port "" for the scheme's default
}

func (o origin) String() string {
	host := o.host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if o.port != "" {
		host += ":" + o.port
	}
	return o.scheme + "://" + host
}

// parseOrigin reads an Origin header's value (or a configured origin):
// scheme://host[:port] and nothing more.
func parseOrigin(s string) (origin, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return origin{}, false
	}
	host, ok := requestHost(u.Host)
	if !ok || host == "" || strings.Trim(host, "abcdefghijklmnopqrstuvwxyz0123456789.-_:") != "" {
		return origin{}, false // (a name or an address, in lower case: requestHost)
	}
	o := origin{scheme: strings.ToLower(u.Scheme), host: host, port: u.Port()}
	if o.port == defaultPort(o.scheme) {
		o.port = ""
	}
	return o, true
}

// defaultPort is the port a URL of scheme reaches without naming one.
func defaultPort(scheme string) string {
	switch scheme {
	case "http", "ws":
		return "80"
	case "https", "wss":
		return "443"
	}
	return ""
}

// sameSite reports whether o is a page of this site: its host and port
// are those the request was sent to (r.Host, or a host the trusted proxy
// forwarded, on the port it forwarded when the host has none), or its
// host is one of the names in Hosts (not its wildcards: another tenant's
// subdomain is another site). A Host without a port matches an origin on
// its scheme's default port only: behind a proxy that terminates TLS the
// request came as http, and its page was https. A request that came over
// HTTPS (to Caddy, or to the trusted proxy) takes only https pages: a
// plain-http page of the same name is anyone's on the network's to write.
func (g *Guard) sameSite(r *http.Request, o origin) bool {
	if defaultPort(o.scheme) == "" {
		return false // a page of a browser's extension or an app's own scheme
	}
	trusted := fromTrustedProxy(r)
	https := r.TLS != nil
	if trusted {
		if proto, said := clientScheme(r); said {
			https = proto // the client's request, not the proxy's to Caddy
		}
	}
	if (o.scheme == "http" || o.scheme == "ws") && https {
		return false
	}
	if sameHost(o, r.Host) || o.port == "" && g.hosts.exact[o.host] {
		return true
	}
	if !trusted {
		return false
	}
	port := r.Header.Get("X-Forwarded-Port")
	same := func(host string) bool {
		if sameHost(o, host) {
			return true
		}
		// a host without a port, on the port the proxy says the client
		// used (one behind a port mapping: 443 outside, 8443 inside)
		_, _, err := net.SplitHostPort(host)
		return err != nil && port != "" && forwardedPort(port) && sameHost(o, net.JoinHostPort(strings.Trim(host, "[]"), port))
	}
	for _, host := range forwardedHosts(r) {
		if same(host) {
			return true
		}
	}
	return port != "" && same(r.Host)
}

// clientScheme reports whether a trusted proxy said which scheme the
// client's request came with, and whether that was HTTPS (any of several
// it lists).
func clientScheme(r *http.Request) (https, said bool) {
	judge := func(item string) {
		if item = strings.TrimSpace(item); item != "" {
			said = true
			https = https || strings.EqualFold(item, "https") || strings.EqualFold(item, "wss")
		}
	}
	for _, v := range r.Header.Values("X-Forwarded-Proto") {
		for item := range strings.SplitSeq(v, ",") {
			judge(item)
		}
	}
	for proto := range forwardedParameter(r, "proto") {
		judge(proto)
	}
	return https, said
}

// sameHost reports whether origin o is the host[:port] a request names.
func sameHost(o origin, hostport string) bool {
	host, ok := requestHost(hostport)
	if !ok || host != o.host {
		return false
	}
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		port = ""
	}
	if port == defaultPort(o.scheme) {
		port = ""
	}
	return port == o.port
}

// originWarnings rate-limits the warning about refused origins.
var originWarnings = loglimit.Limit{Every: time.Minute}

func (g *Guard) refuseOrigin(r *http.Request, value, why string) error {
	fix := "if that page is yours, list its origin with `guard { websocket_origins " + exampleOrigin(value) + " }`, or `websocket_origins *` to let any site's pages in (then the app must check Origin itself)"
	if ok, skipped := originWarnings.Allow(); ok {
		g.logger.Warn("guard refused a WebSocket opening from another site's page (at most one such line a minute)",
			zap.String("origin", textcut.Shorten(value, 128)), zap.String("host", textcut.Shorten(r.Host, 128)),
			zap.String("why", why), zap.Int64("not_logged_since", skipped), zap.String("fix", fix))
	}
	return caddyhttp.Error(http.StatusForbidden,
		fmt.Errorf("guard: WebSocket opening with Origin %s refused: %s; %s", quoted(value), why, fix))
}

// exampleOrigin is value as websocket_origins would list it, when it is
// an origin.
func exampleOrigin(value string) string {
	if o, ok := parseOrigin(value); ok {
		return o.String()
	}
	return "https://app.example.com"
}

// newOrigins reads WebSocketOrigins.
func newOrigins(list []string) (origins map[string]bool, anyOrigin bool, err error) {
	origins = map[string]bool{}
	for _, s := range list {
		if s == AnyOrigin {
			anyOrigin = true
			continue
		}
		o, ok := parseOrigin(s)
		if !ok {
			return nil, false, fmt.Errorf("guard: websocket_origins %q is not an origin: write the scheme, host and port a page's address starts with, like https://app.example.com or http://localhost:3000, or * for any", s)
		}
		origins[o.String()] = true
	}
	return origins, anyOrigin, nil
}
