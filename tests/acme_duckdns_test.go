package tests

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDuckDNS speaks Duck DNS's documented update API
// (GET /update?domains=&token=&ip=&txt=&clear=, answering OK or KO) and
// keeps the records in BIND, as Duck DNS keeps them in its name servers:
// a domain's TXT record answers for every name under it, so it is written
// at <sub>.<zone> and at *.<sub>.<zone>.
type fakeDuckDNS struct {
	url   string
	n     *named
	token string
	mu    sync.Mutex
	calls []string // "ip <sub> <ip>", "txt <sub> <value>", "clear <sub>"
	// dropClears is how many clear requests to answer by closing the
	// connection (the client's error quotes the URL)
	dropClears int
}

func startFakeDuckDNS(t *testing.T, n *named, token string) *fakeDuckDNS {
	t.Helper()
	f := &fakeDuckDNS{n: n, token: token}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(f.update), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	f.url = "http://" + l.Addr().String()
	return f
}

func (f *fakeDuckDNS) update(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sub := q.Get("domains")
	if r.URL.Path != "/update" || q.Get("token") != f.token || sub == "" || strings.ContainsAny(sub, ",. ") {
		fmt.Fprint(w, "KO")
		return
	}
	f.mu.Lock()
	drop := q.Get("clear") == "true" && f.dropClears > 0
	if drop {
		f.dropClears--
		f.calls = append(f.calls, "dropped clear "+sub)
	}
	f.mu.Unlock()
	if drop {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	name := sub + "." + f.n.zone
	var lines, call string
	switch {
	case q.Get("clear") == "true":
		lines = fmt.Sprintf("update delete %[1]s TXT\nupdate delete *.%[1]s TXT\n", name)
		call = "clear " + sub
	case q.Get("txt") != "":
		lines = fmt.Sprintf("update delete %[1]s TXT\nupdate delete *.%[1]s TXT\nupdate add %[1]s 60 TXT %[2]q\nupdate add *.%[1]s 60 TXT %[2]q\n", name, q.Get("txt"))
		call = "txt " + sub + " " + q.Get("txt")
	case q.Get("ip") != "":
		lines = fmt.Sprintf("update delete %[1]s A\nupdate add %[1]s 60 A %[2]s\n", name, q.Get("ip"))
		call = "ip " + sub + " " + q.Get("ip")
	default:
		fmt.Fprint(w, "KO")
		return
	}
	cmd := exec.Command("nsupdate", "-y", "hmac-sha256:hearth-test.:"+f.n.secret)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("server 127.0.0.1 %d\n%ssend\n", f.n.port, lines))
	if out, err := cmd.CombinedOutput(); err != nil {
		http.Error(w, fmt.Sprintf("nsupdate: %v %s", err, out), 500)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
	fmt.Fprint(w, "OK")
}

func (f *fakeDuckDNS) made(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

// TestDNSChallengeThroughDuckDNS: a home.duckdns.org site on a port no CA
// can reach gets its certificate from the ACME CA (Pebble) by the DNS
// challenge through the ddns block's duckdns provider, pointed at a local
// server speaking Duck DNS's update API (txt=, clear=true), which keeps
// the records in BIND. The request that clears the TXT record afterwards
// fails on the way: Caddy logs the error, which quotes the request's URL,
// without the token.
func TestDNSChallengeThroughDuckDNS(t *testing.T) {
	t.Parallel()
	if !inOwnNetwork(t) {
		return
	}
	dir := t.TempDir()
	n := startNamedAt(t, 53, "duckdns.org")
	duck := startFakeDuckDNS(t, n, "a-duck-token-0123456789")
	duck.dropClears = 2 // Go retries a GET once on a reused connection
	ca := newTestCA(t, dir)
	p := startPebble(t, ca, "127.0.0.1:53")
	port := freePort(t)
	c := launchCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	acme_ca %s
	acme_ca_root %s
	email hearth@example.test
	tls_resolvers 127.0.0.1:53
	http_port %d
	ddns {
		provider duckdns {
			token a-duck-token-0123456789
			server %s
		}
		domains {
			duckdns.org home
		}
		ip_source static 127.0.0.1
		interval 1h
	}
}

home.duckdns.org:%d {
	bind 127.0.0.1
	respond "duck"
}
`, p.directory, ca.path, freePort(t), duck.url, port))
	roots := p.issuingRoots(t)
	var cert *x509.Certificate
	waitFor(t, 90*time.Second, "a certificate from Pebble through Duck DNS", func() bool {
		got, err := servedCertificate(port, "home.duckdns.org", roots)
		cert = got
		return err == nil
	})
	if !strings.Contains(cert.Issuer.CommonName, "Pebble") || cert.VerifyHostname("home.duckdns.org") != nil {
		t.Errorf("served certificate: issuer %q, names %v", cert.Issuer.CommonName, cert.DNSNames)
	}
	if !duck.made("txt home ") {
		t.Errorf("the Duck DNS server was not asked for the TXT record: %v", duck.calls)
	}
	if log := c.log.String(); !strings.Contains(log, `"challenge_type":"dns-01"`) {
		t.Errorf("the log does not show the DNS challenge:\n%s", tail(log, 30))
	}
	waitFor(t, 30*time.Second, "the failed clear of the TXT record logged", func() bool {
		return duck.made("dropped clear home") && strings.Contains(c.log.String(), "cleaning up solver")
	})
	if log := c.log.String(); strings.Contains(log, "a-duck-token-0123456789") || !strings.Contains(log, "token=[redacted]") {
		t.Errorf("the log has the token, or not the failed request:\n%s", tail(log, 20))
	}
}
