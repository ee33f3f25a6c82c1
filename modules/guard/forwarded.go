package guard

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/hearth-dev/hearth/modules/internal/textcut"
)

// checkForwardedPlace refuses, with 400, a request from one of the
// server's trusted_proxies whose X-Forwarded-Proto, X-Forwarded-Port or
// X-Forwarded-Prefix (or X-Scheme, X-Url-Scheme, X-Script-Name, read as
// those by some apps) is not what a proxy sets: a scheme other than http
// or https, a port that is not a number from 1 to 65535, a prefix that is
// not a path (one that starts with "//" or holds a backslash or a control
// character). A proxy that passes on what the client wrote would otherwise
// hand the app the client's choice: with Flask's ProxyFix (x_prefix) a
// prefix of //evil.example makes every redirect the app answers go there,
// a response a cache may keep for everyone. The host headers are
// checkHost's; from any other peer these headers are dropped
// (dropProxyHeaders).
func checkForwardedPlace(r *http.Request) error {
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); !trusted {
		return nil
	}
	for _, h := range []struct {
		name string
		ok   func(string) bool
		want string
	}{
		{"X-Forwarded-Proto", forwardedProto, "http or https"},
		{"X-Scheme", forwardedProto, "http or https"},
		{"X-Url-Scheme", forwardedProto, "http or https"},
		{"X-Forwarded-Port", forwardedPort, "a port from 1 to 65535"},
		{"X-Forwarded-Prefix", forwardedPrefix, "a path starting with a single /, without backslashes or control characters"},
		{"X-Script-Name", forwardedPrefix, "a path starting with a single /, without backslashes or control characters"},
	} {
		for _, v := range r.Header.Values(h.name) {
			for item := range strings.SplitSeq(v, ",") {
				if item = strings.TrimSpace(item); !h.ok(item) {
					return caddyhttp.Error(http.StatusBadRequest,
						fmt.Errorf("guard: %s (from a trusted proxy) %q is not %s", h.name, textcut.Shorten(item, 64), h.want))
				}
			}
		}
	}
	return nil
}

func forwardedProto(v string) bool {
	return strings.EqualFold(v, "http") || strings.EqualFold(v, "https")
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
