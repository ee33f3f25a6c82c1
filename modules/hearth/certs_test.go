package hearth

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

// TestCertificateAttempts: the tls app's events decide the state of a
// name without a certificate (obtaining, failed with the error, cleared
// by success), and the error is redacted before the status shows it.
func TestCertificateAttempts(t *testing.T) {
	log := &certLog{attempts: map[string]certAttempt{}}
	old := currentCerts.Load()
	defer currentCerts.Store(old)
	currentCerts.Store(&certSource{tls: &caddytls.TLS{}, log: log,
		redact: func(s string) string { return strings.ReplaceAll(s, "tok-123", "[redacted]") }})
	h := certEvents{log: log}
	state := func() CertificateState { return certificateStates([]string{"Home.Example.net"})[0] }
	if s := state(); s.State != CertNone {
		t.Errorf("before any event: %+v", s)
	}
	emit := func(name string, data map[string]any) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		e, err := caddy.NewEvent(ctx, name, data)
		if err != nil {
			t.Fatal(err)
		}
		h.Handle(ctx, e)
	}
	emit("cert_obtaining", map[string]any{"identifier": "home.example.net"})
	if s := state(); s.State != CertObtaining {
		t.Errorf("while obtaining: %+v", s)
	}
	emit("cert_failed", map[string]any{"identifier": "home.example.net", "error": "adding a record: API answered 403 for token tok-123"})
	s := state()
	if s.State != CertFailed || !strings.Contains(s.LastError, "403") || strings.Contains(s.LastError, "tok-123") || s.LastErrorAt == nil || time.Since(*s.LastErrorAt) > time.Minute {
		t.Errorf("after a failure: %+v", s)
	}
	// a long error is cut, after redaction
	emit("cert_failed", map[string]any{"identifier": "home.example.net", "error": strings.Repeat("é", 2000) + " tok-123"})
	if s := state(); len(s.LastError) > maxCertError+len("…") || !strings.HasPrefix(s.LastError, "éé") || !utf8.ValidString(s.LastError) {
		t.Errorf("a long error: %d bytes", len(s.LastError))
	}
	emit("cert_obtained", map[string]any{"identifier": "home.example.net"})
	if s := state(); s.State != CertNone || s.LastError != "" {
		t.Errorf("after success (no certificate in this test's storage): %+v", s)
	}
	// what is kept is bounded: an obtained name is forgotten, an error is
	// kept up to 64 KiB, and at most maxCertAttempts names (on-demand TLS
	// lets clients choose names), the longest failed going first
	if len(log.attempts) != 0 {
		t.Errorf("an obtained name is still kept: %v", log.attempts)
	}
	for i := range maxCertAttempts + 10 {
		emit("cert_failed", map[string]any{"identifier": fmt.Sprintf("n%d.example.net", i), "error": strings.Repeat("x", 100<<10)})
	}
	if n := len(log.attempts); n != maxCertAttempts {
		t.Errorf("%d names kept, want %d", n, maxCertAttempts)
	}
	last := fmt.Sprintf("n%d.example.net", maxCertAttempts+9)
	if a, ok := log.attempts[last]; !ok || len(a.lastError) != maxKeptCertError {
		t.Errorf("the newest name: kept %v, %d bytes of its error", ok, len(a.lastError))
	}
	if _, ok := log.attempts["n0.example.net"]; ok {
		t.Error("the first name to fail is still kept")
	}
}

// Certificate errors go through the ddns app's redaction, or without one
// the redaction of what looks like a credential.
func TestCertRedactor(t *testing.T) {
	old := textRedactor
	defer func() { textRedactor = old }()
	RegisterTextRedactor(func(s string) string { return strings.ReplaceAll(s, "Bearer cf-token-9876", "Bearer [redacted]") })
	if got := certRedactor(nil)("presenting the record: 403 for Bearer cf-token-9876"); strings.Contains(got, "cf-token-9876") {
		t.Errorf("without ddns: %q", got)
	}
	if got := certRedactor(fakeDDNS{})("ddns-secret-1"); strings.Contains(got, "ddns-secret-1") {
		t.Errorf("with ddns: %q", got)
	}
}

// fakeDDNS redacts ddns-secret-1.
type fakeDDNS struct{}

func (fakeDDNS) ManagedNames() []string { return nil }
func (fakeDDNS) WritesNothing() bool    { return false }
func (fakeDDNS) DashboardStatus() any   { return nil }
func (fakeDDNS) Redact(s string) string { return strings.ReplaceAll(s, "ddns-secret-1", "[redacted]") }

// TestCertificateSummaryOfAHostileAnswer: `caddy hearth status` prints
// what answers on the admin address, which may not be this Caddy (see
// unitsSocket): a valid certificate without its expiry is printed, not a
// panic.
func TestCertificateSummaryOfAHostileAnswer(t *testing.T) {
	got, ok := certificateSummary([]CertificateState{{Name: "shop.example", State: CertValid}})
	if !ok || !strings.Contains(got, "shop.example: valid to an unknown date") {
		t.Errorf("%q %v", got, ok)
	}
}

// TestCertificateErrorRedactedAsItCame: an error is redacted with the
// credentials of the config it came under, as it is recorded: after a
// reload that rotated the token (or took the ddns app out), the status
// still shows the old token redacted.
func TestCertificateErrorRedactedAsItCame(t *testing.T) {
	log := &certLog{attempts: map[string]certAttempt{}}
	var oldConfig, newConfig atomic.Pointer[func(string) string]
	oldRedact := func(s string) string { return strings.ReplaceAll(s, "OLDTOKEN1234", "[redacted]") }
	newRedact := func(s string) string { return strings.ReplaceAll(s, "NEWTOKEN5678", "[redacted]") }
	oldConfig.Store(&oldRedact)
	newConfig.Store(&newRedact)
	old := currentCerts.Load()
	defer currentCerts.Store(old)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	e, err := caddy.NewEvent(ctx, "cert_failed", map[string]any{"identifier": "home.example.net", "error": "provider refused credential OLDTOKEN1234"})
	if err != nil {
		t.Fatal(err)
	}
	// the next config has started, and the old one's event comes after
	certEvents{log, &newConfig}.Handle(ctx, e2(t, ctx, "cert_obtaining"))
	certEvents{log, &oldConfig}.Handle(ctx, e)
	// the next config knows only the new token
	currentCerts.Store(&certSource{tls: &caddytls.TLS{}, log: log, redact: newRedact})
	if s := certificateStates([]string{"home.example.net"})[0]; s.State != CertFailed || strings.Contains(s.LastError, "OLDTOKEN1234") {
		t.Errorf("after a reload that rotated the token: %+v", s)
	}
}

// e2 is an event of the tls app about home.example.net.
func e2(t *testing.T, ctx caddy.Context, name string) caddy.Event {
	e, err := caddy.NewEvent(ctx, name, map[string]any{"identifier": "home.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}
