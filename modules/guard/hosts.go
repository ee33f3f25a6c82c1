package guard

import (
	"fmt"
	"iter"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/loglimit"
)

// checkHost refuses, with 421, a request for a host this site does not
// serve: one not in Hosts or, without Hosts, not among the hosts the app
// allows. The app would refuse it too (Django answers 400), but only after
// a worker was taken; here no worker is asked.
//
// From one of the server's trusted_proxies, the hosts it forwards
// (X-Forwarded-Host, Forwarded's host=) are judged too: they reach the app,
// and an app that believes them (Flask's ProxyFix with x_host) builds its
// links, a password reset's among them, on the client's choice.
func (g *Guard) checkHost(r *http.Request) error {
	if err := g.checkOneHost(r.Host, "Host"); err != nil {
		return err
	}
	if !fromTrustedProxy(r) {
		return nil // dropped (dropProxyHeaders)
	}
	for name, host := range forwardedHosts(r) {
		if err := g.checkOneHost(host, name+" (from a trusted proxy)"); err != nil {
			return err
		}
	}
	return nil
}

// forwardedHosts yields each host r's proxy headers name, with what names
// it: X-Forwarded-Host, X-Original-Host and X-Host (each item of their
// lists) and Forwarded's host= ("Forwarded host"). Spelled with '_', they
// are dropped (dropProxyHeaders).
func forwardedHosts(r *http.Request) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, name := range []string{"X-Forwarded-Host", "X-Original-Host", "X-Host"} {
			for _, v := range r.Header.Values(name) {
				for host := range strings.SplitSeq(v, ",") {
					if !yield(name, strings.TrimSpace(host)) {
						return
					}
				}
			}
		}
		for host := range forwardedParameter(r, "host") {
			if !yield("Forwarded host", host) {
				return
			}
		}
	}
}

// fromTrustedProxy reports whether r's peer is one of the server's
// trusted_proxies: its proxy headers are judged; anyone else's dropped.
func fromTrustedProxy(r *http.Request) bool {
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return trusted
}

// forwardedParameter yields the values of a parameter (host, proto) of
// every element of r's Forwarded headers (RFC 7239), unquoted.
func forwardedParameter(r *http.Request, parameter string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range r.Header.Values("Forwarded") {
			for element := range strings.SplitSeq(v, ",") {
				for pair := range strings.SplitSeq(element, ";") {
					name, value, _ := strings.Cut(strings.TrimSpace(pair), "=")
					if strings.EqualFold(name, parameter) && !yield(strings.Trim(value, `"`)) {
						return
					}
				}
			}
		}
	}
}

// checkOneHost judges one host a request names (what says it).
func (g *Guard) checkOneHost(host, what string) error {
	if len(g.Hosts) > 0 {
		if g.hosts.allows(host) {
			return nil
		}
		return caddyhttp.Error(http.StatusMisdirectedRequest,
			fmt.Errorf("guard: %s %s is not one of this site's hosts %v", what, quoted(host), g.Hosts))
	}
	if g.appHosts == nil {
		return nil
	}
	app := g.appHosts()
	if app == nil || app.Allows(host) {
		return nil
	}
	g.warnForeignHost(host, app)
	return caddyhttp.Error(http.StatusMisdirectedRequest,
		fmt.Errorf("guard: %s %s is not one the app allows (%s: %s)", what, quoted(host), app.Source, strings.Join(app.Patterns, ", ")))
}

// hostWarnings rate-limits the warning about foreign hosts: scanners
// send them all day, but the person who opens the site by a name the app
// does not list needs to read why it refuses.
var hostWarnings = loglimit.Limit{Every: time.Minute}

func (g *Guard) warnForeignHost(host string, app *AppHosts) {
	ok, skipped := hostWarnings.Allow()
	if !ok {
		return
	}
	g.logger.Warn("guard answered 421 to a Host the app does not allow (at most one such line a minute)",
		zap.String("host", host), zap.Int64("not_logged_since", skipped), zap.String("allowed_by", app.Source), zap.Strings("allowed", app.Patterns),
		zap.String("fix", "if this is a name or address you open the site by, add it to "+app.Source+", or list the site's names with `guard { hosts … }`"))
}

// UseAppHosts makes a guard without Hosts refuse hosts the app does not
// allow: hosts returns them (nil while unknown, or when the app allows
// any host). The wsgi and asgi handlers call it in Provision, before
// requests arrive.
func (g *Guard) UseAppHosts(hosts func() *AppHosts) { g.appHosts = hosts }

// AppHosts are the host names an app allows, written as Django's
// ALLOWED_HOSTS writes them: "example.net" for that name,
// ".example.net" for it and every name under it, "[::1]" for an IPv6
// address; case and a trailing dot do not matter, nor does the port.
type AppHosts struct {
	// Patterns are the names, as the app lists them.
	Patterns []string
	// Source names where they come from, for messages: "ALLOWED_HOSTS".
	Source string
}

// NewAppHosts returns the matcher for patterns, or nil when they allow
// every host ("*" among them).
func NewAppHosts(patterns []string, source string) *AppHosts {
	for _, p := range patterns {
		if p == "*" {
			return nil
		}
	}
	return &AppHosts{Patterns: patterns, Source: source}
}

// Allows reports whether the app allows the request's Host (host[:port]),
// matched as Django's validate_host matches it.
func (a *AppHosts) Allows(hostport string) bool {
	host, ok := requestHost(hostport)
	if !ok || host == "" {
		return false
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // Django keeps IPv6 addresses in brackets
	}
	for _, p := range a.Patterns {
		p = strings.ToLower(p)
		if p == "*" || p == host ||
			strings.HasPrefix(p, ".") && (host == p[1:] || strings.HasSuffix(host, p)) {
			return true
		}
	}
	return false
}

// requestHost returns the host of a Host header (host[:port]), in lower
// case, without its trailing dot and, for an IPv6 address, without its
// brackets; ok is false for a Host no browser sends and no app should
// take: a port that is not a number ("good.example:evil.example", which
// Flask would put in a link as it is), or brackets around something other
// than an IPv6 address.
func requestHost(hostport string) (host string, ok bool) {
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return "", false
		}
	}
	if strings.HasPrefix(hostport, "[") != strings.Contains(host, ":") {
		return "", false // brackets are for IPv6 addresses, and IPv6 addresses need them
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), true
}

// hostSet matches Host headers against the allowed names.
type hostSet struct {
	exact    map[string]bool
	wildcard []string // ".example.net" for "*.example.net"
}

func newHostSet(hosts []string) (hostSet, error) {
	s := hostSet{exact: map[string]bool{}}
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1] // an IPv6 address, as requests are compared: "[::1]" is ::1
		}
		switch {
		case h == "" || strings.ContainsAny(h, "/ "):
			return s, fmt.Errorf("guard: %q is not a host name", h)
		case strings.HasPrefix(h, "*."):
			s.wildcard = append(s.wildcard, h[1:])
		default:
			s.exact[h] = true
		}
	}
	return s, nil
}

func (s hostSet) allows(hostport string) bool {
	if len(s.exact) == 0 && len(s.wildcard) == 0 {
		return true
	}
	host, ok := requestHost(hostport)
	if !ok {
		return false
	}
	if s.exact[host] {
		return true
	}
	for _, suffix := range s.wildcard {
		if rest, ok := strings.CutSuffix(host, suffix); ok && rest != "" && !strings.Contains(rest, ".") {
			return true
		}
	}
	return false
}
