package ddns

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Credentials of the providers in the table below.
const (
	tsigKey    = "c2VjcmV0LXRzaWcta2V5LWZvci10ZXN0cw+/w=="
	cfToken    = "cfTOKENabcdefghijklmnopqrstuvwxyz012345"
	cfZone     = "zoneTOKEN-0123456789-abcdefghijklmnopq"
	duckToken  = "a7c4d2e0-1111-2222-3333-444455556666"
	dynPass    = "hunter2-dyn"
	envKey     = "from-the-environment-8d2f1a"
	ipSrcToken = "ipsrc-tok-93bd"
	cmdToken   = "cmd-tok-51aa77"
)

func TestRedactor(t *testing.T) {
	t.Setenv("HEARTH_TEST_DDNS_KEY", envKey)
	for _, tc := range []struct {
		name     string
		provider string
		sources  []IPSource
		in       string
		gone     []string // must not be in the output
		kept     []string // must still be there
	}{
		{"rfc2136 key echoed", `{"name":"rfc2136","key_name":"hearth-test","key_alg":"hmac-sha256","key":"` + tsigKey + `","server":"127.0.0.1:53"}`, nil,
			"dns response error code \"REFUSED\" (5): Other (0): key hearth-test " + tsigKey + " rejected by 127.0.0.1:53",
			[]string{tsigKey}, []string{"REFUSED", "hearth-test", "127.0.0.1:53"}},
		{"rfc2136 key URL-escaped and quoted", `{"name":"rfc2136","key":"` + tsigKey + `"}`, nil,
			"got " + url.QueryEscape(tsigKey) + " and " + fmt.Sprintf("%q", tsigKey),
			[]string{tsigKey, url.QueryEscape(tsigKey), "c2VjcmV0"}, nil},
		{"rfc2136 key from a placeholder", `{"name":"rfc2136","key":"{env.HEARTH_TEST_DDNS_KEY}"}`, nil,
			"bad key " + envKey, []string{envKey}, []string{"bad key"}},
		{"cloudflare provision echo", `{"name":"cloudflare","api_token":"` + cfToken + `","zone_token":"` + cfZone + `"}`, nil,
			"provision dns.providers.cloudflare: API token '" + cfToken + "' appears invalid; zone " + cfZone,
			[]string{cfToken, cfZone}, []string{"appears invalid"}},
		{"cloudflare error echoing the request", `{"name":"cloudflare","api_token":"` + cfToken + `"}`, nil,
			`got error status: HTTP 403: [{Code:10000 Message:Authentication error; request had Authorization: Bearer ` + cfToken + `}]`,
			[]string{cfToken}, []string{"HTTP 403", "Code:10000"}},
		{"duckdns URL", `{"name":"duckdns","token":"` + duckToken + `","server":"http://127.0.0.1:9"}`, nil,
			`Get "http://127.0.0.1:9/update?domains=myhome&token=` + duckToken + `&ip=203.0.113.1": dial tcp 127.0.0.1:9: connect: connection refused`,
			[]string{duckToken, "domains=myhome"}, []string{"http://127.0.0.1:9/update?", "connection refused"}},
		{"dyndns2 password echoed", `{"name":"dyndns2","server":"https://dyn.example","username":"me","password":"` + dynPass + `"}`, nil,
			`dyndns2: unexpected reply "denied for me:` + dynPass + `" for home.example.net`,
			[]string{dynPass}, []string{"unexpected reply", "home.example.net"}},
		{"ip_source query value echoed alone", `{"name":"rfc2136","key":"k"}`, []IPSource{{Source: "http", URL: "https://ip.example/?token=" + ipSrcToken}},
			"http source: the service says the token " + ipSrcToken + " is unknown",
			[]string{ipSrcToken}, []string{"http source", "is unknown"}},
		{"command source with a URL", `{}`, []IPSource{{Source: "command", Command: []string{"curl", "-s", "https://ip.example/?key=" + cmdToken}}},
			"command source: `curl -s https://ip.example/?key=" + cmdToken + "`: exit status 6",
			[]string{cmdToken}, []string{"exit status 6", "https://ip.example/?"}},
		{"duckdns reply echoing the token, cut short", `{"name":"duckdns","token":"` + duckToken + `"}`, nil,
			fmt.Sprintf("duckdns: unexpected reply %q for myhome", truncate("bad token "+duckToken, 30)),
			[]string{duckToken[:20]}, []string{"unexpected reply", "bad token"}},
		{"a message ending in the start of a key", `{"name":"rfc2136","key":"` + tsigKey + `"}`, nil,
			"key was " + tsigKey[:12], []string{tsigKey[:12]}, []string{"key was"}},
		// whatever the config: what looks like a credential
		{"user info in a URL", `{}`, nil, `Get "https://user:pa55word@dyn.example/nic/update": EOF`,
			[]string{"pa55word", "user:"}, []string{"dyn.example/nic/update", "EOF"}},
		{"a pair named like a credential", `{}`, nil, "request body was password=opensesame1&api_key=zzzzyyyy&hostname=h.example",
			[]string{"opensesame1", "zzzzyyyy"}, []string{"hostname=h.example"}},
		{"an Authorization header map", `{}`, nil, "headers map[Authorization:[Bearer abcdEFGH1234ijkl] User-Agent:[x]]",
			[]string{"abcdEFGH1234ijkl"}, []string{"User-Agent"}},
		{"an Authorization header in JSON", `{}`, nil, `{"headers":{"authorization":"Basic bWU6c2VjcmV0"}}`,
			[]string{"bWU6c2VjcmV0"}, []string{"headers"}},
		{"API key and token headers", `{}`, nil, `request headers: {"X-Api-Key": "k3y-material-77", "Authorization": "Token t0k3n-material-88"}`,
			[]string{"k3y-material-77", "t0k3n-material-88"}, []string{"request headers", "X-Api-Key"}},
		{"a bare Bearer credential", `{}`, nil, "echo: Bearer 0123456789abcdef0123 was refused",
			[]string{"0123456789abcdef0123"}, []string{"was refused"}},
		{"ordinary words stay", `{"name":"rfc2136","key":"k"}`, nil, "dns: bad authentication; Basic authentication failed; NOTAUTH",
			nil, []string{"dns: bad authentication; Basic authentication failed; NOTAUTH"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRedactor(json.RawMessage(tc.provider), tc.sources)
			out := r.text(tc.in)
			for _, s := range tc.gone {
				if strings.Contains(out, s) {
					t.Errorf("%q is still in %q", s, out)
				}
			}
			for _, s := range tc.kept {
				if !strings.Contains(out, s) {
					t.Errorf("%q is gone from %q", s, out)
				}
			}
		})
	}
}

// TestRedactionWhereErrorsAreRecorded: the app's logger and its records'
// last_error hold no credential, whatever the field type; errors.Is still
// sees through a redacted error.
func TestRedactionWhereErrorsAreRecorded(t *testing.T) {
	raw := json.RawMessage(`{"name":"cloudflare","api_token":"` + cfToken + `"}`)
	core, logs := observer.New(zapcore.DebugLevel)
	a := &App{Domains: map[string][]string{"example.net": {"home"}}, state: &state{records: map[string]*recordState{}}}
	a.redact = newRedactor(raw, nil)
	a.logger = a.redact.logger(zap.New(core)).With(zap.String("with", "token "+cfToken))
	failure := fmt.Errorf("got error status: HTTP 403: echo %s: %w", cfToken, ErrStopped)
	a.logger.Error("updating the record "+cfToken, zap.Error(failure), zap.String("s", cfToken), zap.Stringer("u", &url.URL{Scheme: "https", Host: "h", RawQuery: "token=" + cfToken}), zap.Any("m", map[string]string{"k": cfToken}))
	a.record("example.net", "home", "ipv4", func(r *recordState) { r.LastError = failure.Error() })
	a.recordAll("ipv6", func(r *recordState) { r.LastError = failure.Error() })
	text := fmt.Sprint(logs.All()[0].Entry.Message, logs.All()[0].Context)
	for _, r := range a.state.snapshot(a.Domains) {
		text += r.LastError
		if !strings.Contains(r.LastError, "HTTP 403") {
			t.Errorf("last_error %q lost the error", r.LastError)
		}
	}
	if strings.Contains(text, cfToken) || !strings.Contains(text, redacted) {
		t.Errorf("recorded: %s", text)
	}
	if !errors.Is(a.redact.err(failure), ErrStopped) {
		t.Errorf("errors.Is no longer sees ErrStopped")
	}
}

// The redactor the ddns module registers for certificate errors without a
// ddns app (no credentials known) removes what looks like a credential.
func TestRedactorOfNoConfig(t *testing.T) {
	got := (*redactor)(nil).text(`presenting the record: GET https://api.example/zones?key=q-secret-55 Authorization: Bearer abcdef0123456789 token=t-secret-66`)
	for _, secret := range []string{"q-secret-55", "abcdef0123456789", "t-secret-66"} {
		if strings.Contains(got, secret) {
			t.Errorf("%q shows %s", got, secret)
		}
	}
	if !strings.Contains(got, "presenting the record") {
		t.Errorf("the message itself is gone: %q", got)
	}
}

// TestRedactedLogsKeepTheirLevels: Caddy's logger is a tee of its logs,
// each with its own level (and sampling), which only that log's Check
// applies. The redaction wrapped the tee and wrote every entry through it,
// so an error-only log got the app's INFO lines too. Now each log takes
// what its level allows, redacted, and the With fields stay redacted.
func TestRedactedLogsKeepTheirLevels(t *testing.T) {
	raw := json.RawMessage(`{"name":"cloudflare","api_token":"` + cfToken + `"}`)
	infoCore, infoLogs := observer.New(zapcore.InfoLevel)
	errorCore, errorLogs := observer.New(zapcore.ErrorLevel)
	logger := newRedactor(raw, nil).logger(zap.New(zapcore.NewTee(infoCore, errorCore))).With(zap.String("with", "token "+cfToken))
	logger.Debug("nobody takes this " + cfToken)
	logger.Info("record updated "+cfToken, zap.String("s", cfToken))
	logger.Error("update failed "+cfToken, zap.Error(errors.New("echo "+cfToken)))
	if n := errorLogs.Len(); n != 1 || errorLogs.All()[0].Level != zapcore.ErrorLevel {
		t.Errorf("the error-only log got %d entries: %v", n, errorLogs.All())
	}
	if n := infoLogs.Len(); n != 2 {
		t.Errorf("the info log got %d entries, want 2: %v", n, infoLogs.All())
	}
	for _, e := range append(infoLogs.All(), errorLogs.All()...) {
		if text := fmt.Sprint(e.Entry.Message, e.Context); strings.Contains(text, cfToken) || !strings.Contains(text, redacted) {
			t.Errorf("logged: %s", text)
		}
	}
}
