package guard

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// TestWebSocketOriginFromAnotherSite: a page of another site (its Origin)
// cannot open a WebSocket to the app, which would get the user's cookies
// with it; the site's own pages, the origins listed, clients without an
// Origin and requests that are not WebSocket openings go on.
func TestWebSocketOriginFromAnotherSite(t *testing.T) {
	type request struct {
		url     string
		origin  []string
		trusted bool
		header  map[string]string
		notWS   bool
		http2   bool
	}
	for _, tc := range []struct {
		name  string
		guard Guard
		req   request
		ok    bool
	}{
		{"no Origin (not a browser)", Guard{}, request{url: "http://example.net/ws"}, true},
		{"the site's own page", Guard{}, request{url: "http://example.net/ws", origin: []string{"http://example.net"}}, true},
		{"its https page (TLS ended before Caddy)", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://example.net"}}, true},
		{"case and a trailing dot", Guard{}, request{url: "http://Example.NET./ws", origin: []string{"https://EXAMPLE.net"}}, true},
		{"another site", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://evil.example"}}, false},
		{"a name that ends like the site's", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://evilexample.net"}}, false},
		{"a subdomain of the site", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://user.example.net"}}, false},
		{"another port of the site's host", Guard{}, request{url: "http://example.net/ws", origin: []string{"http://example.net:8080"}}, false},
		{"the port the request came to", Guard{}, request{url: "http://localhost:8080/ws", origin: []string{"http://localhost:8080"}}, true},
		{"the default port, written", Guard{}, request{url: "http://localhost:443/ws", origin: []string{"https://localhost"}}, true},
		{"the site's host on another port", Guard{}, request{url: "http://localhost:8080/ws", origin: []string{"http://localhost:3000"}}, false},
		{"the site's host on the default port", Guard{}, request{url: "http://localhost:8080/ws", origin: []string{"http://localhost"}}, false},
		{"IPv6", Guard{}, request{url: "http://[::1]:8080/ws", origin: []string{"http://[::1]:8080"}}, true},
		{"IPv6, another port", Guard{}, request{url: "http://[::1]:8080/ws", origin: []string{"http://[::1]:9090"}}, false},
		{"null (a sandboxed frame, a local file)", Guard{}, request{url: "http://example.net/ws", origin: []string{"null"}}, false},
		{"two Origins", Guard{}, request{url: "http://example.net/ws", origin: []string{"http://example.net", "https://evil.example"}}, false},
		{"a path in it", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://example.net/x"}}, false},
		{"user info in it", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://example.net@evil.example"}}, false},
		{"a port that is not a number", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://example.net:evil.example"}}, false},
		{"empty", Guard{}, request{url: "http://example.net/ws", origin: []string{""}}, false},
		{"an extension's page", Guard{}, request{url: "http://example.net/ws", origin: []string{"chrome-extension://abcdef"}}, false},
		{"not a WebSocket opening", Guard{}, request{url: "http://example.net/form", origin: []string{"https://evil.example"}, notWS: true}, true},
		{"HTTP/2, another site", Guard{}, request{url: "https://example.net/ws", origin: []string{"https://evil.example"}, http2: true}, false},
		{"HTTP/2, the site", Guard{}, request{url: "https://example.net/ws", origin: []string{"https://example.net"}, http2: true}, true},
		{"listed", Guard{WebSocketOrigins: []string{"https://app.example.com", "http://localhost:3000"}}, request{url: "http://localhost:8080/ws", origin: []string{"http://localhost:3000"}}, true},
		{"listed, written with its default port", Guard{WebSocketOrigins: []string{"https://app.example.com:443"}}, request{url: "http://example.net/ws", origin: []string{"https://app.example.com"}}, true},
		{"listed, another scheme", Guard{WebSocketOrigins: []string{"https://app.example.com"}}, request{url: "http://example.net/ws", origin: []string{"http://app.example.com"}}, false},
		{"any", Guard{WebSocketOrigins: []string{"*"}}, request{url: "http://example.net/ws", origin: []string{"https://evil.example"}}, true},
		{"one of the site's hosts", Guard{Hosts: []string{"example.net", "www.example.net"}}, request{url: "http://example.net/ws", origin: []string{"https://www.example.net"}}, true},
		{"one of the site's hosts on another port", Guard{Hosts: []string{"example.net", "www.example.net"}}, request{url: "http://example.net/ws", origin: []string{"https://www.example.net:8443"}}, false},
		{"a host the trusted proxy forwarded", Guard{}, request{url: "http://10.0.0.5:8080/ws", origin: []string{"https://example.net"}, trusted: true, header: map[string]string{"X-Forwarded-Host": "example.net"}}, true},
		{"Forwarded host=", Guard{}, request{url: "http://10.0.0.5:8080/ws", origin: []string{"https://example.net"}, trusted: true, header: map[string]string{"Forwarded": `for=192.0.2.1;host="example.net";proto=https`}}, true},
		{"a forwarded host from an untrusted peer", Guard{}, request{url: "http://10.0.0.5:8080/ws", origin: []string{"https://evil.example"}, header: map[string]string{"X-Forwarded-Host": "evil.example"}}, false},
		{"a plain-http page of an HTTPS site", Guard{}, request{url: "https://example.net/ws", origin: []string{"http://example.net"}}, false},
		{"a plain-http page, the trusted proxy's request HTTPS", Guard{}, request{url: "http://example.net/ws", origin: []string{"http://example.net"}, trusted: true, header: map[string]string{"X-Forwarded-Proto": "https"}}, false},
		{"an https page, the trusted proxy's request HTTPS", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://example.net"}, trusted: true, header: map[string]string{"X-Forwarded-Proto": "https"}}, true},
		{"a subdomain a wildcard of hosts covers (another tenant)", Guard{Hosts: []string{"example.net", "*.example.net"}}, request{url: "http://example.net/ws", origin: []string{"https://tenant.example.net"}}, false},
		{"an IPv6 name of hosts", Guard{Hosts: []string{"example.net", "[::1]"}}, request{url: "http://example.net/ws", origin: []string{"http://[::1]"}}, true},
		{"the port the trusted proxy forwarded", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://example.net:8443"}, trusted: true, header: map[string]string{"X-Forwarded-Port": "8443"}}, true},
		{"a forwarded port from an untrusted peer", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://example.net:8443"}, header: map[string]string{"X-Forwarded-Port": "8443"}}, false},
		{"the default port, behind a port mapping the proxy forwards", Guard{}, request{url: "http://example.net/ws", origin: []string{"https://example.net"}, trusted: true, header: map[string]string{"X-Forwarded-Port": "8443"}}, true},
		{"a plain-http page, the trusted proxy's request plain, its connection to Caddy TLS", Guard{}, request{url: "https://example.net/ws", origin: []string{"http://example.net"}, trusted: true, header: map[string]string{"X-Forwarded-Proto": "http"}}, true},
		{"an app's own scheme", Guard{}, request{url: "http://localhost/ws", origin: []string{"capacitor://localhost"}}, false},
		{"another tenant, a name of hosts", Guard{Hosts: []string{"a.example.com", "b.example.com"}}, request{url: "http://a.example.com/ws", origin: []string{"https://b.example.com"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.guard
			if err := g.Prepare(zap.NewNop()); err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", tc.req.url, nil)
			r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: tc.req.trusted}))
			switch {
			case tc.req.http2:
				r.Method, r.ProtoMajor = http.MethodConnect, 2
				r.Header.Set(":protocol", "websocket")
			case !tc.req.notWS:
				r.Header.Set("Upgrade", "websocket")
				r.Header.Set("Connection", "Upgrade")
			}
			r.Header["Origin"] = tc.req.origin
			for k, v := range tc.req.header {
				r.Header.Set(k, v)
			}
			err := g.Check(r)
			var he caddyhttp.HandlerError
			switch {
			case tc.ok && err != nil:
				t.Errorf("refused: %v", err)
			case !tc.ok && (!errors.As(err, &he) || he.StatusCode != http.StatusForbidden):
				t.Errorf("got %v, want 403", err)
			case !tc.ok && !strings.Contains(err.Error(), "websocket_origins"):
				t.Errorf("the refusal does not say what to do: %v", err)
			}
		})
	}
}

// TestWebSocketOriginsOption: what websocket_origins accepts.
func TestWebSocketOriginsOption(t *testing.T) {
	for _, tc := range []struct {
		origins []string
		ok      bool
	}{
		{[]string{"https://app.example.com", "http://localhost:3000", "http://[::1]:8080", "*"}, true},
		{[]string{"app.example.com"}, false},
		{[]string{"https://app.example.com/path"}, false},
		{[]string{"https://"}, false},
		{[]string{"null"}, false},
		{[]string{"https://*.example.com"}, false},
	} {
		g := Guard{WebSocketOrigins: tc.origins}
		err := g.Prepare(zap.NewNop())
		if (err == nil) != tc.ok {
			t.Errorf("%v: %v", tc.origins, err)
		}
	}
}

// TestWebSocketOriginAllowedByTheSitesGuard: an origin the site's guard
// directive lists is not refused by the app's own guard (the asgi
// handler's, which has no list of its own): both judge the opening.
func TestWebSocketOriginAllowedByTheSitesGuard(t *testing.T) {
	for _, origins := range [][]string{{"https://app.example.com"}, {"*"}} {
		site, app := Guard{WebSocketOrigins: origins}, Guard{}
		siteAllowsTheAppsOrigin(t, &site, &app)
	}
	// only a listed origin is passed on: what one guard takes for its own
	// site (a name of its hosts) the other judges by its own hosts
	site, app := Guard{Hosts: []string{"example.net", "app.example.com"}}, Guard{Hosts: []string{"example.net"}}
	prepare(t, &site, &app)
	r := appOpening()
	if err := site.Check(r); err != nil {
		t.Fatalf("the site's guard: %v", err)
	}
	if err := app.Check(r); err == nil {
		t.Error("the app's guard took an origin for its own site because the site's guard did")
	}
}

func siteAllowsTheAppsOrigin(t *testing.T, site, app *Guard) {
	prepare(t, site, app)
	r := appOpening()
	if err := site.Check(r); err != nil {
		t.Fatalf("the site's guard: %v", err)
	}
	if err := app.Check(r); err != nil {
		t.Errorf("the app's guard refused what the site's allowed: %v", err)
	}
	if err := app.Check(appOpening()); err == nil {
		t.Error("the app's guard alone let another site's page in")
	}
}

// prepare prepares guards for a test.
func prepare(t *testing.T, guards ...*Guard) {
	t.Helper()
	for _, g := range guards {
		if err := g.Prepare(zap.NewNop()); err != nil {
			t.Fatal(err)
		}
	}
}

// appOpening is a WebSocket opening of example.net by a page of
// https://app.example.com, with the vars map Caddy gives each request.
func appOpening() *http.Request {
	r := httptest.NewRequest("GET", "http://example.net/ws", nil)
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Origin", "https://app.example.com")
	return r
}

// TestRefusalsQuoteNoMarkup: the guard's refusals quote what the client
// sent without markup in it (a handle_errors that writes {err.message}
// into an HTML page would run it): the host, a trusted proxy's header, an
// Origin.
func TestRefusalsQuoteNoMarkup(t *testing.T) {
	const script = `<script>alert("x")</script>&amp;`
	g := Guard{Hosts: []string{"example.net"}}
	if err := g.Prepare(zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		prep func(r *http.Request)
	}{
		{"Host", func(r *http.Request) { r.Host = "x" + script }},
		{"X-Forwarded-Prefix", func(r *http.Request) { r.Header.Set("X-Forwarded-Prefix", "//"+script) }},
		{"X-Forwarded-Host", func(r *http.Request) { r.Header.Set("X-Forwarded-Host", script) }},
		{"Origin", func(r *http.Request) {
			r.Header.Set("Upgrade", "websocket")
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Origin", "https://"+script)
		}},
	} {
		r := httptest.NewRequest("GET", "http://example.net/", nil)
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.TrustedProxyVarKey: true}))
		tc.prep(r)
		err := g.Check(r)
		if err == nil {
			t.Errorf("%s: not refused", tc.name)
			continue
		}
		if strings.ContainsAny(err.Error(), "<>&") {
			t.Errorf("%s: the refusal holds markup: %v", tc.name, err)
		}
	}
}
