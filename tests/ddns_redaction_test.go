package tests

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeCloudflare is Cloudflare's API on loopback: Caddy reaches it through
// an HTTPS proxy (HTTPS_PROXY) that answers CONNECT to api.cloudflare.com
// with TLS under a test CA (SSL_CERT_FILE). Down, the proxy answers 502;
// up, every API request gets 403 with an error that quotes the request's
// Authorization header and URL, as a misbehaving API or middlebox might.
type fakeCloudflare struct {
	proxy  string // http://127.0.0.1:port
	caFile string
	mu     sync.Mutex
	down   bool
	seen   []string   // Authorization headers received
	conns  []net.Conn // open tunnels, closed when it goes down
}

func startFakeCloudflare(t *testing.T) *fakeCloudflare {
	t.Helper()
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Hearth test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "api.cloudflare.com"}, DNSNames: []string{"api.cloudflare.com"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCloudflare{caFile: filepath.Join(t.TempDir(), "ca.pem")}
	if err := os.WriteFile(f.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.Header.Get("Authorization"))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(map[string]any{"success": false, "result": nil, "messages": []any{},
			"errors": []any{map[string]any{"code": 10000, "message": fmt.Sprintf("Authentication error: Authorization: %s for %s %s", r.Header.Get("Authorization"), r.Method, r.URL.RequestURI())}}})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down := f.down
		f.mu.Unlock()
		if r.Method != http.MethodConnect || r.Host != "api.cloudflare.com:443" || down {
			http.Error(w, "no route to "+r.Host, http.StatusBadGateway)
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, conn)
		f.mu.Unlock()
		conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		tlsConn := tls.Server(conn, tlsConfig)
		defer tlsConn.Close()
		br := bufio.NewReader(tlsConn)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			rec := &responseBuffer{header: http.Header{}}
			api.ServeHTTP(rec, req)
			resp := &http.Response{StatusCode: rec.status, ProtoMajor: 1, ProtoMinor: 1, Header: rec.header,
				Body: io.NopCloser(strings.NewReader(rec.body.String())), ContentLength: int64(rec.body.Len())}
			if resp.Write(tlsConn) != nil {
				return
			}
		}
	})}
	go proxy.Serve(ln)
	t.Cleanup(func() { proxy.Close() })
	f.proxy = "http://" + ln.Addr().String()
	return f
}

func (f *fakeCloudflare) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
}

// responseBuffer is a minimal http.ResponseWriter.
type responseBuffer struct {
	header http.Header
	status int
	body   strings.Builder
}

func (b *responseBuffer) Header() http.Header { return b.header }
func (b *responseBuffer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = 200
	}
	return b.body.Write(p)
}
func (b *responseBuffer) WriteHeader(code int) { b.status = code }

// echoingDNS is a DNS server on loopback (TCP, as the rfc2136 provider
// uses) that refuses every update with an Extended DNS Error whose text
// quotes the TSIG key it was given, signed with that key (an unsigned
// answer is not taken).
func echoingDNS(t *testing.T, key string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, TsigSecret: map[string]string{"hearth-test.": key}, MsgAcceptFunc: func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeRefused)
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		opt.SetUDPSize(1232)
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeProhibited, ExtraText: "update signed with key hearth-test secret " + key + " is not allowed"})
		m.Extra = append(m.Extra, opt)
		m.SetTsig("hearth-test.", dns.HmacSHA256, 300, time.Now().Unix()) // the configured server, which knows the key
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestDDNSErrorsNeverShowCredentials: a Duck DNS token, a TSIG key and a
// Cloudflare token never appear in Caddy's log, GET /hearth/ddns, the
// dashboard's page and /status.json, or the metrics, after failures of
// every kind: a wrong key, an unreachable server, error answers that quote
// the request or the key, and a Provision error that prints the token;
// while the errors themselves are still shown.
func TestDDNSErrorsNeverShowCredentials(t *testing.T) {
	n := startNamed(t)
	cf := startFakeCloudflare(t)
	t.Setenv("HTTPS_PROXY", cf.proxy)
	t.Setenv("https_proxy", cf.proxy)
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	t.Setenv("SSL_CERT_FILE", cf.caFile)

	duckToken := "duck-4b6f0e1a-77c2-4d2b-9b1e-5a3c2d1e0f9a"
	wrongKey := base64.StdEncoding.EncodeToString([]byte("a-wrong-tsig-key/for+hearth?tests"))
	cfToken := "cfTok_Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3"
	cfBadToken := "cf-short-secret-8c1d2e"
	secrets := []string{duckToken, n.secret, wrongKey, url.QueryEscape(n.secret), url.QueryEscape(wrongKey), cfToken, cfBadToken}

	// Duck DNS's fake: replies that quote the request, whole or cut short
	var duckMode sync.Map
	duckMode.Store("mode", "quote")
	duck := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mode, _ := duckMode.Load("mode")
		if mode == "quote" {
			fmt.Fprintf(w, "error: token %s is not valid for %s", r.URL.Query().Get("token"), r.URL.RequestURI())
		} else {
			fmt.Fprintf(w, "error in request %s", r.URL.RequestURI())
		}
	})}
	duckLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go duck.Serve(duckLn)
	defer duck.Close()
	closed := freePort(t)
	echoPort := echoingDNS(t, n.secret)

	dashPort := freePort(t)
	config := func(ip int, provider, domains string) string {
		return fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		dashboard 127.0.0.1:%d
	}
	ddns {
		provider %s
		domains {
			%s
		}
		ip_source static 203.0.113.%d
		interval 1h
	}
}
`, dashPort, provider, domains, ip)
	}
	duckDNS := func(server string) string {
		return fmt.Sprintf("duckdns {\n\t\t\ttoken %s\n\t\t\tserver %s\n\t\t}", duckToken, server)
	}
	rfc2136 := func(key string, port int) string {
		return fmt.Sprintf("rfc2136 {\n\t\t\tkey_name hearth-test\n\t\t\tkey_alg hmac-sha256\n\t\t\tkey %s\n\t\t\tserver 127.0.0.1:%d\n\t\t}", key, port)
	}
	cloudflare := func(token string) string {
		return fmt.Sprintf("cloudflare {\n\t\t\tapi_token %s\n\t\t}", token)
	}

	c := launchCaddy(t, config(1, duckDNS("http://"+duckLn.Addr().String()), "duckdns.org myhome"))
	// check reads every place an error reaches and fails on a secret
	check := func(kind string) {
		t.Helper()
		places := map[string]string{"the log": c.log.String()}
		for what, u := range map[string]string{
			"GET /hearth/ddns": "http://" + c.admin + "/hearth/ddns",
			"the metrics":      "http://" + c.admin + "/metrics",
		} {
			places[what] = adminGet(t, u)
		}
		_, places["the dashboard's /status.json"] = dashboardGet(t, fmt.Sprintf("http://127.0.0.1:%d/status.json", dashPort), "127.0.0.1")
		_, places["the dashboard's page"] = dashboardGet(t, fmt.Sprintf("http://127.0.0.1:%d/", dashPort), "127.0.0.1")
		for what, body := range places {
			for _, secret := range secrets {
				if strings.Contains(body, secret) {
					i := strings.Index(body, secret)
					t.Errorf("after %s, %s shows the secret %q: …%s…", kind, what, secret, body[max(0, i-200):min(len(body), i+len(secret)+50)])
				}
			}
		}
		if kind != "a malformed Cloudflare token" && !strings.Contains(places["the metrics"], "hearth_ddns_errors_total") {
			t.Errorf("after %s, no hearth_ddns_errors_total in the metrics", kind)
		}
	}
	// fail waits until the record's last_error holds want
	fail := func(kind string, want ...string) {
		t.Helper()
		var last string
		defer func() {
			if t.Failed() {
				t.Logf("%s: last_error %q", kind, last)
			}
		}()
		waitFor(t, 45*time.Second, kind+" in last_error", func() bool {
			st := ddnsState(t, c, http.MethodGet)
			if len(st.Records) != 1 {
				return false
			}
			last = st.Records[0].LastError
			for _, w := range want {
				if !strings.Contains(last, w) {
					return false
				}
			}
			return true
		})
		t.Logf("%s: last_error %q", kind, last)
		check(kind)
	}
	reload := func(config string) {
		t.Helper()
		if code, body := c.load(config); code != 200 {
			t.Fatalf("reload: %d %s", code, body)
		}
	}

	fail("a Duck DNS reply quoting the token", "unexpected reply", "error: token")
	duckMode.Store("mode", "long")
	reload(config(2, duckDNS("http://"+duckLn.Addr().String()), "duckdns.org myhome"))
	fail("a Duck DNS reply quoting the request, cut short", "unexpected reply", "error in request /update?")
	reload(config(3, duckDNS(fmt.Sprintf("http://127.0.0.1:%d", closed)), "duckdns.org myhome"))
	fail("an unreachable Duck DNS", "connection refused", fmt.Sprintf("127.0.0.1:%d/update?", closed))

	reload(config(4, rfc2136(wrongKey, n.port), "example.test home"))
	fail("a wrong TSIG key", "refused the update's signature")
	reload(config(5, rfc2136(n.secret, closed), "example.test home"))
	fail("an unreachable DNS server", "connection refused")
	reload(config(6, rfc2136(n.secret, echoPort), "example.test home"))
	fail("a DNS server quoting the key", "REFUSED", "update signed with key hearth-test secret")

	reload(config(7, cloudflare(cfToken), "example.net home"))
	fail("Cloudflare refusing the token, quoting the request", "HTTP 403", "Authentication error")
	cf.mu.Lock()
	sent := strings.Join(cf.seen, " ")
	cf.mu.Unlock()
	if !strings.Contains(sent, cfToken) {
		t.Fatalf("the fake Cloudflare API never saw the token (requests with %q)", sent)
	}
	cf.setDown(true)
	reload(config(8, cloudflare(cfToken), "example.net home"))
	fail("an unreachable Cloudflare", "Bad Gateway", "api.cloudflare.com")

	// a token Cloudflare's module rejects when it loads: it prints it
	code, body := c.load(config(9, cloudflare(cfBadToken), "example.net home"))
	if code == 200 || !strings.Contains(body, "appears invalid") {
		t.Errorf("a malformed Cloudflare token: %d %s", code, body)
	}
	if strings.Contains(body, cfBadToken) {
		t.Errorf("the admin API's answer shows the token: %s", body)
	}
	check("a malformed Cloudflare token")
}

// adminGet reads u from Caddy's admin API on a connection of its own,
// sending the request again when the connection closes unanswered: Caddy
// replaces its admin server at every load, a refused one too, and a
// connection the old server accepted (or a kept-alive one) as it stopped
// is closed (seen in CI right after a refused load).
func adminGet(t *testing.T, u string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for try := 1; ; try++ {
		resp, err := client.Get(u)
		if err == nil {
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("GET %s: %v", u, err)
			}
			return string(body)
		}
		if try == 3 || !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("GET %s: %v", u, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
