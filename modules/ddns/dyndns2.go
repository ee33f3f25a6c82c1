package ddns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/libdns/libdns"

	"github.com/hearth-dev/hearth/modules/hearth"
)

func init() {
	caddy.RegisterModule(DynDNS2{})
	caddy.RegisterModule(DuckDNS{})
}

// userAgent identifies Hearth to update services (dyndns2 refuses generic
// agents with badagent).
const userAgent = "Hearth-DDNS/1.0 (Caddy; +https://github.com/hearth-dev/hearth)"

// ErrStopped marks a refusal that must not be retried until the config
// changes (the service said the credentials, host or client are wrong).
var ErrStopped = errors.New("updates stopped until the config changes")

// updateService is what the dyndns2 and duckdns providers share: one HTTP
// GET per record, remembered answers, a stop after fatal replies and a
// pause when the service asks for one. A stop is the provider's of one
// config (any reload tries again: the user may have fixed the account on
// the service's site); what the service answered and a pause it asked for
// are kept across reloads for as long as the provider's settings stay
// (serviceMemory).
type updateService struct {
	mu      sync.Mutex
	stopped error // a fatal reply: no more requests
	memory  *serviceMemory
}

// serviceMemory is what an update service said, kept across reloads.
type serviceMemory struct {
	mu         sync.Mutex
	nochg      map[string]string // host and family (nochgKey) → IP the service said was already set
	pausedTill time.Time         // no request before this time
	pausedFor  error             // why
}

// Destruct lets the memory go with the last config that used it.
func (*serviceMemory) Destruct() error { return nil }

// do runs the request unless the service is stopped, paused, or already
// holds ip for host (a repeated nochg counts as abuse to dyndns2). A
// request that fails with a waitError pauses the service.
func (s *updateService) do(ctx context.Context, host, ip string, req func(context.Context) error) error {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped != nil {
		return stopped
	}
	m := s.memory
	m.mu.Lock()
	if left := time.Until(m.pausedTill); left > 0 {
		err := fmt.Errorf("%w; not asking it again for another %s", m.pausedFor, left.Round(time.Second))
		m.mu.Unlock()
		return err
	}
	if m.nochg[nochgKey(host, ip)] == ip {
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	err := req(ctx)
	var wait *waitError
	if errors.As(err, &wait) {
		m.mu.Lock()
		m.pausedTill, m.pausedFor = time.Now().Add(wait.after), wait.err
		m.mu.Unlock()
	}
	return err
}

// serviceMemories holds the memories of the loaded configs' update
// services, by provider and settings: a reload that keeps them sends
// neither a repeated nochg (dyndns2 takes that for abuse) nor a request
// the service asked to wait for.
var serviceMemories = caddy.NewUsagePool()

// useUpdateService returns an update service for provider with these
// settings, with their memory, and the key to release that under
// (releaseUpdateService).
func useUpdateService(provider string, settings ...string) (*updateService, string) {
	key := hearth.PoolKey(provider, settings)
	v, _, _ := serviceMemories.LoadOrNew(key, func() (caddy.Destructor, error) { return new(serviceMemory), nil })
	return &updateService{memory: v.(*serviceMemory)}, key
}

// releaseUpdateService drops a provider's hold on its service's memory.
func releaseUpdateService(key string) {
	if key != "" {
		_, _ = serviceMemories.Delete(key)
	}
}

// waitError is a reply that asks the client to wait before it asks again
// (dyndns2's 911, an HTTP 429 or 503 with Retry-After).
type waitError struct {
	after time.Duration
	err   error
}

func (e *waitError) Error() string { return e.err.Error() }
func (e *waitError) Unwrap() error { return e.err }

// serviceTroubleWait is how long an update service in trouble (dyndns2's
// 911 and dnserr) is left alone: No-IP's client rules ask for 30 minutes.
const serviceTroubleWait = 30 * time.Minute

// retryAfter reads a Retry-After header (seconds, or an HTTP date),
// bounded to [1 minute, maxServiceWait]; 0 when it has none.
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(min(max(secs, 0), int64(maxServiceWait/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	} else {
		return 0
	}
	return min(max(d, time.Minute), maxServiceWait)
}

// maxServiceWait bounds a pause a service asks for: a buggy Retry-After
// must not stop the updates for a day.
const maxServiceWait = 2 * time.Hour

func (s *updateService) stop(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = fmt.Errorf("%w: %w", err, ErrStopped)
	return s.stopped
}

func (s *updateService) noChange(host, ip string) {
	m := s.memory
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nochg == nil {
		m.nochg = map[string]string{}
	}
	m.nochg[nochgKey(host, ip)] = ip
}

// nochgKey is what a nochg is remembered under: the host and the address
// family (its A and AAAA records are updated apart).
func nochgKey(host, ip string) string {
	if strings.Contains(ip, ":") {
		return host + " AAAA"
	}
	return host + " A"
}

// changed forgets the nochg of host: its address changed since, and the
// next update to that old address must go out (X, then Y, then X again).
func (s *updateService) changed(host, ip string) {
	m := s.memory
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.nochg, nochgKey(host, ip))
}

// checkServer refuses an update service's URL that would send the
// account's credentials in clear text: https, or plain http on loopback
// only (a local test server).
func checkServer(provider, server, example string) error {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" || u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("%s: server %q is not a URL, like %s", provider, server, example)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("%s: server %s is plain http: the password or token would cross the network readable by anyone on the way; use https://%s", provider, u.Redacted(), u.Host)
	}
	return nil
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// get sends one update request and returns the reply's text.
func get(ctx context.Context, u string, user, pass string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", userAgent)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := updateClient.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			// the error quotes a URL: the request's, or a redirect's Location
			// of any size; it names the request's, without its credentials.
			// The app redacts its own log, but Caddy's tls app logs a DNS
			// challenge's errors (duckdns's token is in the URL) as they are
			uerr.URL = withoutCredentials(u)
		}
		return "", errors.New(truncate(err.Error(), maxSourceError)) // an unparsable Location is quoted whole
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return "badauth", nil
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("the update service answered %s", truncate(resp.Status, 64))
		if wait := retryAfter(resp.Header); wait > 0 && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
			return "", &waitError{after: wait, err: err}
		}
		return "", err
	}
	return strings.TrimSpace(string(body)), nil
}

// withoutCredentials is the update URL u with its user information and
// the values of its credential parameters (token=, password=) replaced.
func withoutCredentials(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(the update URL)"
	}
	if parsed.User != nil {
		parsed.User = url.User(redacted)
	}
	params := strings.Split(parsed.RawQuery, "&")
	for i, param := range params {
		name, _, _ := strings.Cut(param, "=")
		if key, err := url.QueryUnescape(name); err != nil || secretField(key) {
			params[i] = name + "=" + redacted
		}
	}
	parsed.RawQuery = strings.Join(params, "&")
	return parsed.String()
}

// updateClient sends updates. It follows no redirect: an update carries
// credentials (Go keeps Basic auth across a redirect to another port or
// from https to http on the same host, and duckdns's token is in the URL),
// and a service that redirects elsewhere (its own loopback, Caddy's admin
// API) would have the reply's first bytes quoted in the error.
var updateClient = &http.Client{
	Transport: func() http.RoundTripper {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxResponseHeaderBytes = 64 << 10 // an answer is a word or two
		return t
	}(),
	CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		return fmt.Errorf("the update service redirected to %s://%s, which is not followed (the request carries credentials): set the provider's server to the address it redirects to", req.URL.Scheme, truncate(req.URL.Host, 100))
	},
}

// fqdn joins a zone-relative name and the zone.
func fqdn(name, zone string) string {
	zone = strings.TrimSuffix(zone, ".")
	if name == "@" || name == "" {
		return zone
	}
	return strings.TrimSuffix(name, ".") + "." + zone
}

// DynDNS2 updates records with the dyndns2 protocol that most routers,
// No-IP, Dynu and others speak: an authenticated GET of
// /nic/update?hostname=…&myip=….
type DynDNS2 struct {
	// Server is the service's base URL, such as https://dynupdate.no-ip.com.
	Server string `json:"server,omitempty"`
	// Username and Password authenticate (Basic auth).
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	svc    *updateService
	svcKey string
}

// CaddyModule returns the Caddy module information.
func (DynDNS2) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "dns.providers.dyndns2", New: func() caddy.Module { return new(DynDNS2) }}
}

// Provision replaces placeholders and validates.
func (p *DynDNS2) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	p.Server, p.Username, p.Password = repl.ReplaceAll(p.Server, ""), repl.ReplaceAll(p.Username, ""), repl.ReplaceAll(p.Password, "")
	if err := checkServer("dyndns2", p.Server, "https://dynupdate.no-ip.com"); err != nil {
		return err
	}
	if p.Username == "" || p.Password == "" {
		return errors.New("dyndns2: username and password are required")
	}
	p.svc, p.svcKey = useUpdateService("dyndns2", p.Server, p.Username, p.Password)
	return nil
}

// Cleanup releases the update service.
func (p *DynDNS2) Cleanup() error {
	releaseUpdateService(p.svcKey)
	return nil
}

// dyndns2Replies classifies the protocol's reply codes.
var dyndns2Replies = map[string]struct {
	ok, stop bool
	meaning  string
}{
	"good":     {ok: true, meaning: "updated"},
	"nochg":    {ok: true, meaning: "already set"},
	"badauth":  {stop: true, meaning: "the username or password is wrong"},
	"nohost":   {stop: true, meaning: "the host name does not exist in this account"},
	"notfqdn":  {stop: true, meaning: "the host name is not a fully qualified domain name"},
	"abuse":    {stop: true, meaning: "the service blocked updates for abuse"},
	"badagent": {stop: true, meaning: "the service refused this client"},
	"!donator": {stop: true, meaning: "the feature needs a paid account"},
	"dnserr":   {meaning: "the service's DNS failed; retrying in 30 minutes"},
	"911":      {meaning: "the service is in trouble; retrying in 30 minutes"},
}

// SetRecords sends one update per address record.
func (p *DynDNS2) SetRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	var done []libdns.Record
	for _, rec := range records {
		rr := rec.RR()
		host, ip := fqdn(rr.Name, zone), rr.Data
		err := p.svc.do(ctx, host, ip, func(ctx context.Context) error {
			q := url.Values{"hostname": {host}, "myip": {ip}}
			reply, err := get(ctx, strings.TrimSuffix(p.Server, "/")+"/nic/update?"+q.Encode(), p.Username, p.Password)
			if err != nil {
				return err
			}
			code, _, _ := strings.Cut(reply, " ")
			kind, known := dyndns2Replies[code]
			switch {
			case !known:
				return fmt.Errorf("dyndns2: unexpected reply %q for %s", truncate(reply, 80), host)
			case kind.stop:
				return p.svc.stop(fmt.Errorf("dyndns2 %s for %s: %s", code, host, kind.meaning))
			case !kind.ok: // 911, dnserr: the service is in trouble
				return &waitError{after: serviceTroubleWait, err: fmt.Errorf("dyndns2 %s for %s: %s", code, host, kind.meaning)}
			case code == "nochg":
				p.svc.noChange(host, ip)
			default: // good: the host has another address than the one nochg was said for
				p.svc.changed(host, ip)
			}
			return nil
		})
		if err != nil {
			return done, err
		}
		done = append(done, rec)
	}
	return done, nil
}

// errNoTXT is why dyndns2 cannot solve the ACME DNS challenge.
var errNoTXT = errors.New("dyndns2 updates addresses only and cannot create the TXT record of the ACME DNS challenge: " +
	"remove it from acme_dns or the site's `tls { dns … }`, and forward port 80 to this machine (HTTP challenge), " +
	"or use a DNS provider that can set TXT records (rfc2136, cloudflare, duckdns)")

// AppendRecords refuses: the protocol cannot set TXT records. It exists so
// that `acme_dns dyndns2` is an error that says so, not a panic in Caddy's
// type assertion to certmagic.DNSProvider.
func (p *DynDNS2) AppendRecords(context.Context, string, []libdns.Record) ([]libdns.Record, error) {
	return nil, errNoTXT
}

// DeleteRecords refuses, like AppendRecords.
func (p *DynDNS2) DeleteRecords(context.Context, string, []libdns.Record) ([]libdns.Record, error) {
	return nil, errNoTXT
}

// SolvesDNSChallenge reports that dyndns2 cannot solve the ACME DNS
// challenge, although it has the methods certmagic.DNSProvider asks for.
func (p *DynDNS2) SolvesDNSChallenge() bool { return false }

// UnmarshalCaddyfile parses `provider dyndns2 { server …; username …; password … }`.
func (p *DynDNS2) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalFields(d, map[string]*string{"server": &p.Server, "username": &p.Username, "password": &p.Password})
}

// DuckDNS updates records of duckdns.org names with Duck DNS's update API
// (GET /update?domains=…&token=…&ip=…, answered OK or KO).
type DuckDNS struct {
	// Token is the account's token.
	Token string `json:"token,omitempty"`
	// Server is the API's base URL. Default: https://www.duckdns.org.
	Server string `json:"server,omitempty"`

	svc    *updateService
	svcKey string
}

// CaddyModule returns the Caddy module information.
func (DuckDNS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "dns.providers.duckdns", New: func() caddy.Module { return new(DuckDNS) }}
}

// Provision replaces placeholders and validates.
func (p *DuckDNS) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	p.Token, p.Server = repl.ReplaceAll(p.Token, ""), repl.ReplaceAll(p.Server, "")
	if p.Server == "" {
		p.Server = "https://www.duckdns.org"
	}
	if err := checkServer("duckdns", p.Server, "https://www.duckdns.org"); err != nil {
		return err
	}
	if p.Token == "" {
		return errors.New("duckdns: token is required")
	}
	p.svc, p.svcKey = useUpdateService("duckdns", p.Server, p.Token)
	return nil
}

// Cleanup releases the update service.
func (p *DuckDNS) Cleanup() error {
	releaseUpdateService(p.svcKey)
	return nil
}

// SetRecords sends one update per address record; the zone is
// duckdns.org and the names are the subdomains.
func (p *DuckDNS) SetRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	var done []libdns.Record
	for _, rec := range records {
		rr := rec.RR()
		host, ip := fqdn(rr.Name, zone), rr.Data
		sub := strings.TrimSuffix(host, ".duckdns.org")
		err := p.svc.do(ctx, host, ip, func(ctx context.Context) error {
			q := url.Values{"domains": {sub}, "token": {p.Token}}
			if strings.Contains(ip, ":") {
				q.Set("ipv6", ip)
			} else {
				q.Set("ip", ip)
			}
			reply, err := get(ctx, strings.TrimSuffix(p.Server, "/")+"/update?"+q.Encode(), "", "")
			if err != nil {
				return err
			}
			switch strings.ToUpper(strings.Fields(reply + " x")[0]) {
			case "OK":
				return nil
			case "KO":
				return p.svc.stop(fmt.Errorf("duckdns KO for %s: the token or the domain is wrong", sub))
			}
			return fmt.Errorf("duckdns: unexpected reply %q for %s", truncate(reply, 80), sub)
		})
		if err != nil {
			return done, err
		}
		done = append(done, rec)
	}
	return done, nil
}

// Duck DNS keeps one TXT record per domain, answered for every name under
// it (_acme-challenge.home.duckdns.org included), set with the same update
// API (txt=…, clear=true): enough for the ACME DNS challenge, which adds
// one value and then removes it. libdns/duckdns (behind caddy-dns/duckdns)
// does the same but hard-codes https://www.duckdns.org, so it cannot be
// tested against a local server; this provider takes `server`.

// AppendRecords sets the TXT record of the Duck DNS domain each record is
// under; other types are refused.
func (p *DuckDNS) AppendRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	return p.changeTXT(ctx, zone, records, false)
}

// DeleteRecords clears the TXT record of the Duck DNS domain each record
// is under.
func (p *DuckDNS) DeleteRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	return p.changeTXT(ctx, zone, records, true)
}

func (p *DuckDNS) changeTXT(ctx context.Context, zone string, records []libdns.Record, clear bool) ([]libdns.Record, error) {
	var done []libdns.Record
	for _, rec := range records {
		rr := rec.RR()
		if rr.Type != "TXT" {
			return done, fmt.Errorf("duckdns: only TXT records can be added or deleted, not %s", rr.Type)
		}
		host := strings.TrimSuffix(fqdn(rr.Name, zone), ".duckdns.org")
		labels := strings.Split(host, ".")
		sub := labels[len(labels)-1] // _acme-challenge.home → home
		q := url.Values{"domains": {sub}, "token": {p.Token}, "txt": {rr.Data}}
		if clear {
			q.Set("txt", "")
			q.Set("clear", "true")
		}
		reply, err := get(ctx, strings.TrimSuffix(p.Server, "/")+"/update?"+q.Encode(), "", "")
		if err != nil {
			return done, err
		}
		switch strings.ToUpper(strings.Fields(reply + " x")[0]) {
		case "OK":
		case "KO":
			return done, fmt.Errorf("duckdns KO setting the TXT record of %s: the token or the domain is wrong", sub)
		default:
			return done, fmt.Errorf("duckdns: unexpected reply %q for %s", truncate(reply, 80), sub)
		}
		done = append(done, rec)
	}
	return done, nil
}

// UnmarshalCaddyfile parses `provider duckdns { token …; server … }`.
func (p *DuckDNS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalFields(d, map[string]*string{"token": &p.Token, "server": &p.Server})
}

// unmarshalFields parses a block of `name value` lines into fields.
func unmarshalFields(d *caddyfile.Dispenser, fields map[string]*string) error {
	d.Next() // provider name
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dst, ok := fields[d.Val()]
		if !ok {
			names := make([]string, 0, len(fields))
			for k := range fields {
				names = append(names, k)
			}
			sort.Strings(names)
			return d.Errf("unknown option %q; valid ones are %s", d.Val(), strings.Join(names, ", "))
		}
		name := d.Val()
		if !d.NextArg() {
			return d.Errf("%s needs a value", name)
		}
		*dst = d.Val()
		if d.NextArg() { // named, not quoted: the values may be credentials
			return d.Errf("too many values for %s (quote a value that has spaces)", name)
		}
	}
	return nil
}

// Interface guards
var (
	_ libdns.RecordSetter   = (*DynDNS2)(nil)
	_ libdns.RecordAppender = (*DynDNS2)(nil) // refusing, with the reason (see errNoTXT)
	_ libdns.RecordDeleter  = (*DynDNS2)(nil)
	_ libdns.RecordSetter   = (*DuckDNS)(nil)
	_ libdns.RecordAppender = (*DuckDNS)(nil) // with RecordDeleter: certmagic.DNSProvider
	_ libdns.RecordDeleter  = (*DuckDNS)(nil)
	_ caddyfile.Unmarshaler = (*DynDNS2)(nil)
	_ caddyfile.Unmarshaler = (*DuckDNS)(nil)
	_ caddy.Provisioner     = (*DynDNS2)(nil)
)
