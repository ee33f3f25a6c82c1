package ddns

import (
	"context"
	"errors"
	"fmt"
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

// GetRecords returns the A and AAAA records of the app's names in zone.
func (r rfc2136Reader) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	p := r.provider
	keyName := dns.CanonicalName(p.KeyName) // a server signs with the name in lower case
	client := &dns.Client{Net: "tcp", TsigSecret: map[string]string{keyName: p.Key}}
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
			question.SetTsig(keyName, dns.Fqdn(p.KeyAlg), 300, time.Now().Unix())
			answer, _, err := client.ExchangeContext(ctx, question, p.Server)
			if err != nil {
				return nil, fmt.Errorf("asking %s for %s %s: %w", p.Server, owner, dns.TypeToString[qtype], err)
			}
			if answer.IsTsig() == nil { // else anyone on the path could answer
				return nil, fmt.Errorf("%s answered the question for %s %s without signing it with the key %s", p.Server, owner, dns.TypeToString[qtype], p.KeyName)
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
