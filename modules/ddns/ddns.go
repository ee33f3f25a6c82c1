// Package ddns is the "ddns" Caddy app: it keeps DNS address records
// pointed at this machine's public IP, through any dns.providers.* module
// (the same providers Caddy uses for ACME DNS challenges).
package ddns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/net/idna"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/internal/textcut"
)

func init() {
	caddy.RegisterModule(App{})
	hearth.RegisterTextRedactor((*redactor)(nil).text) // what looks like a credential
}

// Defaults and bounds, documented in the README.
const (
	DefaultInterval = 5 * time.Minute
	MinInterval     = 30 * time.Second
	DefaultTTL      = 5 * time.Minute
	DefaultRecheck  = 12
)

// App keeps the address records of Domains at the IP that IPSources
// detect, checking every Interval.
type App struct {
	// ProviderRaw is the DNS provider, any dns.providers.* module that
	// can set records (libdns.RecordSetter), such as rfc2136 or cloudflare.
	ProviderRaw json.RawMessage `json:"provider,omitempty" caddy:"namespace=dns.providers inline_key=name"`

	// Domains maps each zone to the names to keep updated in it, relative
	// to the zone ("@" for the zone's apex).
	Domains map[string][]string `json:"domains,omitempty"`

	// IPSources detect the public IP, tried in order. With more than one
	// http source, two must agree. Default: none (an error).
	IPSources []IPSource `json:"ip_sources,omitempty"`

	// Versions are the IP versions to keep: "ipv4" (A records) and/or
	// "ipv6" (AAAA). Default: ipv4.
	Versions []string `json:"versions,omitempty"`

	// Interval between checks; at least 30s. Default: 5m.
	Interval caddy.Duration `json:"interval,omitempty"`

	// TTL of the records written. Default: 5m.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// RecheckEvery reads the records back from DNS every N checks (and at
	// start) to repair changes made elsewhere. Default: 12.
	RecheckEvery int `json:"recheck_every,omitempty"`

	// DryRun logs what would change and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`

	// DNSChallenge is "off" to leave the certificates of Domains to
	// Caddy's defaults. Otherwise, when the provider can create and
	// delete records, Caddy obtains them with the ACME DNS-01 challenge
	// through the provider (no port needs to be forwarded for it), with
	// the issuer settings of Caddy's defaults (acme_ca, email, …); a
	// site's own `tls` settings still win. Default: on.
	DNSChallenge string `json:"dns_challenge,omitempty"`

	fingerprint string            // of the settings that decide what is written
	storage     certmagic.Storage // Caddy's: coordinates instances that share it
	setter      libdns.RecordSetter
	getter      libdns.RecordGetter
	redact      *redactor // removes credentials from what is logged and recorded
	state       *state
	holdsMemory bool // Provision took the state from memories: Cleanup gives it back
	logger      *zap.Logger
	cancel      context.CancelFunc
	done        chan struct{}
	kick        chan chan error
	// the app the admin routes served before this one started, and
	// whether this one has stopped (publish, withdraw)
	replaced *App
	stopped  uint32 // atomic: App is a value Caddy copies, an atomic.Bool may not be
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "ddns",
		New: func() caddy.Module { return new(App) },
	}
}

// maxTTL is the largest TTL a DNS record holds (2^31-1 seconds).
const maxTTL = (1<<31 - 1) * time.Second

// checkVersions refuses a version that is not ipv4 or ipv6, and one given
// twice (each of its records was updated twice a check).
func checkVersions(versions []string) error {
	for i, v := range versions {
		if v != "ipv4" && v != "ipv6" {
			return fmt.Errorf("version %q is not ipv4 or ipv6", v)
		}
		if slices.Contains(versions[:i], v) {
			return fmt.Errorf("versions lists %s twice", v)
		}
	}
	return nil
}

// Provision loads the provider and validates the config. Its errors,
// like everything the app logs or records, are redacted of credentials.
func (a *App) Provision(ctx caddy.Context) (err error) {
	a.redact = newRedactor(a.ProviderRaw, a.IPSources)
	a.logger = a.redact.logger(ctx.Logger())
	defer func() { err = a.redact.err(err) }()
	if a.Interval == 0 {
		a.Interval = caddy.Duration(DefaultInterval)
	}
	if time.Duration(a.Interval) < MinInterval {
		return fmt.Errorf("ddns: interval %s is below the minimum of %s (DNS providers rate-limit updates); use `interval 30s` or more", time.Duration(a.Interval), MinInterval)
	}
	if a.TTL == 0 {
		a.TTL = caddy.Duration(DefaultTTL)
	}
	if ttl := time.Duration(a.TTL); ttl < time.Second || ttl > maxTTL {
		return fmt.Errorf("ddns: ttl %s is not between 1s and %s (a record's TTL is a whole number of seconds below 2^31); write it like 5m", ttl, maxTTL)
	}
	if a.RecheckEvery <= 0 {
		a.RecheckEvery = DefaultRecheck
	}
	if len(a.Versions) == 0 {
		a.Versions = []string{"ipv4"}
	}
	if err := checkVersions(a.Versions); err != nil {
		return fmt.Errorf("ddns: %w", err)
	}
	if err := a.checkDomains(); err != nil {
		return err
	}
	if len(a.IPSources) == 0 {
		return fmt.Errorf("ddns: no ip_source; add one, such as `ip_source http https://api.ipify.org` or `ip_source upnp`")
	}
	httpURLs := map[string]int{}
	for i, src := range a.IPSources {
		if err := src.check(); err != nil {
			return fmt.Errorf("ddns: ip_source %d: %w", i+1, err)
		}
		if src.Source != "http" {
			continue
		}
		service := echoService(src.URL)
		if j, twice := httpURLs[service]; twice { // two votes of one service would agree with themselves
			return fmt.Errorf("ddns: ip_sources %d and %d are the same http service (%s); with several http sources two must agree, so list different services", j+1, i+1, service)
		}
		httpURLs[service] = i
	}
	if a.DNSChallenge != "" && a.DNSChallenge != DNSChallengeOff && a.DNSChallenge != "on" {
		return fmt.Errorf("ddns: dns_challenge %q is not on or off", a.DNSChallenge)
	}
	if a.ProviderRaw == nil {
		return fmt.Errorf("ddns: no provider; add one, such as `provider rfc2136 { … }` or `provider cloudflare { … }`")
	}
	a.fingerprint = a.configFingerprint()
	providerJSON := slices.Clone(a.ProviderRaw) // LoadModule lets go of it; the DNS challenge reuses it
	if err := emptyCredential(a.ProviderRaw); err != nil {
		if !a.DryRun {
			return err
		}
		a.logger.Warn("dry_run: nothing is written, but turning it off will fail: "+err.Error(), zap.String("fix", "set the variable, or write the value"))
	}
	mod, err := ctx.LoadModule(a, "ProviderRaw")
	if err != nil {
		return fmt.Errorf("ddns: loading the DNS provider: %w (is the provider module built in? `caddy list-modules` shows dns.providers.*)", err)
	}
	if err := checkProvider(mod); err != nil {
		return err
	}
	setter, ok := recordSetter(mod)
	if !ok {
		return fmt.Errorf("ddns: DNS provider %T cannot set records (it does not implement libdns.RecordSetter); choose another provider", mod)
	}
	a.setter = setter
	a.getter = recordGetter(mod, func(zone string) []string { return a.Domains[zone] })
	for _, c := range []prometheus.Collector{updatesTotal, errorsTotal, lastSuccess} {
		if err := hearth.RegisterCollector(ctx.GetMetricsRegistry(), c); err != nil {
			return fmt.Errorf("ddns: registering metrics: %w", err)
		}
	}
	val, _, err := memories.LoadOrNew("ddns", func() (caddy.Destructor, error) { return &state{records: map[string]*recordState{}}, nil })
	if err != nil {
		return err
	}
	a.state, a.holdsMemory = val.(*state), true
	a.storage = ctx.Storage()
	return a.setUpDNSChallenge(ctx, mod, providerJSON)
}

// checkDomains validates the zones and names.
func (a *App) checkDomains() error {
	if len(a.Domains) == 0 {
		return fmt.Errorf("ddns: no domains; add `domains { example.net @ home }` (a zone, then names in it)")
	}
	zones := map[string]string{} // zone as DNS compares it → as written
	for zone, names := range a.Domains {
		z := strings.TrimSuffix(strings.ToLower(zone), ".")
		if z == "" || strings.ContainsAny(z, " /:") {
			return fmt.Errorf("ddns: %q is not a DNS zone", zone)
		}
		if other, ok := zones[z]; ok { // (each of its records was updated twice a check)
			return fmt.Errorf("ddns: %s and %s are the same zone (DNS ignores case and a final dot); list its names once, under one of them", other, zone)
		}
		zones[z] = zone
		full := map[string]bool{} // the names as DNS compares them
		if err := asciiName("zone", zone); err != nil {
			return err
		}
		if len(names) == 0 {
			return fmt.Errorf("ddns: zone %s lists no names; use @ for the zone itself", zone)
		}
		for _, name := range names {
			n := strings.ToLower(name)
			if n == z || strings.HasSuffix(n, "."+z) { // relative: the zone would be added again
				return fmt.Errorf("ddns: %s under zone %s would be %s.%s; write the part before the zone (%s), or the full name with a final dot (%s.), or @ for the zone itself", name, zone, n, z, relativeName(n+".", z), n)
			}
			if strings.HasSuffix(n, ".") { // a fully qualified name: must be inside the zone
				fq := strings.TrimSuffix(n, ".")
				if fq != z && !strings.HasSuffix(fq, "."+z) {
					return fmt.Errorf("ddns: %s is not inside the zone %s; list it under its own zone", name, zone)
				}
			}
			if strings.ContainsAny(n, " /:*") || n == "" {
				return fmt.Errorf("ddns: %q is not a name in zone %s", name, zone)
			}
			if err := asciiName("name", name); err != nil {
				return err
			}
			f := strings.TrimSuffix(n, ".")
			switch {
			case n == "@":
				f = z
			case !strings.HasSuffix(n, "."):
				f = n + "." + z
			}
			if full[f] {
				return fmt.Errorf("ddns: zone %s lists %s twice (as %s, among others); list it once", zone, f, name)
			}
			full[f] = true
		}
	}
	return nil
}

// asciiName refuses a zone or name written with letters outside ASCII
// (bücher): DNS holds it in its ASCII form (xn--bcher-kva), which the
// providers, the read-back and ACME all need; the error gives that form.
func asciiName(what, name string) error {
	for _, r := range name {
		if r >= utf8.RuneSelf {
			ascii, err := idna.Lookup.ToASCII(strings.TrimSuffix(name, "."))
			if err != nil {
				return fmt.Errorf("ddns: the %s %q is not a valid internationalized domain name (%v)", what, name, err)
			}
			if strings.HasSuffix(name, ".") {
				ascii += "."
			}
			return fmt.Errorf("ddns: write the %s %q as DNS holds it, in ASCII: %s", what, name, ascii)
		}
	}
	return nil
}

// ManagedNames are the names the app keeps pointed at this machine
// (hearth.DDNSReporter: the hearth app finds this app with
// ctx.AppIfConfigured and shows them in its status).
func (a *App) ManagedNames() []string { return a.names() }

// WritesNothing reports dry_run (hearth.DDNSReporter).
func (a *App) WritesNothing() bool { return a.DryRun }

// DashboardStatus is the app's status for the dashboard
// (hearth.DDNSReporter).
func (a *App) DashboardStatus() any { return a.status() }

// Redact removes the provider's credentials from text, such as a DNS-01
// error a certificate status shows (hearth.DDNSReporter).
func (a *App) Redact(text string) string { return a.redact.text(text) }

var _ hearth.DDNSReporter = (*App)(nil)

// Start begins checking: once at once, then every interval.
func (a *App) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done, a.kick = cancel, make(chan struct{}), make(chan chan error)
	publish(a)
	go func() {
		defer close(a.done)
		panics.Keep(a.logger, "keeping DNS records up to date", ctx.Done(), func() { a.run(ctx) })
	}()
	return nil
}

// names are the fully qualified names the app keeps updated.
func (a *App) names() []string {
	var out []string
	for zone, names := range a.Domains {
		for _, n := range names {
			out = append(out, fqdn(relativeName(n, zone), strings.ToLower(zone)))
		}
	}
	return out
}

// Stop ends the checks.
func (a *App) Stop() error {
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
	withdraw(a)
	return nil
}

// Cleanup releases the remembered state, if Provision got as far as
// taking it (Caddy cleans up a config whose Provision failed too: a
// refused reload must not release the running config's hold).
func (a *App) Cleanup() error {
	if !a.holdsMemory {
		return nil
	}
	a.holdsMemory = false
	_, err := memories.Delete("ddns")
	return err
}

// configFingerprint identifies the settings that decide what is written:
// a reload that keeps them keeps the schedule (and makes no DNS traffic).
func (a *App) configFingerprint() string {
	b, _ := json.Marshal([]any{a.ProviderRaw, a.Domains, a.IPSources, a.Versions, a.TTL, a.DryRun, a.Interval})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (a *App) run(ctx context.Context) {
	interval := time.Duration(a.Interval)
	delay, checks := a.state.resume(a.fingerprint, interval)
	for {
		timer := time.NewTimer(delay)
		var reply chan error
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case reply = <-a.kick:
			timer.Stop()
		}
		failed := a.checkFor(ctx, checks%a.RecheckEvery == 0 || reply != nil, reply)
		checks++
		a.state.ran(a.fingerprint, checks)
		delay = interval
		if failed {
			delay = a.state.backoff(interval)
		} else {
			a.state.resetBackoff()
		}
	}
}

// checkFor runs a check and then answers reply (nil: no one asked), even
// when the check panics (a provider module's bug: run's panics.Keep logs
// it and runs the loop again), so that POST /hearth/ddns/check does not
// wait for good.
func (a *App) checkFor(ctx context.Context, readBack bool, reply chan error) (failed bool) {
	if reply == nil {
		return a.check(ctx, readBack)
	}
	ended := false
	defer func() {
		if !ended {
			reply <- errCheckPanicked
		}
		close(reply)
	}()
	failed = a.check(ctx, readBack)
	ended = true
	return failed
}

// errCheckPanicked answers a check that stopped on a panic.
var errCheckPanicked = errors.New("the check stopped on an internal error (a bug of the DNS provider module or of Hearth: Caddy's log has it, with where it happened); checks go on, the next in a second")

// CheckNow runs a check (with a read-back of the records) and waits for it.
func (a *App) CheckNow(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case a.kick <- reply:
	case <-a.done:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-a.done:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sharedLockWait bounds the wait for another instance's lock on a record
// in Caddy's storage; past it, the update goes out anyway, with its own
// time left.
var sharedLockWait = 10 * time.Second

// errStopped answers a check asked of an app that has stopped (the
// admin API found it just before a config reload or stop).
var errStopped = errors.New("the ddns app stopped (a config was loaded or Caddy is stopping); ask again")

// check detects the IP and updates the records that differ; it reports
// whether anything failed.
func (a *App) check(ctx context.Context, readBack bool) bool {
	now := time.Now()
	failed := false
	for _, version := range a.Versions {
		ip, err := a.detect(ctx, version)
		if err != nil {
			a.logger.Error("detecting the public IP", zap.String("version", version), zap.Error(err))
			a.recordAll(version, func(r *recordState) { r.LastCheck, r.LastError = now, err.Error() })
			failed = true
			continue
		}
		for zone, names := range a.Domains {
			var readAt time.Time // when DNS was last read for these records, in this check
			if readBack {
				readAt = time.Now()
				a.readBack(ctx, zone, version)
			}
			for _, name := range names {
				if err := a.update(ctx, zone, name, version, ip, now, readAt); err != nil {
					failed = true
				}
			}
		}
	}
	return failed
}

// readBackFailed begins the last_error of a failed read-back.
const readBackFailed = "reading the records back: "

// readBack refreshes what DNS holds for the zone's names; a failure is
// each record's last_error until a read-back succeeds.
func (a *App) readBack(ctx context.Context, zone, version string) {
	if a.getter == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	records, err := a.getRecords(ctx, zone)
	if err != nil {
		a.logger.Warn("reading the records back", zap.String("zone", zone), zap.Error(err))
		for _, name := range a.Domains[zone] {
			a.record(zone, name, version, func(r *recordState) { r.LastError = readBackFailed + err.Error() })
		}
		return
	}
	for _, name := range a.Domains[zone] {
		value := recordValue(records, name, zone, version)
		a.record(zone, name, version, func(r *recordState) {
			r.RecordValue = value
			if strings.HasPrefix(r.LastError, readBackFailed) {
				r.LastError = "" // read back fine now
			}
		})
	}
}

// getRecords is the provider's GetRecords, given up on when ctx ends: a
// provider may not return then (libdns/rfc2136's zone transfer bounds
// each read, not the whole, and a server that keeps sending keeps it
// going), and the app's loop, and with it every reload's Stop, must not
// wait for it. While one has not returned, no other starts.
func (a *App) getRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	// per settings: a read-back stuck on a server the next config no
	// longer uses holds nothing of that config's
	key := a.fingerprint + " " + zone
	a.state.mu.Lock()
	if a.state.reading[key] {
		a.state.mu.Unlock()
		return nil, errors.New("the last read-back is still running (the DNS server has not finished answering it); retrying later")
	}
	if a.state.reading == nil {
		a.state.reading = map[string]bool{}
	}
	a.state.reading[key] = true
	a.state.mu.Unlock()
	type result struct {
		records []libdns.Record
		err     error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = panics.Call(a.logger, "reading the records back", func() (err error) {
			r.records, err = a.getter.GetRecords(ctx, zone)
			return err
		})
		a.state.mu.Lock()
		delete(a.state.reading, key) // before the answer: the next zone's read-back may follow at once
		a.state.mu.Unlock()
		done <- r
	}()
	select {
	case r := <-done:
		return r.records, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("the DNS server did not finish answering in time: %w", ctx.Err())
	}
}

// setRecords sends one record's update through the provider, notes it
// in Caddy's storage for the instances that share it (storeWrite), then
// calls done (the shared lock's release: the note is written under it). The provider's call runs on a
// goroutine of its own, which the update stops waiting for when ctx ends:
// a provider module that ignores its context would otherwise hold the
// check, and Caddy's reload or stop that waits for it, for good. Until it
// returns, the same record is not updated again with the same settings
// (an update coming after it could otherwise be overtaken by it).
func (a *App) setRecords(ctx context.Context, zone, name, version string, ip netip.Addr, rec libdns.Record, done func()) error {
	key := a.fingerprint + " " + zone + " " + name + " " + version
	a.state.mu.Lock()
	if a.state.writing[key] {
		a.state.mu.Unlock()
		done()
		return errors.New("the last update of this record is still running (the DNS provider has not finished answering it); retrying later")
	}
	if a.state.writing == nil {
		a.state.writing = map[string]bool{}
	}
	a.state.writing[key] = true
	a.state.mu.Unlock()
	result := make(chan error, 1)
	go func() {
		err := panics.Call(a.logger, "updating the record", func() error {
			_, err := a.setter.SetRecords(ctx, zone, []libdns.Record{rec})
			return err
		})
		if err == nil {
			// (its own time: the update's may be over once a slow provider answered)
			noteCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			a.storeWrite(noteCtx, zone, name, version, ip)
			cancel()
		}
		a.state.mu.Lock()
		delete(a.state.writing, key)
		a.state.mu.Unlock()
		done()
		result <- err
	}()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the DNS provider did not finish the update in time: %w", ctx.Err())
	}
}

// update sets one record if it differs from ip. Instances that share
// Caddy's storage take the record's lock there and skip a write another
// one has just made (see sharedWrite).
func (a *App) update(ctx context.Context, zone, name, version string, ip netip.Addr, now, readAt time.Time) error {
	var value string
	a.record(zone, name, version, func(r *recordState) {
		r.CurrentIP, r.LastCheck = ip.String(), now
		value = r.RecordValue
	})
	if value == ip.String() {
		return nil
	}
	fields := []zap.Field{zap.String("zone", zone), zap.String("name", name), zap.String("from", value), zap.String("to", ip.String())}
	if a.DryRun {
		a.logger.Info("dry_run: would update the record", fields...)
		return nil
	}
	lockCtx, cancelLock := context.WithTimeout(ctx, sharedLockWait)
	written, done, err := a.sharedWrite(lockCtx, zone, name, version, ip, readAt)
	cancelLock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second) // the update's own time, whatever the lock took
	defer cancel()
	if err != nil {
		a.logger.Warn("coordinating the update through Caddy's storage; updating anyway", append(fields, zap.Error(err))...)
	}
	if written {
		done()
		a.logger.Info("record already updated by another instance sharing Caddy's storage", fields...)
		a.record(zone, name, version, func(r *recordState) { r.RecordValue, r.LastError = ip.String(), "" })
		return nil
	}
	rec := libdns.Address{Name: relativeName(name, zone), TTL: time.Duration(a.TTL), IP: ip}
	if err := a.setRecords(ctx, zone, name, version, ip, rec, done); err != nil {
		if msg := err.Error(); strings.Contains(msg, "bad authentication") || strings.Contains(msg, "NOTAUTH") {
			err = fmt.Errorf("%w (the DNS server refused the update's signature: check the provider's key name, algorithm and key)", err)
		}
		a.logger.Error("updating the record", append(fields, zap.Error(err))...)
		a.record(zone, name, version, func(r *recordState) { r.LastError = err.Error() })
		errorsTotal.Inc()
		return err
	}
	a.logger.Info("record updated", fields...)
	a.record(zone, name, version, func(r *recordState) {
		r.RecordValue, r.LastChange, r.LastError = ip.String(), now, ""
	})
	updatesTotal.Inc()
	lastSuccess.SetToCurrentTime()
	return nil
}

// record changes the state of a record. Its last_error is redacted here,
// where every error of a record is recorded (GET /hearth/ddns and the
// dashboard show it), then bounded: a DNS server's own text in it (an
// extended error's) may run to 64 KiB.
func (a *App) record(zone, name, version string, fn func(*recordState)) {
	a.state.update(zone, name, version, func(r *recordState) {
		fn(r)
		r.LastError = textcut.Shorten(a.redact.text(r.LastError), maxLastError)
	})
}

// maxLastError bounds a record's last_error, in bytes.
const maxLastError = 1000

// recordAll changes the state of every record of the version.
func (a *App) recordAll(version string, fn func(*recordState)) {
	for zone, names := range a.Domains {
		for _, name := range names {
			a.record(zone, name, version, fn)
		}
	}
}

// recordValue is what the zone's records hold for name's address record
// of the version: its address, "" for none, or the addresses joined with
// ", " when there are several (a stale one beside the current one must
// still be replaced: an update sets the name's only record).
func recordValue(records []libdns.Record, name, zone, version string) string {
	var values []string
	for _, rec := range records {
		rr := rec.RR()
		if sameName(rr.Name, name, zone) && rr.Type == recordType(version) {
			values = append(values, rr.Data)
		}
	}
	slices.Sort(values)
	return strings.Join(slices.Compact(values), ", ")
}

func recordType(version string) string {
	if version == "ipv6" {
		return "AAAA"
	}
	return "A"
}

// relativeName turns a configured name into libdns's zone-relative form.
func relativeName(name, zone string) string {
	n := strings.ToLower(name)
	z := strings.TrimSuffix(strings.ToLower(zone), ".")
	if fq, ok := strings.CutSuffix(n, "."); ok {
		if fq == z {
			return "@"
		}
		return strings.TrimSuffix(fq, "."+z)
	}
	return n
}

func sameName(recordName, name, zone string) bool {
	return strings.EqualFold(relativeName(recordName+".", zone), relativeName(name, zone)) ||
		strings.EqualFold(recordName, relativeName(name, zone))
}

// state is what the app remembers across config reloads.
type state struct {
	mu          sync.Mutex
	records     map[string]*recordState
	failures    int
	fingerprint string          // of the config that ran last
	lastRun     time.Time       // when it last checked
	checks      int             // how many checks it made
	reading     map[string]bool // settings (fingerprint) whose read-back has not returned yet, across reloads
	writing     map[string]bool // settings and record whose update has not returned yet, across reloads
}

// resume returns how long a new app waits before its first check, and
// the check count to continue from: a reload with the same settings keeps
// the schedule; new settings are checked at once.
func (s *state) resume(fingerprint string, interval time.Duration) (time.Duration, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fingerprint != fingerprint || s.lastRun.IsZero() {
		return 0, 0
	}
	return max(0, time.Until(s.lastRun.Add(interval))), s.checks
}

func (s *state) ran(fingerprint string, checks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fingerprint, s.lastRun, s.checks = fingerprint, time.Now(), checks
}

// recordState is one record in GET /hearth/ddns.
type recordState struct {
	Zone        string    `json:"zone"`
	Name        string    `json:"name"`
	Type        string    `json:"type"`
	CurrentIP   string    `json:"current_ip"`
	RecordValue string    `json:"record_value"`
	LastCheck   time.Time `json:"last_check"`
	LastChange  time.Time `json:"last_change,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

func (s *state) update(zone, name, version string, fn func(*recordState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := zone + "|" + name + "|" + version
	r := s.records[key]
	if r == nil {
		r = &recordState{Zone: zone, Name: name, Type: recordType(version)}
		s.records[key] = r
	}
	fn(r)
}

// backoff doubles the wait after consecutive failures, up to 8 intervals.
func (s *state) backoff(interval time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures++
	limit := time.Duration(math.MaxInt64)
	if interval <= limit/8 {
		limit = 8 * interval // (past it, 8 intervals wrapped negative: a check without a pause)
	}
	d := interval
	for i := 1; i < s.failures && d < limit; i++ {
		d = min(d, limit/2) * 2
	}
	return min(d, limit)
}

func (s *state) resetBackoff() {
	s.mu.Lock()
	s.failures = 0
	s.mu.Unlock()
}

func (s *state) snapshot(domains map[string][]string) []recordState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []recordState
	for _, r := range s.records {
		if slices.Contains(domains[r.Zone], r.Name) {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b recordState) int {
		return strings.Compare(a.Zone+a.Name+a.Type, b.Zone+b.Name+b.Type)
	})
	return out
}

// Destruct implements caddy.Destructor.
func (s *state) Destruct() error { return nil }

// memories keeps the state across reloads.
var memories = caddy.NewUsagePool()

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)

// echoService is the service an http source asks: its host, in lower case,
// without a trailing dot. Two URLs of one host (another path, a query, a
// port) are one service's answers, which must not count as two votes.
func echoService(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" {
		return strings.ToLower(strings.TrimRight(rawURL, "/"))
	}
	return strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
}
