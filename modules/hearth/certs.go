package hearth

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"

	"github.com/hearth-dev/hearth/modules/internal/textcut"
)

// What the status shows of each HTTPS site's certificate: a site whose
// certificate could not be obtained is not "running" for its visitors,
// who get a TLS alert. The certificate itself is read from Caddy's
// storage (where the policy's issuers keep it); what happened when Caddy
// last tried to obtain or renew it comes from the tls app's events
// (cert_obtaining, cert_obtained, cert_failed), kept across reloads.

// Certificate states.
const (
	CertValid     = "valid"     // held, not expired
	CertExpired   = "expired"   // held, past its not_after
	CertObtaining = "obtaining" // none yet; Caddy is asking the CA
	CertFailed    = "failed"    // the last attempt failed (last_error says why)
	CertNone      = "none"      // none yet, no attempt seen
)

// CertificateState is one HTTPS site name's certificate.
type CertificateState struct {
	// Name is the site name (the certificate's subject).
	Name string `json:"name"`
	// State is valid, expired, obtaining, failed or none.
	State string `json:"state"`
	// Issuer is the certificate's issuer (its CA's name).
	Issuer string `json:"issuer,omitempty"`
	// NotAfter is when it expires.
	NotAfter *time.Time `json:"not_after,omitempty"`
	// Renewal is when Caddy starts renewing it (once a third of its
	// lifetime is left, unless renewal_window_ratio or the CA's renewal
	// information say otherwise).
	Renewal *time.Time `json:"renewal,omitempty"`
	// LastError is the CA's or DNS server's answer to the last failed
	// attempt, and LastErrorAt its time; cleared when one succeeds.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// certAttempt is what the tls app's events said of a name last.
type certAttempt struct {
	obtaining bool
	lastError string
	at        time.Time
}

// certLog holds the attempts per name, for every config (a reload keeps it).
type certLog struct {
	mu       sync.Mutex
	attempts map[string]certAttempt
}

func (*certLog) Destruct() error { return nil }

var certLogs = caddy.NewUsagePool()

const certLogKey = "hearth.certificates"

// certSource is what the status reads certificates through: the running
// config's tls app and storage.
type certSource struct {
	tls     *caddytls.TLS
	storage certmagic.Storage
	log     *certLog
	redact  func(string) string // the ddns app's, or nil: a DNS provider's error may quote its request
}

var currentCerts atomic.Pointer[certSource]

// certEvents is the events handler of a config that records attempts.
// An error is redacted as it is recorded, with the credentials of the
// config it came under (redact: its certRedactor once it started; a
// later config may no longer know them, a rotated token, a ddns app
// taken out), and again when a status shows it.
type certEvents struct {
	log    *certLog
	redact *atomic.Pointer[func(string) string]
}

// Handle records a tls app event about a certificate.
func (h certEvents) Handle(_ context.Context, e caddy.Event) error {
	name, _ := e.Data["identifier"].(string)
	if name == "" {
		return nil
	}
	name = strings.ToLower(name)
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	a, known := h.log.attempts[name]
	switch e.Name() {
	case "cert_obtaining":
		a.obtaining = true
	case "cert_obtained":
		delete(h.log.attempts, name)
		return nil
	case "cert_failed":
		a.obtaining = false
		// kept whole enough to be redacted before it is cut for display
		a.lastError, a.at = textcut.Prefix(fmt.Sprint(e.Data["error"]), maxKeptCertError), e.Timestamp()
		redact := certRedactor(nil) // (before the config's Start: what looks like a credential)
		if h.redact != nil {
			if f := h.redact.Load(); f != nil {
				redact = *f
			}
		}
		a.lastError = redact(a.lastError)
	}
	if !known && len(h.log.attempts) >= maxCertAttempts {
		h.log.evictOldest()
	}
	h.log.attempts[name] = a
	return nil
}

// maxCertAttempts bounds how many names' attempts are kept (with on-demand
// TLS, clients choose the names, within what the config allows), and
// maxKeptCertError how much of each one's error.
const (
	maxCertAttempts  = 4096
	maxKeptCertError = 64 << 10
)

// evictOldest forgets the attempt that failed longest ago, or, when none
// has failed, any one; l.mu is held.
func (l *certLog) evictOldest() {
	var oldest string
	var at time.Time
	for name, a := range l.attempts {
		if oldest == "" || !a.at.IsZero() && (at.IsZero() || a.at.Before(at)) {
			oldest, at = name, a.at
		}
	}
	delete(l.attempts, oldest)
}

// watchCertificates subscribes to the tls app's certificate events.
func (a *App) watchCertificates(ctx caddy.Context) error {
	val, _, err := certLogs.LoadOrNew(certLogKey, func() (caddy.Destructor, error) {
		return &certLog{attempts: map[string]certAttempt{}}, nil
	})
	if err != nil {
		return err
	}
	a.certLog = val.(*certLog)
	a.certRedact = new(atomic.Pointer[func(string) string])
	eventsAny, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("hearth: loading the events app to follow certificates: %w", err)
	}
	events := eventsAny.(*caddyevents.App)
	for _, name := range []string{"cert_obtaining", "cert_obtained", "cert_failed"} {
		if err := events.On(name, certEvents{a.certLog, a.certRedact}); err != nil {
			return fmt.Errorf("hearth: following %s events: %w", name, err)
		}
	}
	return nil
}

// publishCertificates makes the running config's tls app the one the
// status reads certificates from (at Start).
func (a *App) publishCertificates() {
	tlsAny, err := a.ctx.AppIfConfigured("tls")
	if err != nil {
		return
	}
	src := &certSource{tls: tlsAny.(*caddytls.TLS), storage: a.ctx.Storage(), log: a.certLog, redact: certRedactor(a.ddns)}
	a.certs = src
	if a.certRedact != nil {
		a.certRedact.Store(&src.redact)
	}
}

// textRedactor removes from a message what looks like a credential (an
// Authorization header, a URL's query or password, token=…): the ddns
// module's, registered at init (hearth cannot import it).
var textRedactor func(text string) string

// RegisterTextRedactor sets textRedactor.
func RegisterTextRedactor(r func(text string) string) { textRedactor = r }

// certRedactor is what a certificate's last error goes through before any
// status shows it: the ddns app's redaction (its provider's credentials,
// and what looks like one), or without a ddns app what looks like one. The
// credentials of the tls app's own DNS providers (tls { dns … }) are not
// known here: Caddy drops a module's JSON once it has loaded it.
func certRedactor(ddns DDNSReporter) func(string) string {
	switch {
	case ddns != nil:
		return ddns.Redact
	case textRedactor != nil:
		return textRedactor
	}
	return func(s string) string { return s }
}

// maxCertError bounds a certificate's last error as statuses show it.
const maxCertError = 500

// certificateStates reports the certificate of each name.
func certificateStates(names []string) []CertificateState {
	src := currentCerts.Load()
	out := []CertificateState{}
	for _, name := range names {
		state := CertificateState{Name: name, State: CertNone}
		if src != nil {
			src.read(&state)
		}
		out = append(out, state)
	}
	return out
}

// read fills in the certificate held for s.Name and the last attempt.
func (src *certSource) read(s *CertificateState) {
	if cert := src.load(s.Name); cert != nil {
		notAfter := cert.NotAfter
		renewal := cert.NotAfter.Add(-time.Duration(float64(cert.NotAfter.Sub(cert.NotBefore)) * src.renewalRatio(s.Name)))
		s.Issuer, s.NotAfter, s.Renewal = cert.Issuer.CommonName, &notAfter, &renewal
		if len(cert.Issuer.Organization) > 0 && s.Issuer == "" {
			s.Issuer = cert.Issuer.Organization[0]
		}
		s.State = CertValid
		if time.Now().After(cert.NotAfter) {
			s.State = CertExpired
		}
	}
	if src.log == nil {
		return
	}
	src.log.mu.Lock()
	attempt, ok := src.log.attempts[strings.ToLower(s.Name)]
	src.log.mu.Unlock()
	if !ok {
		return
	}
	if attempt.lastError != "" {
		at := attempt.at
		s.LastError, s.LastErrorAt = attempt.lastError, &at
		if src.redact != nil {
			s.LastError = src.redact(s.LastError)
		}
		// redacted first: a cut could hide a credential from it
		s.LastError = textcut.Shorten(s.LastError, maxCertError)
	}
	switch {
	case s.State == CertValid || s.State == CertExpired:
	case attempt.obtaining:
		s.State = CertObtaining
	case attempt.lastError != "":
		s.State = CertFailed
	}
}

// policyFor is the automation policy Caddy uses for name: the first whose
// subjects match, else the first without subjects.
func (src *certSource) policyFor(name string) *caddytls.AutomationPolicy {
	if src.tls.Automation == nil {
		return nil
	}
	var catchAll *caddytls.AutomationPolicy
	for _, ap := range src.tls.Automation.Policies {
		if len(ap.SubjectsRaw) == 0 {
			if catchAll == nil {
				catchAll = ap
			}
			continue
		}
		for _, subject := range ap.SubjectsRaw {
			if certmagic.MatchWildcard(name, subject) {
				return ap
			}
		}
	}
	return catchAll
}

func (src *certSource) renewalRatio(name string) float64 {
	if ap := src.policyFor(name); ap != nil && ap.RenewalWindowRatio > 0 {
		return ap.RenewalWindowRatio
	}
	return certmagic.DefaultRenewalWindowRatio
}

// load reads name's certificate from storage, as any of its policy's
// issuers keeps it.
func (src *certSource) load(name string) *x509.Certificate {
	ap := src.policyFor(name)
	if ap == nil || src.storage == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var newest *x509.Certificate
	for _, iss := range ap.Issuers {
		data, err := src.storage.Load(ctx, certmagic.StorageKeys.SiteCert(iss.IssuerKey(), name))
		if err != nil {
			continue
		}
		block, _ := pem.Decode(data)
		if block == nil {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err == nil && (newest == nil || cert.NotAfter.After(newest.NotAfter)) {
			newest = cert
		}
	}
	return newest
}
