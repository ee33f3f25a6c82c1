package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// netnsEnv marks a test process already running inside a network
// namespace of its own (see inOwnNetwork).
const netnsEnv = "HEARTH_TEST_IN_NETNS"

// inOwnNetwork runs the calling test again inside a new network namespace
// with only loopback up (`unshare -n`), so that nothing it starts (an ACME
// CA validating challenges, DNS records pointing anywhere) can reach
// another machine. It returns true in the copy inside the namespace, which
// does the work; outside it reports the inner run's result and returns
// false.
func inOwnNetwork(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == "1" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("a network namespace of its own needs root (unshare -n)")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: `make test` installs util-linux and iproute2", tool)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-n", "sh", "-c", `ip link set lo up && exec "$@"`, "sh",
		self, "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("inside its own network namespace: %v\n%s", err, out)
	}
	return false
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	path string // its certificate, PEM
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Hearth test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, path: filepath.Join(dir, "ca.pem")}
	writeFile(t, ca.path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return ca
}

// issue writes a certificate for 127.0.0.1 and localhost signed by ca and
// its key, and returns their paths.
func (ca *testCA) issue(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "pebble.pem"), filepath.Join(dir, "pebble-key.pem")
	writeFile(t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certPath, keyPath
}

// pebble is Let's Encrypt's ACME test server, started by a test.
type pebble struct {
	directory  string // the ACME directory URL
	management string // https://127.0.0.1:<port>
	client     *http.Client
}

// startPebble starts Pebble with its listener certificate from ca,
// validating DNS challenges against dnsServer; its HTTP-01 and TLS-ALPN-01
// validations go to ports where nothing listens, so only DNS-01 can pass.
func startPebble(t *testing.T, ca *testCA, dnsServer string) *pebble {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		t.Fatalf("Pebble is not installed (%v): `make test` installs the pebble package", err)
	}
	dir := t.TempDir()
	certPath, keyPath := ca.issue(t, dir)
	acmePort, mgmtPort := freePort(t), freePort(t)
	config := filepath.Join(dir, "pebble.json")
	writeFile(t, config, fmt.Sprintf(`{"pebble": {
	"listenAddress": "127.0.0.1:%d",
	"managementListenAddress": "127.0.0.1:%d",
	"certificate": %q, "privateKey": %q,
	"httpPort": %d, "tlsPort": %d,
	"ocspResponderURL": "", "externalAccountBindingRequired": false}}`,
		acmePort, mgmtPort, certPath, keyPath, freePort(t), freePort(t)))
	cmd := exec.Command(bin, "-config", config, "-dnsserver", dnsServer)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("pebble log:\n%s", tail(log.String(), 40))
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	p := &pebble{
		directory:  fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		management: fmt.Sprintf("https://127.0.0.1:%d", mgmtPort),
		client:     &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
	}
	waitFor(t, 15*time.Second, "Pebble to answer", func() bool {
		resp, err := p.client.Get(p.directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// issuingRoots are the roots Pebble signs certificates with (made anew at
// each start).
func (p *pebble) issuingRoots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.management + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("Pebble's root: %q", data)
	}
	return pool
}

// servedCertificate connects to 127.0.0.1:port asking for name and returns
// the certificate served, if it verifies against roots.
func servedCertificate(port int, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
		&tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// acmeSiteConfig is a Caddyfile whose ddns block keeps home.<zone> pointed at
// 127.0.0.1 through BIND, with Caddy's ACME settings naming Pebble and BIND,
// and a site for that name on port.
func acmeSiteConfig(n *named, p *pebble, ca *testCA, port int, extra string) string {
	return fmt.Sprintf(`{
	admin {ADMIN}
	acme_ca %s
	acme_ca_root %s
	email hearth@%s
	tls_resolvers 127.0.0.1:%d
	%s
	ddns {
		provider rfc2136 {
			key_name hearth-test
			key_alg hmac-sha256
			key %s
			server 127.0.0.1:%d
		}
		domains {
			%s home
		}
		ip_source static 127.0.0.1
		interval 1h
	}
}

home.%s:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
`, p.directory, ca.path, n.zone, n.port, extra, n.secret, n.port, n.zone, n.zone, port)
}

// serviceCertificates reads the certificate states of GET /hearth/services.
func serviceCertificates(t *testing.T, c *caddyProc) map[string]map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + c.admin + "/hearth/services")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var services []struct {
		Certificates []map[string]any `json:"certificates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&services); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, s := range services {
		for _, cert := range s.Certificates {
			out[cert["name"].(string)] = cert
		}
	}
	return out
}

// TestDNSChallengeThroughDDNSProvider: a site on a port no CA can reach
// gets its certificate from the ACME CA (Pebble) by the DNS challenge,
// through the ddns block's own provider (RFC 2136 to BIND), with no TLS
// settings of its own, and renews it the same way; the challenge's TXT
// record is removed afterwards.
func TestDNSChallengeThroughDDNSProvider(t *testing.T) {
	t.Parallel()
	if !inOwnNetwork(t) {
		return
	}
	dir := t.TempDir()
	// BIND on port 53: the CA and the propagation check ask the zone's name
	// server, ns.hearth.test at 127.0.0.1, on the standard port
	n := startNamedAt(t, 53, "hearth.test")
	ca := newTestCA(t, dir)
	p := startPebble(t, ca, "127.0.0.1:53")
	port := freePort(t)
	// renewal: Caddy checks every second, and a certificate is due once
	// 0.9999999 of its lifetime is left (Pebble's last five years: due
	// after about 16 s); Debian's Pebble cannot issue short-lived ones
	settings := "http_port " + fmt.Sprint(freePort(t)) + "\n\trenew_interval 1s"
	c := launchCaddy(t, acmeSiteConfig(n, p, ca, port, settings+"\n\trenewal_window_ratio 0.9999999"))
	roots := p.issuingRoots(t)
	var first *x509.Certificate
	waitFor(t, 90*time.Second, "a certificate from Pebble", func() bool {
		cert, err := servedCertificate(port, "home.hearth.test", roots)
		if err == nil {
			first = cert
		}
		return err == nil
	})
	if !strings.Contains(first.Issuer.CommonName, "Pebble") || first.VerifyHostname("home.hearth.test") != nil {
		t.Errorf("served certificate: issuer %q, names %v", first.Issuer.CommonName, first.DNSNames)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "home.hearth.test"}}}
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d/", port), nil)
	req.Host = "home.hearth.test"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "Hello, world!\n" {
		t.Errorf("the site answered %d %q", resp.StatusCode, body)
	}
	if log := c.log.String(); !strings.Contains(log, "ACME DNS challenge through the ddns provider") || !strings.Contains(log, `"challenge_type":"dns-01"`) {
		t.Errorf("the log does not show the DNS challenge:\n%s", tail(log, 30))
	}
	waitFor(t, 90*time.Second, "the certificate renewed (by DNS-01 again: nothing answers the other challenges)", func() bool {
		cert, err := servedCertificate(port, "home.hearth.test", roots)
		return err == nil && cert.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if code, body := c.load(acmeSiteConfig(n, p, ca, port, settings)); code != 200 { // no longer due
		t.Fatalf("reload: %d %s", code, body)
	}
	challengeGone := func() bool {
		r, err := n.query("_acme-challenge.home.hearth.test", dns.TypeTXT)
		return err == nil && len(r.Answer) == 0
	}
	waitFor(t, 30*time.Second, "the challenge's TXT record removed", challengeGone)
	current, err := servedCertificate(port, "home.hearth.test", roots)
	if err != nil {
		t.Fatal(err)
	}

	// the status shows the certificate: valid, from Pebble, when it expires
	// and when it renews
	home := serviceCertificates(t, c)["home.hearth.test"]
	if home["state"] != "valid" || !strings.Contains(fmt.Sprint(home["issuer"]), "Pebble") || home["not_after"] == nil || home["renewal"] == nil {
		t.Errorf("the status of home's certificate: %v", home)
	}
	if notAfter, _ := time.Parse(time.RFC3339, fmt.Sprint(home["not_after"])); !notAfter.Equal(current.NotAfter) {
		t.Errorf("not_after %v, the served certificate's %v", home["not_after"], current.NotAfter)
	}

	// a wrong TSIG key: a new name's certificate cannot be obtained, and
	// the status says so with the DNS server's answer; `caddy hearth
	// status` never shows that service as simply running
	wrong := *n
	wrong.secret = base64.StdEncoding.EncodeToString([]byte("not-the-right-key-not-the-right!"))
	wwwPort := freePort(t)
	withWWW := acmeSiteConfig(&wrong, p, ca, port, settings) +
		fmt.Sprintf("\nwww.hearth.test:%d {\n\tbind 127.0.0.1\n\twsgi hello:application {\n\t\tdir {APPS}\n\t\tpython {PYTHON}\n\t\tworkers 1\n\t}\n}\n", wwwPort)
	withWWW = strings.Replace(withWWW, "domains {\n\t\t\thearth.test home", "domains {\n\t\t\thearth.test home www", 1)
	if code, body := c.load(withWWW); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	var www map[string]any
	waitFor(t, 60*time.Second, "www's certificate to fail", func() bool {
		www = serviceCertificates(t, c)["www.hearth.test"]
		return www != nil && www["state"] == "failed"
	})
	t.Logf("the status of a certificate the DNS server refused: %v", www["last_error"])
	if msg := fmt.Sprint(www["last_error"]); !strings.Contains(msg, "bad authentication") || strings.Contains(msg, wrong.secret) {
		t.Errorf("last_error %q: want the DNS server's answer (TSIG: bad authentication), without the key", msg)
	}
	status := exec.Command(caddyBinary(t), "hearth", "status", "--address", c.admin)
	out, err := status.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy hearth status: %v\n%s", err, out)
	}
	for _, want := range []string{"running, no certificate", "www.hearth.test: failed", "home.hearth.test: valid to", "certificate of www.hearth.test (failed): the last attempt failed:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("caddy hearth status lacks %q:\n%s", want, out)
		}
	}

}

// TestDynDNS2SaysWhatWillFail: dyndns2 cannot set the TXT records of the
// DNS challenge, so an HTTPS site of its names on a port a CA never
// checks gets no certificate; the config says so when it loads (`caddy
// validate` provisions it, and sends nothing anywhere), with both ways
// out. A site on 443 is not warned about.
func TestDynDNS2SaysWhatWillFail(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	writeFile(t, config, `{
	ddns {
		provider dyndns2 {
			server http://127.0.0.1:9
			username me
			password secret
		}
		domains {
			example.test home www
		}
		ip_source static 203.0.113.7
	}
}
home.example.test:2929 {
	respond "hi"
}
www.example.test {
	respond "hi"
}
`)
	cmd := exec.Command(caddyBinary(t), "validate", "--config", config, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	log := string(out)
	for _, want := range []string{"home.example.test:2929 will get no certificate unless port 80", "forward port 80", "a DNS provider that can set TXT records (rfc2136, cloudflare, duckdns)"} {
		if !strings.Contains(log, want) {
			t.Errorf("the warning lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "www.example.test:443 will get no certificate") {
		t.Errorf("the site on 443 was warned about:\n%s", log)
	}
	// naming dyndns2 for Caddy's own DNS challenge made Caddy panic (a
	// type assertion to certmagic.DNSProvider); now it loads, and the
	// provider refuses the TXT record with the reason when used
	writeFile(t, config, "{\n\tacme_dns dyndns2 {\n\t\tserver http://127.0.0.1:9\n\t\tusername me\n\t\tpassword secret\n\t}\n}\nhome.example.test:2929 {\n\trespond hi\n}\n")
	cmd = exec.Command(caddyBinary(t), "validate", "--config", config, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir+"/data", "XDG_CONFIG_HOME="+dir+"/config")
	if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "panic") {
		t.Errorf("acme_dns dyndns2: %v\n%s", err, out)
	}
}
