package ddns

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/libdns/libdns"
	"github.com/libdns/rfc2136"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

const testKey = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0" // base64 of the TSIG secret

// hostileDNS is the configured DNS server turned hostile: it answers a
// zone transfer (AXFR) with A records for as long as it is asked, and
// each question as answer says (signed unless unsigned).
type hostileDNS struct {
	addr      string
	transfers atomic.Int64
	updates   chan *dns.Msg // the updates it was sent
	badTSIG   atomic.Int64  // requests it got whose signature did not verify
}

func startHostileDNS(t *testing.T, answer func(q dns.Question) []dns.RR, unsigned bool) *hostileDNS {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileDNS{addr: ln.Addr().String(), updates: make(chan *dns.Msg, 16)}
	secrets := map[string]string{"k.": testKey}
	done := make(chan struct{})
	srv := &dns.Server{Listener: ln, TsigSecret: secrets, MsgAcceptFunc: acceptUpdates, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Qtype == dns.TypeAXFR {
			h.transfers.Add(1)
			ch := make(chan *dns.Envelope)
			go func() { _ = (&dns.Transfer{TsigSecret: secrets}).Out(w, r, ch); w.Close() }()
			batch := make([]dns.RR, 0, 1000)
			for i := 0; i < 1000; i++ {
				rr, _ := dns.NewRR("home.example.net. 300 IN A 203.0.113.7")
				batch = append(batch, rr)
			}
			for {
				select {
				case ch <- &dns.Envelope{RR: batch}:
				case <-done:
					close(ch)
					return
				}
			}
		}
		if r.IsTsig() != nil && w.TsigStatus() != nil {
			h.badTSIG.Add(1)
		}
		if r.Opcode == dns.OpcodeUpdate {
			select {
			case h.updates <- r.Copy():
			default:
			}
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		m.Answer = answer(r.Question[0])
		if !unsigned && r.IsTsig() != nil {
			m.SetTsig("k.", dns.HmacSHA256, 300, time.Now().Unix())
		}
		_ = w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { close(done); srv.Shutdown() })
	return h
}

// acceptUpdates is miekg/dns's accept function, which answers an update
// NOTIMP, but for updates.
func acceptUpdates(h dns.Header) dns.MsgAcceptAction {
	if int(h.Bits>>11)&0xF == dns.OpcodeUpdate {
		return dns.MsgAccept
	}
	return dns.DefaultMsgAcceptFunc(h)
}

func reader(server string) rfc2136Reader {
	return rfc2136Reader{
		// in capitals: a server signs its answers with the name in lower case
		provider: &rfc2136.Provider{KeyName: "K", KeyAlg: "hmac-sha256", Key: testKey, Server: server},
		names:    func(string) []string { return []string{"home", "example.net."} },
	}
}

// TestRFC2136ReadBack: the app's names are read back from an RFC 2136
// server by one signed question each for A and AAAA, never by a zone
// transfer, which a hostile server (the configured one, compromised)
// streamed forever into Caddy's memory; an unsigned answer, which anyone
// on the path could forge, is refused; a server that does not answer
// is given up on when the read-back's time is up.
func TestRFC2136ReadBack(t *testing.T) {
	answer := func(q dns.Question) []dns.RR {
		if q.Qtype != dns.TypeA {
			return nil
		}
		a, _ := dns.NewRR(q.Name + " 300 IN A 203.0.113.7")
		other, _ := dns.NewRR("elsewhere.example.net. 300 IN A 198.51.100.1")
		return []dns.RR{a, other}
	}
	h := startHostileDNS(t, answer, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	records, err := reader(h.addr).GetRecords(ctx, "example.net")
	if err != nil {
		t.Fatal(err)
	}
	if got := recordValue(records, "home", "example.net", "ipv4"); got != "203.0.113.7" {
		t.Errorf("home's A record read back as %q (%v)", got, records)
	}
	if got := recordValue(records, "example.net.", "example.net", "ipv4"); got != "203.0.113.7" {
		t.Errorf("the apex's A record read back as %q (%v)", got, records)
	}
	if len(records) != 2 {
		t.Errorf("records of names the app does not keep were read back: %v", records)
	}
	if n := h.transfers.Load(); n != 0 {
		t.Errorf("%d zone transfers asked for", n)
	}

	unsigned := startHostileDNS(t, answer, true)
	if _, err := reader(unsigned.addr).GetRecords(ctx, "example.net"); err == nil || !strings.Contains(err.Error(), "without signing it") {
		t.Errorf("an unsigned answer: %v, want it refused", err)
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	if _, err := reader(silent.Addr().String()).GetRecords(short, "example.net"); err == nil {
		t.Error("a server that never answers: no error")
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("a server that never answers held the read-back %s", waited)
	}
}

// TestRFC2136ProviderReadsByQuestion: the ddns app reads the records of
// the rfc2136 provider back with rfc2136Reader: against the hostile
// server, the read-back finds the record and asks for no zone transfer
// (libdns's own GetRecords asks for one, and never returns from this
// server while it keeps sending).
func TestRFC2136ProviderReadsByQuestion(t *testing.T) {
	h := startHostileDNS(t, func(q dns.Question) []dns.RR {
		if q.Qtype != dns.TypeA {
			return nil
		}
		a, _ := dns.NewRR(q.Name + " 300 IN A 203.0.113.7")
		return []dns.RR{a}
	}, false)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	mod, err := ctx.LoadModuleByID("dns.providers.rfc2136", []byte(`{"key_name": "k", "key_alg": "hmac-sha256", "key": "`+testKey+`", "server": "`+h.addr+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	a := &App{Domains: map[string][]string{"example.net": {"home"}}, state: &state{}, logger: zap.NewNop()}
	a.getter = recordGetter(mod, func(zone string) []string { return a.Domains[zone] })
	readCtx, cancelRead := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelRead()
	records, err := a.getRecords(readCtx, "example.net")
	if err != nil {
		t.Fatal(err)
	}
	if got := recordValue(records, "home", "example.net", "ipv4"); got != "203.0.113.7" {
		t.Errorf("read back %q", got)
	}
	if n := h.transfers.Load(); n != 0 {
		t.Errorf("the read-back asked the server for %d zone transfers", n)
	}
}

// TestRFC2136UpdateMustBeSigned: the ddns app's update to an RFC 2136
// server counts as done only when the server's answer is signed with the
// key: libdns/rfc2136 took an unsigned NOERROR, which anyone on the path
// can send, as the record set (and Hearth then skipped its updates until
// the next read-back). The update itself replaces the name's records of
// that type, signed.
func TestRFC2136UpdateMustBeSigned(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, tc := range []struct {
		name     string
		unsigned bool
		want     string // "" for done
	}{
		{"a signed answer", false, ""},
		{"an unsigned answer", true, "without signing it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHostileDNS(t, func(dns.Question) []dns.RR { return nil }, tc.unsigned)
			mod, err := ctx.LoadModuleByID("dns.providers.rfc2136", []byte(`{"key_name": "K", "key_alg": "hmac-sha256", "key": "`+testKey+`", "server": "`+h.addr+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			setter, ok := recordSetter(mod)
			if !ok {
				t.Fatal("the rfc2136 provider cannot set records")
			}
			updateCtx, cancelUpdate := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancelUpdate()
			rec := libdns.Address{Name: "home", TTL: 5 * time.Minute, IP: netip.MustParseAddr("203.0.113.9")}
			_, err = setter.SetRecords(updateCtx, "example.net", []libdns.Record{rec})
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("SetRecords: %v, want %q", err, tc.want)
			}
			select {
			case u := <-h.updates:
				if u.IsTsig() == nil {
					t.Error("the update was sent unsigned")
				}
				var removed, added bool
				for _, rr := range u.Ns {
					switch {
					case rr.Header().Class == dns.ClassANY && rr.Header().Rrtype == dns.TypeA && rr.Header().Name == "home.example.net.":
						removed = true
					case rr.String() == "home.example.net.\t300\tIN\tA\t203.0.113.9":
						added = true
					}
				}
				if !removed || !added {
					t.Errorf("the update does not replace home's A records with 203.0.113.9: %v", u.Ns)
				}
			case <-time.After(5 * time.Second):
				t.Error("no update reached the server")
			}
			if n := h.badTSIG.Load(); n != 0 {
				t.Errorf("the server could not verify the signature of %d requests", n)
			}
		})
	}
}

// TestLastErrorBounded: a record's last_error keeps at most maxLastError
// bytes of what it is told (a DNS server's extended error text may run
// to 64 KiB), redacted before it is cut, so a credential cut in half is
// not left for the redaction to miss.
func TestLastErrorBounded(t *testing.T) {
	provider := []byte(`{"name": "rfc2136", "key": "c2VjcmV0a2V5c2VjcmV0a2V5"}`)
	a := &App{state: &state{records: map[string]*recordState{}}, redact: newRedactor(provider, nil), logger: zap.NewNop()}
	long := strings.Repeat("x", maxLastError-10) + " c2VjcmV0a2V5c2VjcmV0a2V5 " + strings.Repeat("y", 64<<10)
	a.record("example.net", "home", "ipv4", func(r *recordState) { r.LastError = long })
	got := a.state.snapshot(map[string][]string{"example.net": {"home"}})
	if len(got) != 1 || len(got[0].LastError) > maxLastError+len("…") || strings.Contains(got[0].LastError, "c2VjcmV0") {
		t.Errorf("last_error of %d bytes kept as %d: %.80q…", len(long), len(got[0].LastError), got[0].LastError)
	}
}
