package guard

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// FuzzGuardCheck feeds hostile requests to the guard's checks: any Host,
// Origin and proxy headers, from a trusted proxy or not, over TLS or not.
// Whatever they hold, the guard must not panic, must answer a refusal as
// an HTTP error, and must keep these properties, each stated without the
// guard's own parsers:
//   - from a peer that is not a trusted proxy, the proxy headers change
//     nothing;
//   - a request that is not a WebSocket opening is never judged by its
//     Origin;
//   - a WebSocket opening with an Origin that is not listed goes through
//     only when the Origin's host is the request's own (or, from a
//     trusted proxy, one the proxy's headers name) or one of Hosts;
//   - over TLS, from a peer that is not a trusted proxy, it goes through
//     only from an https page.
func FuzzGuardCheck(f *testing.F) {
	type seed struct {
		hosts, origins, host, origin, xfh, xfport, xfproto, forwarded string
		trusted, tls, websocket                                       bool
	}
	for _, s := range []seed{
		{"", "", "example.net", "https://example.net", "", "", "", "", false, false, true},
		{"", "", "example.net", "https://evil.example", "", "", "", "", false, false, true},
		{"", "", "Example.NET.", "https://EXAMPLE.net", "", "", "", "", false, false, true},
		{"", "", "localhost:8080", "http://localhost:8080", "", "", "", "", false, false, true},
		{"", "", "localhost:8080", "http://localhost:3000", "", "", "", "", false, false, true},
		{"", "", "[::1]:8080", "http://[::1]:8080", "", "", "", "", false, true, true},
		{"example.net,*.example.net", "", "example.net", "https://tenant.example.net", "", "", "", "", false, false, true},
		{"example.net,www.example.net", "https://app.example.com", "example.net", "https://www.example.net", "", "", "", "", false, false, true},
		{"", "*", "example.net", "null", "", "", "", "", false, false, true},
		{"", "", "10.0.0.5:8080", "https://example.net", "example.net", "8443", "https", `for=192.0.2.1;host="example.net";proto=https`, true, false, true},
		{"", "", "10.0.0.5:8080", "https://evil.example", "evil.example", "", "", "", false, false, true},
		{"", "", "example.net", "https://example.net:evil.example", "", "", "", "", false, false, true},
		{"", "", "example.net", "https://example.net@evil.example", "", "", "", "", false, false, true},
		{"", "", "example.net", "https://evil.example", "", "", "", "", false, false, false},
		{"", "", "example.net:443", "https://example.net", "a, b", "0", "javascript", `host="a,b";proto=ws`, true, true, true},
	} {
		f.Add(s.hosts, s.origins, s.host, s.origin, s.xfh, s.xfport, s.xfproto, s.forwarded, s.trusted, s.tls, s.websocket)
	}
	f.Fuzz(func(t *testing.T, hosts, origins, host, origin, xfh, xfport, xfproto, forwarded string, trusted, overTLS, websocket bool) {
		g := Guard{Hosts: list(hosts), WebSocketOrigins: list(origins)}
		if g.Prepare(zap.NewNop()) != nil {
			return // a config Caddy refuses (FuzzGuardConfig's)
		}
		proxyHeaders := map[string]string{"X-Forwarded-Host": xfh, "X-Forwarded-Port": xfport, "X-Forwarded-Proto": xfproto, "Forwarded": forwarded}
		check := func(trusted, withProxyHeaders, withOrigin bool) error {
			r := &http.Request{Method: http.MethodGet, Host: host, URL: &url.URL{Path: "/ws"}, Header: http.Header{},
				Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
			if overTLS {
				r.TLS = &tls.ConnectionState{}
			}
			if websocket {
				r.Header.Set("Upgrade", "websocket")
				r.Header.Set("Connection", "Upgrade")
			}
			if withOrigin {
				r.Header.Set("Origin", origin)
			}
			if withProxyHeaders {
				for name, v := range proxyHeaders {
					if v != "" {
						r.Header.Set(name, v)
					}
				}
			}
			r = r.WithContext(context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: trusted}))
			err := g.Check(r)
			var he caddyhttp.HandlerError
			if err != nil && (!errors.As(err, &he) || he.StatusCode < 400 || he.StatusCode > 499) {
				t.Fatalf("a refusal that is not a 4xx: %v", err)
			}
			return err
		}
		err := check(trusted, true, true)
		if !trusted && !sameVerdict(err, check(false, false, true)) {
			t.Fatalf("an untrusted peer's proxy headers changed the verdict: %v with them, %v without", err, check(false, false, true))
		}
		if !websocket && !sameVerdict(err, check(trusted, true, false)) {
			t.Fatalf("a request that is not a WebSocket opening was judged by its Origin: %v", err)
		}
		if err != nil || !websocket || g.anyOrigin {
			return
		}
		u, perr := url.Parse(origin)
		if perr != nil {
			t.Fatalf("let through an Origin that is not a URL: %q", origin)
		}
		name := func(h string) string { return strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), ".")) }
		ours := name(u.Hostname())
		listed := false
		for _, o := range g.WebSocketOrigins {
			if lu, err := url.Parse(o); err == nil && strings.EqualFold(lu.Scheme, u.Scheme) && name(lu.Hostname()) == ours {
				listed = true
			}
		}
		if listed {
			return
		}
		// a port as a browser means it: none is the scheme's default
		port := func(p, scheme string) string {
			if p != "" {
				return p
			}
			switch strings.ToLower(scheme) {
			case "http", "ws":
				return "80"
			case "https", "wss":
				return "443"
			}
			return ""
		}
		requestName, requestPort := host, ""
		if h, p, err := net.SplitHostPort(host); err == nil {
			requestName, requestPort = h, p
		}
		exact := map[string]bool{} // the names of hosts, read here
		for _, h := range g.Hosts {
			if h = name(strings.ToLower(h)); !strings.HasPrefix(h, "*.") {
				exact[h] = true
			}
		}
		// from a trusted proxy, any name its headers hold (split at every
		// separator they have)
		forwardedName := false
		for _, token := range strings.FieldsFunc(strings.ToLower(xfh+" "+forwarded), func(r rune) bool { return strings.ContainsRune(" ,;=\"", r) }) {
			if h, _, err := net.SplitHostPort(token); err == nil {
				token = h
			}
			forwardedName = forwardedName || name(token) == ours
		}
		originPort := port(u.Port(), u.Scheme)
		switch {
		case ours == "":
			t.Fatalf("let through an Origin without a host: %q", origin)
		case ours == name(requestName) && originPort == port(requestPort, u.Scheme):
		case exact[ours] && originPort == port("", u.Scheme):
		case trusted && (forwardedName || ours == name(requestName)):
		default:
			t.Fatalf("let through a page of another site: Origin %q, Host %q (trusted proxy %v)", origin, host, trusted)
		}
		if overTLS && !trusted && !strings.EqualFold(u.Scheme, "https") && !strings.EqualFold(u.Scheme, "wss") {
			t.Fatalf("let a plain page into an HTTPS site: Origin %q", origin)
		}
	})
}

// list splits a comma-separated fuzz input into a config list.
func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// sameVerdict reports whether two checks of one request agree: both let
// it through, or both refused it with the same status.
func sameVerdict(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	var ha, hb caddyhttp.HandlerError
	return errors.As(a, &ha) && errors.As(b, &hb) && ha.StatusCode == hb.StatusCode
}
