package ddns

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"

	"github.com/hearth-dev/hearth/modules/hearth"
)

// fakeUpdateServer answers update requests with reply and counts them.
func fakeUpdateServer(t *testing.T, reply *atomic.Value, requests *atomic.Int32, check func(*http.Request)) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		check(r)
		w.Write([]byte(reply.Load().(string)))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func addr(name, ip string) []libdns.Record {
	return []libdns.Record{libdns.Address{Name: name, IP: netip.MustParseAddr(ip)}}
}

// TestDynDNS2Replies drives the provider through every reply code of the
// protocol and checks the behaviour it requires.
func TestDynDNS2Replies(t *testing.T) {
	for _, tc := range []struct {
		reply   string
		ok      bool
		stopped bool
		paused  bool // for serviceTroubleWait
	}{
		{"good 203.0.113.9", true, false, false},
		{"nochg 203.0.113.9", true, false, false},
		{"badauth", false, true, false},
		{"nohost", false, true, false},
		{"notfqdn", false, true, false},
		{"abuse", false, true, false},
		{"badagent", false, true, false},
		{"dnserr", false, false, true},
		{"911", false, false, true},
		{"something else", false, false, false},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			var reply atomic.Value
			reply.Store(tc.reply)
			var requests atomic.Int32
			url := fakeUpdateServer(t, &reply, &requests, func(r *http.Request) {
				user, pass, ok := r.BasicAuth()
				q := r.URL.Query()
				if r.URL.Path != "/nic/update" || !ok || user != "u" || pass != "p" ||
					q.Get("hostname") != "home.example.net" || q.Get("myip") != "203.0.113.9" ||
					!strings.Contains(r.UserAgent(), "Hearth") {
					t.Errorf("request %s %v %q", r.URL, r.Header, r.UserAgent())
				}
			})
			p := &DynDNS2{Server: url, Username: "u", Password: "p"}
			if err := p.Provision(caddy.Context{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Cleanup() })
			ctx := context.Background()
			_, err := p.SetRecords(ctx, "example.net.", addr("home", "203.0.113.9"))
			if (err == nil) != tc.ok || errors.Is(err, ErrStopped) != tc.stopped {
				t.Fatalf("reply %q: err %v", tc.reply, err)
			}
			// again: a stop sends nothing more; nochg is never repeated;
			// 911 and dnserr wait 30 minutes; good and other failures are
			// tried again
			_, err = p.SetRecords(ctx, "example.net.", addr("home", "203.0.113.9"))
			want := int32(2)
			if tc.stopped || tc.paused || strings.HasPrefix(tc.reply, "nochg") {
				want = 1
			}
			if tc.paused && (err == nil || !strings.Contains(err.Error(), "not asking it again for another")) {
				t.Errorf("reply %q, then: %v", tc.reply, err)
			}
			if got := requests.Load(); got != want {
				t.Errorf("reply %q: %d requests after two updates, want %d", tc.reply, got, want)
			}
		})
	}
}

// A reload that keeps the provider's settings keeps what the service
// said: a nochg is not sent again (dyndns2 takes that for abuse). A stop
// is the config's: a reload asks again (the account may have been fixed
// on the service's site, or the names changed).
func TestUpdateServiceAcrossAReload(t *testing.T) {
	var reply atomic.Value
	reply.Store("nochg 203.0.113.9")
	var requests atomic.Int32
	url := fakeUpdateServer(t, &reply, &requests, func(*http.Request) {})
	provision := func(password string) *DynDNS2 {
		p := &DynDNS2{Server: url, Username: "u", Password: password}
		if err := p.Provision(caddy.Context{}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx := context.Background()
	old := provision("p")
	if _, err := old.SetRecords(ctx, "example.net.", addr("home", "203.0.113.9")); err != nil {
		t.Fatalf("nochg: %v", err)
	}
	reloaded := provision("p") // the new config is provisioned before the old one is cleaned up
	old.Cleanup()
	if _, err := reloaded.SetRecords(ctx, "example.net.", addr("home", "203.0.113.9")); err != nil || requests.Load() != 1 {
		t.Fatalf("after a reload with the same settings: %v, %d requests (want the nochg remembered, 1 request)", err, requests.Load())
	}
	reply.Store("badauth")
	if _, err := reloaded.SetRecords(ctx, "example.net.", addr("home", "203.0.113.10")); !errors.Is(err, ErrStopped) {
		t.Fatalf("badauth: %v", err)
	}
	again := provision("p")
	reloaded.Cleanup()
	defer again.Cleanup()
	reply.Store("good 203.0.113.10")
	if _, err := again.SetRecords(ctx, "example.net.", addr("home", "203.0.113.10")); err != nil || requests.Load() != 3 {
		t.Fatalf("a reload after badauth: %v, %d requests (want it asked again: 3)", err, requests.Load())
	}
}

// An HTTP 429 or 503 with Retry-After pauses the service that long.
func TestUpdateServiceRetryAfter(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Retry-After", "600")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	p := &DuckDNS{Server: srv.URL, Token: "a-duck-token-0123456789"}
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	defer p.Cleanup()
	ctx := context.Background()
	for range 3 {
		p.SetRecords(ctx, "duckdns.org.", addr("home", "203.0.113.9"))
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests after a 429 with Retry-After 600, want 1", n)
	}
	for in, want := range map[string]time.Duration{"": 0, "x": 0, "0": time.Minute, "120": 2 * time.Minute, "999999": maxServiceWait,
		time.Now().Add(time.Hour).UTC().Format(http.TimeFormat): time.Hour} {
		h := http.Header{}
		if in != "" {
			h.Set("Retry-After", in)
		}
		if got := retryAfter(h); got.Round(time.Minute) != want {
			t.Errorf("Retry-After %q: %v, want %v", in, got, want)
		}
	}
}

func TestDuckDNS(t *testing.T) {
	var reply atomic.Value
	reply.Store("OK")
	var requests atomic.Int32
	url := fakeUpdateServer(t, &reply, &requests, func(r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/update" || q.Get("domains") != "myhome" || q.Get("token") != "tok" || q.Get("ip") != "203.0.113.9" {
			t.Errorf("request %s", r.URL)
		}
	})
	p := &DuckDNS{Server: url, Token: "tok"}
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Cleanup() })
	ctx := context.Background()
	if _, err := p.SetRecords(ctx, "duckdns.org", addr("myhome", "203.0.113.9")); err != nil {
		t.Fatalf("OK: %v", err)
	}
	reply.Store("KO")
	if _, err := p.SetRecords(ctx, "duckdns.org", addr("myhome", "203.0.113.9")); !errors.Is(err, ErrStopped) {
		t.Fatalf("KO: %v", err)
	}
	p.SetRecords(ctx, "duckdns.org", addr("myhome", "203.0.113.9"))
	if got := requests.Load(); got != 2 {
		t.Errorf("%d requests, want 2 (none after KO)", got)
	}
}

// TestDuckDNSTXT: the ACME DNS challenge's records go through Duck DNS's
// update API: the value with txt=, its removal with clear=true, on the
// domain the challenge name is under; KO is an error naming the domain.
func TestDuckDNSTXT(t *testing.T) {
	var reply atomic.Value
	reply.Store("OK")
	var requests atomic.Int32
	var queries []string
	p := &DuckDNS{Token: "tok", Server: fakeUpdateServer(t, &reply, &requests, func(r *http.Request) {
		if r.URL.Path != "/update" {
			t.Errorf("path %s", r.URL.Path)
		}
		queries = append(queries, r.URL.Query().Encode())
	})}
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Cleanup() })
	var _ certmagic.DNSProvider = p // what Caddy asks of a DNS-01 provider
	challenge := []libdns.Record{libdns.TXT{Name: "_acme-challenge.home", Text: "key-authorization-digest"}}
	if done, err := p.AppendRecords(context.Background(), "duckdns.org.", challenge); err != nil || len(done) != 1 {
		t.Fatalf("AppendRecords: %v %v", done, err)
	}
	if done, err := p.DeleteRecords(context.Background(), "duckdns.org.", challenge); err != nil || len(done) != 1 {
		t.Fatalf("DeleteRecords: %v %v", done, err)
	}
	want := []string{"domains=home&token=tok&txt=key-authorization-digest", "clear=true&domains=home&token=tok&txt="}
	if strings.Join(queries, " ") != strings.Join(want, " ") {
		t.Errorf("queries %q, want %q", queries, want)
	}
	reply.Store("KO")
	if _, err := p.AppendRecords(context.Background(), "duckdns.org.", challenge); err == nil || !strings.Contains(err.Error(), "KO") || !strings.Contains(err.Error(), "home") {
		t.Errorf("a KO: %v", err)
	}
	if _, err := p.AppendRecords(context.Background(), "duckdns.org.", addr("home", "203.0.113.1")); err == nil {
		t.Error("an address record was appended")
	}
}

// TestDynDNS2RefusesTXT: dyndns2 has the methods of a DNS challenge
// provider only to refuse with the reason and the ways out.
func TestDynDNS2RefusesTXT(t *testing.T) {
	p := &DynDNS2{}
	var _ certmagic.DNSProvider = p
	if hearth.SolvesDNSChallenge(p) {
		t.Error("dyndns2 claims to solve the DNS challenge")
	}
	_, err := p.AppendRecords(context.Background(), "example.net.", []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "x"}})
	if err == nil || !strings.Contains(err.Error(), "cannot create the TXT record") || !strings.Contains(err.Error(), "forward port 80") {
		t.Errorf("AppendRecords: %v", err)
	}
	if !hearth.SolvesDNSChallenge(&DuckDNS{}) {
		t.Error("duckdns does not solve the DNS challenge")
	}
}

// An update carries credentials: a service that redirects (to another
// port of its host, where Go would send Basic auth again; to Caddy's admin
// API) is not followed.
func TestDynDNS2FollowsNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Write([]byte("good 203.0.113.9"))
	}))
	t.Cleanup(other.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := other.URL + r.URL.RequestURI()
		switch r.URL.Query().Get("hostname") {
		case "long.example.net": // a Location of 60 KB
			to = "http://" + strings.Repeat("a", 60000) + ".example/"
		case "unparsable.example.net": // Go quotes it twice in its error
			to = "http://[::1" + strings.Repeat("a", 60000)
		}
		http.Redirect(w, r, to, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	p := &DynDNS2{Server: srv.URL, Username: "u", Password: "p"}
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Cleanup() })
	_, err := p.SetRecords(context.Background(), "example.net.", addr("home", "203.0.113.9"))
	if err == nil || !strings.Contains(err.Error(), "not followed") {
		t.Fatalf("a redirecting service: %v", err)
	}
	// the error, which goes into every record's status, stays short
	_, err = p.SetRecords(context.Background(), "example.net.", addr("long", "203.0.113.9"))
	if err == nil || !strings.Contains(err.Error(), "not followed") || len(err.Error()) > 1000 {
		t.Fatalf("a redirect to a long Location: an error of %d bytes: %.300v", len(err.Error()), err)
	}
	_, err = p.SetRecords(context.Background(), "example.net.", addr("unparsable", "203.0.113.9"))
	if err == nil || len(err.Error()) > 1000 {
		t.Fatalf("a redirect to an unparsable Location: an error of %d bytes", len(fmt.Sprint(err)))
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times (with the credentials)", n)
	}
}

// TestDynDNS2AddressBack: nochg is remembered only until the host gets
// another address: X (nochg), then Y (good), then X again must be sent,
// or the service would keep Y for good while Hearth believes X is set.
func TestDynDNS2AddressBack(t *testing.T) {
	var reply atomic.Value
	reply.Store("nochg")
	var requests atomic.Int32
	url := fakeUpdateServer(t, &reply, &requests, func(*http.Request) {})
	p := &DynDNS2{Server: url, Username: "u", Password: "p"}
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Cleanup() })
	ctx := context.Background()
	for i, step := range []struct {
		ip, reply string
		requests  int32
	}{
		{"203.0.113.9", "nochg", 1}, {"203.0.113.10", "good", 2}, {"203.0.113.9", "nochg", 3},
		// the AAAA record is another: its answers leave the A record's alone
		{"2001:db8::9", "good", 4}, {"203.0.113.9", "good", 4}, {"2001:db8::9", "nochg", 5}, {"2001:db8::9", "good", 5},
	} {
		reply.Store(step.reply)
		if _, err := p.SetRecords(ctx, "example.net.", addr("home", step.ip)); err != nil {
			t.Fatalf("update %d to %s: %v", i+1, step.ip, err)
		}
		if got := requests.Load(); got != step.requests {
			t.Fatalf("after update %d, to %s: %d requests, want %d", i+1, step.ip, got, step.requests)
		}
	}
}

// TestIPSourceRedirects: an http source follows a redirect on its own
// host, never to another host, nor from https down to http.
func TestIPSourceRedirects(t *testing.T) {
	req := func(u string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, u, nil)
		return r
	}
	for _, tc := range []struct {
		from, to string
		want     string
	}{
		{"http://ip.example/", "https://ip.example/v4", ""},
		{"https://ip.example/", "https://ip.example/v4", ""},
		{"https://ip.example/", "https://evil.example/", "another host"},
		{"https://ip.example/", "http://ip.example/", "from https to http"},
		{"https://ip.example/", "http://ip.example:8080/", "from https to http"},
	} {
		err := ipEchoClient.CheckRedirect(req(tc.to), []*http.Request{req(tc.from)})
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s to %s: %v, want %q", tc.from, tc.to, err, tc.want)
		}
	}
}

// TestUpdateServicesOverHTTPS: an account's password or token never goes
// out in clear text, and an address is not taken from a plain-http answer
// anyone on the way could write; plain http stays for loopback (tests).
func TestUpdateServicesOverHTTPS(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  func() error
		want string
	}{
		{"dyndns2 over http", func() error {
			return (&DynDNS2{Server: "http://dynupdate.example", Username: "u", Password: "p"}).Provision(caddy.Context{})
		}, "dyndns2: server http://dynupdate.example is plain http"},
		{"duckdns over http", func() error {
			return (&DuckDNS{Server: "http://www.duckdns.org", Token: "t"}).Provision(caddy.Context{})
		}, "duckdns: server http://www.duckdns.org is plain http"},
		{"duckdns without a scheme", func() error { return (&DuckDNS{Server: "www.duckdns.org", Token: "t"}).Provision(caddy.Context{}) }, "is not a URL"},
		{"an http source over http", func() error { return IPSource{Source: "http", URL: "http://ip.example/"}.check() }, "http http://ip.example/ is plain http"},
		{"dyndns2 over https", func() error {
			return (&DynDNS2{Server: "https://dynupdate.example", Username: "u", Password: "p"}).Provision(caddy.Context{})
		}, ""},
		{"dyndns2 on loopback", func() error {
			return (&DynDNS2{Server: "http://127.0.0.1:8053", Username: "u", Password: "p"}).Provision(caddy.Context{})
		}, ""},
		{"an http source on loopback", func() error { return IPSource{Source: "http", URL: "http://[::1]:9/"}.check() }, ""},
	} {
		err := tc.err()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestUpdateErrorsWithoutCredentials: an update that fails on the way
// (here, a server that closes the connection) returns an error that quotes
// the URL without duckdns's token: Caddy's tls app logs the DNS challenge's
// errors as they are, past the app's redactor.
func TestUpdateErrorsWithoutCredentials(t *testing.T) {
	const token = "a-duck-token-0123456789"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	p := &DuckDNS{Token: token, Server: srv.URL}
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Cleanup() })
	challenge := []libdns.Record{libdns.TXT{Name: "_acme-challenge.home", Text: "digest"}}
	for name, call := range map[string]func() error{
		"append": func() error { _, err := p.AppendRecords(context.Background(), "duckdns.org.", challenge); return err },
		"delete": func() error { _, err := p.DeleteRecords(context.Background(), "duckdns.org.", challenge); return err },
		"set": func() error {
			_, err := p.SetRecords(context.Background(), "duckdns.org.", addr("home", "203.0.113.1"))
			return err
		},
	} {
		err := call()
		if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "token="+redacted) || !strings.Contains(err.Error(), "domains=home") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestWithoutCredentials(t *testing.T) {
	for in, want := range map[string]string{
		"https://www.duckdns.org/update?domains=home&token=abc&ip=1.2.3.4": "https://www.duckdns.org/update?domains=home&token=[redacted]&ip=1.2.3.4",
		"https://u:p@dyn.example/nic/update?hostname=h&myip=1.2.3.4":       "https://%5Bredacted%5D@dyn.example/nic/update?hostname=h&myip=1.2.3.4",
		"https://x.example/u?Api_Key=k&password=p&a%zz=1":                  "https://x.example/u?Api_Key=[redacted]&password=[redacted]&a%zz=[redacted]",
		"https://x.example/u": "https://x.example/u",
	} {
		if got := withoutCredentials(in); got != want {
			t.Errorf("withoutCredentials(%q) = %q, want %q", in, got, want)
		}
	}
}
