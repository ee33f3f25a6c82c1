package ddns

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	caddyrfc2136 "github.com/caddy-dns/rfc2136"
	"github.com/libdns/libdns"
	"github.com/libdns/rfc2136"
	"github.com/miekg/dns"
)

// recordGetter is how the app reads back the records of the provider
// mod, whose names in a zone are names(zone): the provider's GetRecords,
// but rfc2136Reader for an RFC 2136 server; nil when it cannot.
func recordGetter(mod any, names func(zone string) []string) libdns.RecordGetter {
	if p, ok := mod.(*caddyrfc2136.Provider); ok && p.Provider != nil {
		return rfc2136Reader{provider: p.Provider, names: names}
	}
	getter, _ := mod.(libdns.RecordGetter)
	return getter
}

// rfc2136Reader reads back what an RFC 2136 server holds for the app's
// names: one TSIG-signed question for each name's A and AAAA records,
// in place of libdns/rfc2136's zone transfer. A transfer ends only when
// the server ends it, and libdns keeps every record of it: a hostile or
// broken server grew Caddy's memory without bound, and a record libdns
// could not parse left the transfer's goroutine and connection behind,
// at every read-back. A question's answer is one DNS message over TCP
// (at most 64 KiB), and ctx bounds each exchange.
type rfc2136Reader struct {
	provider *rfc2136.Provider
	names    func(zone string) []string // the names the app keeps in zone
}

// recordSetter is how the app sets the records of the provider mod: the
// provider's SetRecords, but rfc2136Writer for an RFC 2136 server; ok is
// false when it cannot set records.
func recordSetter(mod any) (setter libdns.RecordSetter, ok bool) {
	if p, ok := mod.(*caddyrfc2136.Provider); ok && p.Provider != nil {
		return rfc2136Writer{provider: p.Provider}, true
	}
	setter, ok = mod.(libdns.RecordSetter)
	return setter, ok
}

// checkProvider refuses, when the config is loaded, settings of the
// provider mod no update could be signed or sent with: for an RFC 2136
// server (a typo would otherwise fail every check with miekg/dns's "bad
// key algorithm" or "illegal base64 data"). The errors name the setting,
// never the key's value.
func checkProvider(mod any) error {
	m, ok := mod.(*caddyrfc2136.Provider)
	if !ok || m.Provider == nil {
		return nil
	}
	p := m.Provider
	if strings.TrimSpace(p.KeyName) == "" {
		return errors.New("ddns: rfc2136 key_name is empty: write the TSIG key's name as the DNS server knows it (BIND's `key \"name\" { … }`)")
	}
	if _, err := base64.StdEncoding.DecodeString(p.Key); err != nil {
		return errors.New("ddns: rfc2136 key is not base64: write the key's secret as the DNS server's key file holds it (`tsig-keygen` prints it as secret \"…\"), without quotes")
	}
	switch dns.CanonicalName(dns.Fqdn(p.KeyAlg)) {
	case dns.HmacSHA256, dns.HmacSHA512, dns.HmacSHA384, dns.HmacSHA224, dns.HmacSHA1:
	default:
		return fmt.Errorf("ddns: rfc2136 key_alg %q is not a TSIG algorithm Hearth signs with: write the key's algorithm as the DNS server's key file names it: hmac-sha256 (tsig-keygen's default), hmac-sha512, hmac-sha384, hmac-sha224 or hmac-sha1 (hmac-md5 is no longer supported: make a new key with `tsig-keygen`)", p.KeyAlg)
	}
	if host, port, err := net.SplitHostPort(p.Server); err != nil || host == "" || port == "" {
		return fmt.Errorf("ddns: rfc2136 server %q is not host:port: write the zone's primary DNS server with its port, like 192.0.2.53:53 or ns1.example.net:53", p.Server)
	}
	return nil
}

// signedExchange sends msg to p's server signed with p's key, and returns
// the server's answer, which must be signed with the same key: miekg/dns
// checks a signature an answer has, but takes one without any, so
// anyone on the path could answer in the server's place (libdns/rfc2136
// v1.0.0 takes such an answer to an update as the update done). what
// says what was asked, for errors.
func signedExchange(ctx context.Context, p *rfc2136.Provider, msg *dns.Msg, what string) (*dns.Msg, error) {
	keyName := dns.CanonicalName(p.KeyName) // a server signs with the name in lower case
	client := &dns.Client{Net: "tcp", TsigSecret: map[string]string{keyName: p.Key}}
	msg.SetTsig(keyName, dns.Fqdn(p.KeyAlg), 300, time.Now().Unix())
	answer, _, err := client.ExchangeContext(ctx, msg, p.Server)
	if err != nil {
		return nil, fmt.Errorf("%s, at %s: %w", what, p.Server, err)
	}
	if answer.IsTsig() == nil {
		return nil, fmt.Errorf("%s: %s answered %s without signing it with the key %s: a server that knows the key signs even its refusals, so check that server is the zone's primary and holds the key (or someone on the path answered in its place)", what, p.Server, dns.RcodeToString[answer.Rcode], p.KeyName)
	}
	return answer, nil
}

// rfc2136Writer sets the app's records on an RFC 2136 server: the update
// libdns/rfc2136 sends (each name and type's records replaced), through
// signedExchange, so that only the server's signed answer counts as the
// update done.
type rfc2136Writer struct {
	provider *rfc2136.Provider
}

// SetRecords replaces, in zone, the records of each name and type of
// records with records.
func (w rfc2136Writer) SetRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	zone = dns.Fqdn(zone)
	rrs := make([]dns.RR, 0, len(records))
	for _, rec := range records {
		r := rec.RR()
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", libdns.AbsoluteName(r.Name, zone), int64(r.TTL/time.Second), r.Type, r.Data))
		if err != nil || rr == nil {
			return nil, fmt.Errorf("record %s %s %q cannot be sent: %v", r.Name, r.Type, r.Data, err)
		}
		rrs = append(rrs, rr)
	}
	update := new(dns.Msg)
	update.SetUpdate(zone)
	update.RemoveRRset(rrs)
	update.Insert(rrs)
	answer, err := signedExchange(ctx, w.provider, update, "updating "+zone)
	if err != nil {
		return nil, err
	}
	if answer.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("updating %s: %s answered %s%s", zone, w.provider.Server, dns.RcodeToString[answer.Rcode], extendedErrors(answer))
	}
	return records, nil
}

// extendedErrors is what an answer's extended DNS errors (RFC 8914) say,
// quoted, or "": BIND says there why it refused an update.
func extendedErrors(m *dns.Msg) string {
	var text strings.Builder
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if ede, ok := o.(*dns.EDNS0_EDE); ok {
				fmt.Fprintf(&text, " (%s: %q)", dns.ExtendedErrorCodeToString[ede.InfoCode], ede.ExtraText)
			}
		}
	}
	return text.String()
}

// GetRecords returns the A and AAAA records of the app's names in zone.
func (r rfc2136Reader) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	p := r.provider
	var records []libdns.Record
	for _, name := range r.names(zone) {
		relative := relativeName(name, zone)
		owner := dns.Fqdn(zone)
		if relative != "@" {
			owner = relative + "." + owner
		}
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
			question := new(dns.Msg)
			question.SetQuestion(owner, qtype)
			question.RecursionDesired = false // the zone's own server
			answer, err := signedExchange(ctx, p, question, "asking for "+owner+" "+dns.TypeToString[qtype])
			if err != nil {
				return nil, err
			}
			switch answer.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError: // records, or none
			default:
				return nil, fmt.Errorf("%s answered the question for %s %s with %s", p.Server, owner, dns.TypeToString[qtype], dns.RcodeToString[answer.Rcode])
			}
			for _, rr := range answer.Answer {
				if !strings.EqualFold(rr.Header().Name, owner) {
					continue // a CNAME's target, or what the question did not ask
				}
				var ip netip.Addr
				switch v := rr.(type) {
				case *dns.A:
					ip, _ = netip.AddrFromSlice(v.A.To4())
				case *dns.AAAA:
					ip, _ = netip.AddrFromSlice(v.AAAA)
				}
				if !ip.IsValid() {
					continue
				}
				records = append(records, libdns.RR{Name: relative, Type: dns.TypeToString[rr.Header().Rrtype],
					Data: ip.String(), TTL: time.Duration(rr.Header().Ttl) * time.Second})
			}
		}
	}
	if ctx.Err() != nil {
		return nil, errors.Join(errors.New("the DNS server did not finish answering in time"), ctx.Err())
	}
	return records, nil
}
