package ddns

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/caddy-dns/rfc2136"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

// dnsPolicies provisions a config of the ddns app (for home.example.net and
// example.net, through provider) beside a tls app, and returns the tls
// app's automation policies afterwards.
func dnsPolicies(t *testing.T, provider, ddnsExtra, tlsApp string) []*caddytls.AutomationPolicy {
	t.Helper()
	cfg := &caddy.Config{AppsRaw: caddy.ModuleMap{
		"ddns": json.RawMessage(`{"provider": ` + provider + `, "domains": {"example.net": ["@", "home"]},
			"ip_sources": [{"source": "static", "ip": "203.0.113.1"}]` + ddnsExtra + `}`),
	}}
	if tlsApp != "" {
		cfg.AppsRaw["tls"] = json.RawMessage(tlsApp)
	}
	ctx, err := caddy.ProvisionContext(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ctx.App("ddns"); err != nil {
		t.Fatal(err)
	}
	tlsAny, err := ctx.App("tls")
	if err != nil {
		t.Fatal(err)
	}
	if a := tlsAny.(*caddytls.TLS).Automation; a != nil {
		return a.Policies
	}
	return nil
}

const rfc2136Provider = `{"name": "rfc2136", "key_name": "k", "key_alg": "hmac-sha256", "key": "c2VjcmV0", "server": "127.0.0.1:53"}`

// issuerOf is the JSON of a policy's first issuer's ACME settings.
func issuerOf(t *testing.T, ap *caddytls.AutomationPolicy) map[string]any {
	t.Helper()
	if len(ap.Issuers) != 1 {
		t.Fatalf("policy %v has %d issuers", ap.SubjectsRaw, len(ap.Issuers))
	}
	data, _ := json.Marshal(ap.Issuers[0].(acmeCapable).GetACMEIssuer())
	out := map[string]any{}
	json.Unmarshal(data, &out)
	return out
}

func TestDNSChallengePolicy(t *testing.T) {
	// Caddy's defaults (the catch-all policy of the global options acme_ca,
	// acme_ca_root, email) and tls_resolvers carry over; the issuer solves
	// only DNS-01, through the ddns provider
	root := writeTestRoot(t)
	policies := dnsPolicies(t, rfc2136Provider, "", `{
		"resolvers": ["127.0.0.1:5353"],
		"automation": {"policies": [{"issuers": [{"module": "acme", "ca": "https://ca.test/dir", "email": "me@example.net", "trusted_roots_pem_files": ["`+root+`"]}], "renewal_window_ratio": 0.5}]}}`)
	if len(policies) != 2 || !slices.Equal(policies[0].SubjectsRaw, []string{"example.net", "home.example.net"}) && !slices.Equal(policies[0].SubjectsRaw, []string{"home.example.net", "example.net"}) {
		t.Fatalf("policies: %v", policies)
	}
	ours := policies[0]
	iss := issuerOf(t, ours)
	if iss["ca"] != "https://ca.test/dir" || iss["email"] != "me@example.net" || !strings.Contains(mustJSON(iss["trusted_roots_pem_files"]), root) {
		t.Errorf("the global options did not carry over: %v", iss)
	}
	challenges := mustJSON(iss["challenges"])
	if !strings.Contains(challenges, `"dns":`) || strings.Contains(challenges, `"http"`) || !strings.Contains(challenges, "127.0.0.1:5353") {
		t.Errorf("challenges %s: want only dns, with the tls app's resolvers", challenges)
	}
	acme := ours.Issuers[0].(acmeCapable).GetACMEIssuer()
	if acme.Challenges == nil || acme.Challenges.DNS == nil {
		t.Fatalf("no DNS challenge: %+v", acme)
	}
	if ours.RenewalWindowRatio != 0.5 {
		t.Errorf("renewal_window_ratio %v did not carry over", ours.RenewalWindowRatio)
	}
	if len(policies[1].SubjectsRaw) != 0 {
		t.Errorf("the catch-all policy moved: %v", policies[1].SubjectsRaw)
	}

	// no tls app configured: Let's Encrypt by default, still DNS-01
	policies = dnsPolicies(t, rfc2136Provider, "", "")
	if len(policies) != 1 || len(policies[0].SubjectsRaw) != 2 || !strings.Contains(mustJSON(issuerOf(t, policies[0])["challenges"]), `"dns"`) {
		t.Errorf("without a tls app: %v", policies)
	}

	// a site's own tls settings keep that name
	policies = dnsPolicies(t, rfc2136Provider, "", `{"automation": {"policies": [{"subjects": ["home.example.net"], "issuers": [{"module": "internal"}]}]}}`)
	for _, ap := range policies {
		if slices.Contains(ap.SubjectsRaw, "example.net") && slices.Contains(ap.SubjectsRaw, "home.example.net") {
			t.Errorf("the DNS challenge took over a site's own policy: %v", ap.SubjectsRaw)
		}
	}
	if len(policies) != 2 || !slices.Equal(policies[1].SubjectsRaw, []string{"example.net"}) && !slices.Equal(policies[0].SubjectsRaw, []string{"example.net"}) {
		t.Errorf("policies with a site's own: %v / %v", policies[0].SubjectsRaw, policies[len(policies)-1].SubjectsRaw)
	}

	// turned off; or a provider that cannot create TXT records (dyndns2)
	for _, tc := range []struct{ provider, extra string }{
		{rfc2136Provider, `, "dns_challenge": "off"`},
		{`{"name": "dyndns2", "server": "https://dyn.example.net", "username": "u", "password": "p"}`, ""},
	} {
		if policies := dnsPolicies(t, tc.provider, tc.extra, ""); len(policies) != 0 {
			t.Errorf("%s%s: policies %v", tc.provider, tc.extra, policies[0].SubjectsRaw)
		}
	}
}

// writeTestRoot writes a self-signed CA certificate, as acme_ca_root names one.
func writeTestRoot(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "root.pem")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return path
}

func mustJSON(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}
