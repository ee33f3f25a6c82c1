package guard

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// checkForwardedPlace refuses, with 400, a request from one of the
// server's trusted_proxies whose X-Forwarded-Proto, Forwarded's proto=,
// X-Forwarded-Port or X-Forwarded-Prefix (or X-Scheme, X-Url-Scheme,
// X-Script-Name, which some apps read as those) is not what a proxy sets:
// a scheme other than http, https, ws or wss (javascript: would make the
// app's links run script), a port that is not a number from 1 to 65535,
// a prefix that is not a path (one that starts with "//" or holds a
// backslash or a control character). A proxy that passes on what the
// client wrote would otherwise hand the app the client's choice: with
// Flask's ProxyFix (x_prefix) a prefix of //evil.example makes every
// redirect the app answers go there, a response a cache may keep for
// everyone. The host headers are checkHost's; from any other peer these
// headers are dropped (dropProxyHeaders).
func checkForwardedPlace(r *http.Request) error {
	if !fromTrustedProxy(r) {
		return nil
	}
	for _, h := range []struct {
		name string
		ok   func(string) bool
		want string
	}{
		{"X-Forwarded-Proto", forwardedProto, schemes},
		{"X-Scheme", forwardedProto, schemes},
		{"X-Url-Scheme", forwardedProto, schemes},
		{"X-Forwarded-Port", forwardedPort, "a port from 1 to 65535"},
		{"X-Forwarded-Prefix", forwardedPrefix, "a path starting with a single /, without backslashes or control characters"},
		{"X-Script-Name", forwardedPrefix, "a path starting with a single /, without backslashes or control characters"},
	} {
		for _, v := range r.Header.Values(h.name) {
			for item := range strings.SplitSeq(v, ",") {
				// (an empty item is skipped, as the frameworks skip it)
				if item = strings.TrimSpace(item); item != "" && !h.ok(item) {
					return refuseForwarded(h.name, item, h.want)
				}
			}
		}
	}
	for proto := range forwardedParameter(r, "proto") { // (its host= is checkHost's)
		if !forwardedProto(proto) {
			return refuseForwarded("Forwarded proto", proto, schemes)
		}
	}
	return nil
}

// schemes says what forwardedProto accepts.
const schemes = "http, https, ws or wss"

// refuseForwarded is the 400 for a forwarded value that is not what a
// proxy sets.
func refuseForwarded(name, value, want string) error {
	return caddyhttp.Error(http.StatusBadRequest,
		fmt.Errorf("guard: %s (from a trusted proxy) %s is not %s", name, quoted(value), want))
}

// forwardedProto accepts the schemes proxies send: ws and wss too, which
// Traefik sends for a WebSocket opening.
func forwardedProto(v string) bool {
	for _, s := range []string{"http", "https", "ws", "wss"} {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func forwardedPort(v string) bool {
	n, err := strconv.Atoi(v)
	return err == nil && n >= 1 && n <= 65535 && v[0] != '+' && v[0] != '0'
}

func forwardedPrefix(v string) bool {
	if v == "" {
		return true // no prefix
	}
	if v[0] != '/' || strings.HasPrefix(v, "//") {
		return false
	}
	for _, c := range v {
		if c == '\\' || c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
