// Package redact removes what looks like a credential from text that is
// going to a log, a status page or an error message: a URL's userinfo and
// query, name=value pairs named like a secret, Authorization and similar
// headers, Bearer and Basic credentials. It knows no secret's value (a
// caller that does, such as the ddns app with its provider's settings,
// removes those too); it catches the shapes credentials usually travel in.
package redact

import (
	"regexp"
	"strings"
)

// Marker replaces what is removed.
const Marker = "[redacted]"

// Text is s with what looks like a credential replaced by Marker.
func Text(s string) string {
	s = authPattern.ReplaceAllString(s, "${1}${2}"+Marker)
	s = schemePattern.ReplaceAllStringFunc(s, func(m string) string {
		scheme, cred, _ := strings.Cut(m, " ")
		if cred = strings.TrimSpace(cred); !looksLikeCredential(cred) {
			return m
		}
		return scheme + " " + Marker
	})
	s = urlPattern.ReplaceAllStringFunc(s, redactURL)
	s = quotedPairPattern.ReplaceAllString(s, "${1}${2}"+Marker+"${3}")
	return pairPattern.ReplaceAllString(s, "${1}="+Marker)
}

var (
	// urlPattern finds URLs in a message.
	urlPattern = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>\x60]+`)
	// pairPattern finds name=value pairs named like a credential.
	pairPattern = regexp.MustCompile(`(?i)\b([a-z0-9_.-]*(?:token|secret|password|passwd|pass|pwd|key|auth|signature|sig|credential)[a-z0-9_.-]*)=([^&\s"',;]+)`)
	// quotedPairPattern finds quoted values named like a credential:
	// password='x' (a DSN), 'PASSWORD': 'x' (Django's DATABASES as Python
	// prints it), "token": "x" (JSON).
	quotedPairPattern = regexp.MustCompile(`(?i)(\b[a-z0-9_.-]*(?:token|secret|password|passwd|pwd|credential|api_?key)[a-z0-9_.-]*['"]?\s*[:=]\s*)(['"])[^'"]*(['"])`)
	// authPattern finds Authorization headers, as text or Go's %v of a header map.
	authPattern = regexp.MustCompile(`(?i)\b((?:proxy-)?authorization|x-auth-key|x-auth-token|x-api-key|api-key|cookie)(["']?\s*[:=]\s*\[?\s*["']?)(?:(?:bearer|basic|digest|token)\s+)?[^\s\]"',;}]+`)
	// schemePattern finds what may be Bearer and Basic credentials
	// wherever they are (looksLikeCredential decides).
	schemePattern = regexp.MustCompile(`(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=-]{8,})`)
)

// looksLikeCredential tells a credential after "Bearer" or "Basic" from a
// word ("Basic authentication"): it has a digit or one of + / = _, or is
// long.
func looksLikeCredential(s string) bool {
	return len(s) >= 20 || strings.ContainsAny(s, "0123456789+/=_")
}

// redactURL keeps a URL's scheme, host and path.
func redactURL(s string) string {
	scheme, rest, _ := strings.Cut(s, "://")
	if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
		rest = Marker + rest[at:]
	}
	if base, _, ok := strings.Cut(rest, "?"); ok {
		rest = base + "?" + Marker
	}
	return scheme + "://" + rest
}
