package hearth

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"

	hearthapp "github.com/hearth-dev/hearth/modules/hearth"
)

// TestDNSProviders checks every DNS provider module this build holds (the
// binary users run registers the same ones) against what Caddy and
// Hearth may ask of it: Caddy's ACME and ZeroSSL issuers and the tls
// app's `dns` option assert certmagic.DNSProvider (a provider without it
// made `caddy validate` panic), the Caddyfile's `acme_dns` and `provider`
// need caddyfile.Unmarshaler, the ddns app needs libdns.RecordSetter.
// Whether the provider really solves the DNS challenge is what Hearth says
// (SolvesDNSChallenge: the ddns app's DNS-01 policy and `caddy hearth
// ports` follow it); one that cannot refuses to add a TXT record with the
// reason. Then each provider, with made-up credentials, is named for
// Caddy's DNS challenge in a config that must validate. A provider added
// to the build without a row here fails the test.
func TestDNSProviders(t *testing.T) {
	providers := map[string]struct {
		solves bool
		config string // its JSON fields for provisioning
	}{
		"rfc2136":    {true, `"key_name": "k.", "key_alg": "hmac-sha256", "key": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "server": "127.0.0.1:53"`},
		"cloudflare": {true, `"api_token": "notARealToken0123456789notARealToken01234"`},
		"duckdns":    {true, `"token": "not-a-real-token", "server": "http://127.0.0.1:9"`},
		"dyndns2":    {false, `"server": "http://127.0.0.1:9", "username": "me", "password": "not-real"`},
	}
	modules := caddy.GetModules("dns.providers")
	if len(modules) == 0 {
		t.Fatal("no DNS provider module is registered")
	}
	for _, info := range modules {
		name := info.ID.Name()
		t.Run(name, func(t *testing.T) {
			want, ok := providers[name]
			if !ok {
				t.Fatalf("dns.providers.%s is in the build but not in this test: add it with whether it solves the DNS challenge", name)
			}
			mod := info.New()
			if _, ok := mod.(certmagic.DNSProvider); !ok {
				t.Errorf("%T is not a certmagic.DNSProvider: naming it in acme_dns or the tls app's dns option makes Caddy panic", mod)
			}
			if _, ok := mod.(caddyfile.Unmarshaler); !ok {
				t.Errorf("%T cannot be written in a Caddyfile (no UnmarshalCaddyfile)", mod)
			}
			if _, ok := mod.(libdns.RecordSetter); !ok {
				t.Errorf("%T cannot set records: the ddns app cannot use it", mod)
			}
			if got := hearthapp.SolvesDNSChallenge(mod); got != want.solves {
				t.Errorf("SolvesDNSChallenge(%T) = %v, want %v", mod, got, want.solves)
			}
			if appender, ok := mod.(libdns.RecordAppender); ok && !want.solves {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, err := appender.AppendRecords(ctx, "example.test.", []libdns.Record{libdns.TXT{Name: "_acme-challenge.home", Text: "x"}})
				if err == nil || !strings.Contains(err.Error(), "TXT") {
					t.Errorf("%T added a TXT record it cannot keep, or refused without the reason: %v", mod, err)
				}
			}
			tls := fmt.Sprintf(`{"automation": {"policies": [{"subjects": ["home.example.test"],
				"issuers": [{"module": "acme", "challenges": {"dns": {"provider": {"name": %q, %s}}}}]}]}}`, name, want.config)
			if err := caddy.Validate(&caddy.Config{AppsRaw: caddy.ModuleMap{"tls": json.RawMessage(tls)}}); err != nil {
				t.Errorf("a config naming %s for the DNS challenge does not validate: %v", name, err)
			}
		})
	}
}
