package ddns

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/hearth"
)

// HTTPS for the names the app keeps pointed here. A home server usually
// forwards one port that is neither 80 nor 443 (ISPs block those), so the
// CA can reach neither the HTTP-01 nor the TLS-ALPN-01 challenge and no
// certificate is ever issued. The DNS-01 challenge needs no port at all,
// and the app already holds a DNS provider for exactly those names: when
// the provider can create and delete records (certmagic.DNSProvider), the
// app adds an automation policy to Caddy's tls app for its names, whose
// ACME issuer solves DNS-01 through the same provider configuration.
//
// The policy copies Caddy's defaults for the other names (the catch-all
// policy: acme_ca, acme_ca_root, email, acme_eab, key_type,
// renewal_window_ratio, …) and the tls app's resolvers (tls_resolvers);
// a name a site's own `tls` settings cover keeps them; `dns_challenge off`
// turns this off.

// DNSChallengeOff is the value of DNSChallenge that turns it off.
const DNSChallengeOff = "off"

// acmeCapable is an issuer that is, or wraps, an ACME issuer.
type acmeCapable interface {
	GetACMEIssuer() *caddytls.ACMEIssuer
}

// setUpDNSChallenge adds the DNS-01 policy for the app's names, or warns
// when sites on ports a CA cannot reach will get no certificate.
func (a *App) setUpDNSChallenge(ctx caddy.Context, provider any, providerJSON json.RawMessage) error {
	if a.DNSChallenge == DNSChallengeOff || a.DryRun {
		return nil // dry_run writes nothing to DNS, TXT records included
	}
	if !hearth.SolvesDNSChallenge(provider) {
		a.warnUnreachableChallenges(ctx, provider)
		return nil
	}
	tlsAny, err := ctx.App("tls")
	if err != nil {
		return fmt.Errorf("ddns: loading the tls app for the DNS challenge: %w", err)
	}
	tlsApp := tlsAny.(*caddytls.TLS)
	var names []string
	for _, name := range a.names() {
		if !coveredByOwnPolicy(tlsApp, name) && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	base := catchAllPolicy(tlsApp)
	issuer, err := dnsIssuer(base, providerJSON, tlsApp.Resolvers)
	if err != nil {
		return fmt.Errorf("ddns: the DNS challenge's issuer: %w", err)
	}
	policy := &caddytls.AutomationPolicy{SubjectsRaw: names, IssuersRaw: []json.RawMessage{issuer}}
	if base != nil {
		policy.KeyType = base.KeyType
		policy.RenewalWindowRatio = base.RenewalWindowRatio
		policy.MustStaple = base.MustStaple
		policy.ReusePrivateKeys = base.ReusePrivateKeys
		policy.DisableOCSPStapling = base.DisableOCSPStapling
		policy.OCSPOverrides = base.OCSPOverrides
		policy.StorageRaw = base.StorageRaw
	}
	if err := tlsApp.AddAutomationPolicy(policy); err != nil {
		return fmt.Errorf("ddns: adding the DNS challenge for %s: %w", strings.Join(names, ", "), err)
	}
	a.logger.Info("certificates for these names are obtained with the ACME DNS challenge through the ddns provider; no port needs to be forwarded for it",
		zap.Strings("names", names))
	return nil
}

// coveredByOwnPolicy reports whether a policy with subjects (a site's own
// `tls` settings, `tls internal`, …) covers name.
func coveredByOwnPolicy(tlsApp *caddytls.TLS, name string) bool {
	if tlsApp.Automation == nil {
		return false
	}
	for _, ap := range tlsApp.Automation.Policies {
		for _, subject := range ap.SubjectsRaw {
			if certmagic.MatchWildcard(name, subject) {
				return true
			}
		}
	}
	return false
}

// catchAllPolicy is the policy without subjects: the defaults the
// Caddyfile's global options (acme_ca, email, …) set.
func catchAllPolicy(tlsApp *caddytls.TLS) *caddytls.AutomationPolicy {
	if tlsApp.Automation == nil {
		return nil
	}
	for _, ap := range tlsApp.Automation.Policies {
		if len(ap.SubjectsRaw) == 0 {
			return ap
		}
	}
	return nil
}

// dnsIssuer is the JSON of an ACME issuer like the catch-all policy's
// first one (its CA, trusted roots, email, account binding, …) whose only
// challenge is DNS-01 through provider; resolvers (the tls app's) are
// used unless that issuer names its own.
func dnsIssuer(base *caddytls.AutomationPolicy, provider json.RawMessage, resolvers []string) (json.RawMessage, error) {
	fields := map[string]any{}
	if base != nil {
		for _, iss := range base.Issuers {
			if acme, ok := iss.(acmeCapable); ok {
				data, err := json.Marshal(acme.GetACMEIssuer())
				if err != nil {
					return nil, err
				}
				if err := json.Unmarshal(data, &fields); err != nil {
					return nil, err
				}
				break
			}
		}
	}
	dns := map[string]any{}
	if challenges, ok := fields["challenges"].(map[string]any); ok {
		if own, ok := challenges["dns"].(map[string]any); ok {
			dns = own // propagation settings, resolvers, ttl
		}
	}
	dns["provider"] = provider
	if _, ok := dns["resolvers"]; !ok && len(resolvers) > 0 {
		dns["resolvers"] = resolvers
	}
	fields["challenges"] = map[string]any{"dns": dns}
	fields["module"] = "acme"
	return json.Marshal(fields)
}

// warnUnreachableChallenges: a provider that cannot set TXT records
// (dyndns2) cannot solve DNS-01, so an HTTPS site of the app's names on a
// port other than 443 gets a certificate only if port 80 reaches Caddy.
func (a *App) warnUnreachableChallenges(ctx caddy.Context, provider any) {
	httpAny, err := ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	httpApp := httpAny.(*caddyhttp.App)
	httpsPort := httpApp.HTTPSPort
	if httpsPort == 0 {
		httpsPort = caddyhttp.DefaultHTTPSPort
	}
	httpPort := httpApp.HTTPPort
	if httpPort == 0 {
		httpPort = caddyhttp.DefaultHTTPPort
	}
	for _, site := range httpsSites(httpApp, httpPort) {
		if site.port == fmt.Sprint(httpsPort) || !slices.Contains(a.names(), site.host) {
			continue
		}
		a.logger.Warn(fmt.Sprintf("%s:%s will get no certificate unless port %d of %s reaches this Caddy: the CA checks its challenges on ports 80 and 443 only, and the ddns provider (%T) cannot set the TXT records of the DNS challenge, which needs no port; forward port %d to this machine (and let Caddy bind it), or use a DNS provider that can set TXT records (rfc2136, cloudflare, duckdns)",
			site.host, site.port, httpPort, site.host, provider, httpPort),
			zap.String("site", site.host+":"+site.port))
	}
}

type hostPort struct{ host, port string }

// httpsSites lists the hosts of the HTTP app's servers that serve HTTPS
// (every server not on the HTTP port, unless automatic HTTPS is off), with
// their ports.
func httpsSites(httpApp *caddyhttp.App, httpPort int) []hostPort {
	var out []hostPort
	for _, srv := range httpApp.Servers {
		if srv.AutoHTTPS != nil && srv.AutoHTTPS.Disabled {
			continue
		}
		for _, addr := range srv.Listen {
			na, err := caddy.ParseNetworkAddress(addr)
			if err != nil || !na.IsUnixNetwork() && na.StartPort == uint(httpPort) {
				continue
			}
			for _, route := range srv.Routes {
				for _, set := range route.MatcherSets {
					for _, m := range set {
						if hosts, ok := m.(*caddyhttp.MatchHost); ok {
							for _, h := range *hosts {
								out = append(out, hostPort{strings.ToLower(h), fmt.Sprint(na.StartPort)})
							}
						}
					}
				}
			}
		}
	}
	return out
}
