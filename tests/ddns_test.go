package tests

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// named is a BIND9 server started by a test on a loopback port, with a zone
// (example.test) that accepts updates and transfers signed with a TSIG key.
type named struct {
	port   int
	zone   string
	secret string
	cmd    *exec.Cmd
	log    *lockedBuffer
}

// queries counts the queries named logged (zone transfers and updates
// included).
func (n *named) queries() int {
	return strings.Count(n.log.String(), "query:") + strings.Count(n.log.String(), "update '")
}

const testZone = "example.test"

func startNamed(t *testing.T) *named {
	t.Helper()
	return startNamedAt(t, freePort(t), testZone)
}

// startNamedAt starts BIND on 127.0.0.1:port with zone (its name server,
// ns.<zone>, at 127.0.0.1).
func startNamedAt(t *testing.T, port int, zone string) *named {
	t.Helper()
	bin := "/usr/sbin/named"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("BIND9 is not installed (%v): `make test` installs the bind9 package", err)
	}
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	n := &named{port: port, zone: zone, secret: base64.StdEncoding.EncodeToString(key)}
	writeFile(t, filepath.Join(dir, "zone"), fmt.Sprintf(`$TTL 300
@   IN SOA ns.%[1]s. admin.%[1]s. ( 1 3600 600 86400 300 )
@   IN NS  ns.%[1]s.
ns  IN A   127.0.0.1
`, zone))
	conf := filepath.Join(dir, "named.conf")
	writeFile(t, conf, fmt.Sprintf(`
options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	querylog yes;
};
controls { };
key "hearth-test." {
	algorithm hmac-sha256;
	secret "%[3]s";
};
zone "%[4]s" {
	type primary;
	file "%[1]s/zone";
	allow-update { key "hearth-test."; };
	allow-transfer { key "hearth-test."; };
};
`, dir, n.port, n.secret, zone))
	n.cmd = exec.Command(bin, "-g", "-n", "1", "-c", conf)
	log := &lockedBuffer{}
	n.log = log
	n.cmd.Stdout, n.cmd.Stderr = log, log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { n.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("named log:\n%s", tail(log.String(), 30))
		}
	})
	waitFor(t, 15*time.Second, "named to answer", func() bool { return n.serialOrZero() > 0 })
	return n
}

func (n *named) query(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, fmt.Sprintf("127.0.0.1:%d", n.port))
	return r, err
}

func (n *named) serialOrZero() uint32 {
	r, err := n.query(n.zone, dns.TypeSOA)
	if err != nil || len(r.Answer) == 0 {
		return 0
	}
	return r.Answer[0].(*dns.SOA).Serial
}

// addresses returns the A records of name.
func (n *named) addresses(t *testing.T, name string) string {
	t.Helper()
	r, err := n.query(name, dns.TypeA)
	if err != nil {
		t.Fatalf("querying %s: %v", name, err)
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return strings.Join(ips, ",")
}

// nsupdate changes a record behind Hearth's back, with BIND's own tool.
func (n *named) nsupdate(t *testing.T, name, ip string) {
	t.Helper()
	cmd := exec.Command("nsupdate", "-y", "hmac-sha256:hearth-test.:"+n.secret)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("server 127.0.0.1 %d\nupdate delete %s A\nupdate add %s 300 A %s\nsend\n", n.port, name, name, ip))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nsupdate: %v\n%s", err, out)
	}
}

// ddnsConfig is a Caddyfile with only the ddns app, updating example.test.
func ddnsConfig(n *named, secret, options string) string {
	return fmt.Sprintf(`{
	admin {ADMIN}
	ddns {
		provider rfc2136 {
			key_name hearth-test
			key_alg hmac-sha256
			key %s
			server 127.0.0.1:%d
		}
		domains {
			example.test @ home www
		}
		interval 1h
		%s
	}
}
`, secret, n.port, options)
}

type ddnsStatus struct {
	DryRun  bool `json:"dry_run"`
	Records []struct {
		Name        string `json:"name"`
		CurrentIP   string `json:"current_ip"`
		RecordValue string `json:"record_value"`
		LastError   string `json:"last_error"`
		LastChange  string `json:"last_change"`
		LastCheck   string `json:"last_check"`
	} `json:"records"`
}

func ddnsState(t *testing.T, c *caddyProc, method string) ddnsStatus {
	t.Helper()
	path := "/hearth/ddns"
	if method == http.MethodPost {
		path += "/check"
	}
	req, _ := http.NewRequest(method, "http://"+c.admin+path, nil)
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return ddnsStatus{}
	}
	defer resp.Body.Close()
	var st ddnsStatus
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&st) != nil {
		return ddnsStatus{}
	}
	return st
}

// allRecords reports whether the three names hold ip, per Hearth.
func (st ddnsStatus) allRecords(ip string) bool {
	if len(st.Records) != 3 {
		return false
	}
	for _, r := range st.Records {
		if r.RecordValue != ip || r.CurrentIP != ip {
			return false
		}
	}
	return true
}

func TestDDNSWithBIND(t *testing.T) {
	t.Parallel()
	n := startNamed(t)
	start := n.serialOrZero()
	c := launchCaddy(t, ddnsConfig(n, n.secret, "ip_source static 203.0.113.10"))
	waitFor(t, 30*time.Second, "the records created", func() bool { return ddnsState(t, c, http.MethodGet).allRecords("203.0.113.10") })
	for _, name := range []string{"example.test", "home.example.test", "www.example.test"} {
		if got := n.addresses(t, name); got != "203.0.113.10" {
			t.Errorf("%s: A %q in BIND", name, got)
		}
	}
	created := n.serialOrZero()
	if created <= start {
		t.Fatalf("the zone's serial did not move (%d → %d)", start, created)
	}
	// nothing changed: a check sends no update
	ddnsState(t, c, http.MethodPost)
	ddnsState(t, c, http.MethodPost)
	if s := n.serialOrZero(); s != created {
		t.Errorf("checks without a change updated the zone (serial %d → %d)", created, s)
	}
	// the IP moves (a command source now): the records follow, after a reload
	if code, body := c.load(ddnsConfig(n, n.secret, "ip_source command echo 203.0.113.11")); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the records changed", func() bool { return ddnsState(t, c, http.MethodGet).allRecords("203.0.113.11") })
	if got := n.addresses(t, "home.example.test"); got != "203.0.113.11" {
		t.Errorf("home: A %q after the change", got)
	}
	changed := n.serialOrZero()
	// changed behind our back: repaired at the next read-back
	n.nsupdate(t, "home.example.test", "198.51.100.99")
	if got := n.addresses(t, "home.example.test"); got != "198.51.100.99" {
		t.Fatalf("nsupdate did not take: %q", got)
	}
	ddnsState(t, c, http.MethodPost)
	if got := n.addresses(t, "home.example.test"); got != "203.0.113.11" {
		t.Errorf("home was not repaired: A %q", got)
	}
	if got := n.addresses(t, "www.example.test"); got != "203.0.113.11" {
		t.Errorf("www changed: A %q", got)
	}
	if s := n.serialOrZero(); s <= changed {
		t.Errorf("the repair did not update the zone")
	}
	// the metrics count the updates: 3 created, 3 changed, 1 repaired
	m := scrape(t, c)
	if m["hearth_ddns_updates_total"] != 7 {
		t.Errorf("hearth_ddns_updates_total = %v, want 7", m["hearth_ddns_updates_total"])
	}
	// a wrong key: the server's refusal is reported, the records stay
	wrong := base64.StdEncoding.EncodeToString([]byte("not-the-right-key-not-the-right"))
	if code, body := c.load(ddnsConfig(n, wrong, "ip_source static 203.0.113.12")); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the error reported", func() bool {
		for _, r := range ddnsState(t, c, http.MethodGet).Records {
			if strings.Contains(r.LastError, "NOTAUTH") || strings.Contains(strings.ToLower(r.LastError), "bad") {
				t.Logf("the server's answer to a wrong key: %s", r.LastError)
				return true
			}
		}
		return false
	})
	if got := n.addresses(t, "home.example.test"); got != "203.0.113.11" {
		t.Errorf("an update with a wrong key changed the record: %q", got)
	}
}

func TestDDNSDryRunAndCarrierNAT(t *testing.T) {
	t.Parallel()
	n := startNamed(t)
	c := launchCaddy(t, ddnsConfig(n, n.secret, "ip_source static 203.0.113.20\n\t\tdry_run"))
	waitFor(t, 30*time.Second, "a dry-run check", func() bool {
		st := ddnsState(t, c, http.MethodGet)
		return st.DryRun && len(st.Records) == 3 && st.Records[0].CurrentIP == "203.0.113.20"
	})
	if got := n.addresses(t, "home.example.test"); got != "" {
		t.Errorf("dry_run created a record: %q", got)
	}
	// the status can be read before Caddy's log line reaches the test
	waitFor(t, 10*time.Second, "dry_run to log what it would do", func() bool {
		return strings.Contains(c.log.String(), "dry_run: would update the record")
	})
	if code, body := c.load(ddnsConfig(n, n.secret, "ip_source static 100.64.12.34")); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the carrier NAT reported", func() bool {
		st := ddnsState(t, c, http.MethodGet)
		return len(st.Records) > 0 && strings.Contains(st.Records[0].LastError, "carrier NAT")
	})
}

func TestDDNSConfigErrors(t *testing.T) {
	t.Parallel()
	n := &named{port: 53535, secret: base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))}
	for _, tc := range []struct {
		config, want string
	}{
		{strings.Replace(ddnsConfig(n, n.secret, "ip_source static 203.0.113.1"), "interval 1h", "interval 10s", 1), "below the minimum of 30s"},
		{strings.Replace(ddnsConfig(n, n.secret, "ip_source static 203.0.113.1"), "provider rfc2136 {", "provider nosuchdns {", 1), "dns.providers.nosuchdns"},
		{strings.Replace(ddnsConfig(n, n.secret, "ip_source static 203.0.113.1"), "example.test @ home www", "example.test @ home.example.org.", 1), "not inside the zone"},
		{ddnsConfig(n, n.secret, "ip_source static 10.1.2.3.4"), "not an IP address"},
		{ddnsConfig(n, n.secret, "ip_source carrier-pigeon"), "unknown ip_source"},
		{ddnsConfig(n, n.secret, ""), "no ip_source"},
	} {
		c := launchCaddy(t, tc.config)
		if code := c.waitExit(30 * time.Second); code == 0 {
			t.Errorf("accepted: %s", tc.want)
		}
		if !strings.Contains(c.log.String(), tc.want) {
			t.Errorf("the error lacks %q:\n%s", tc.want, tail(c.log.String(), 5))
		}
	}
}

func TestDDNSReloadUnchangedMakesNoTraffic(t *testing.T) {
	t.Parallel()
	n := startNamed(t)
	config := ddnsConfig(n, n.secret, "ip_source static 203.0.113.50")
	c := launchCaddy(t, config)
	waitFor(t, 30*time.Second, "the records created", func() bool { return ddnsState(t, c, http.MethodGet).allRecords("203.0.113.50") })
	before := ddnsState(t, c, http.MethodGet).Records[0]
	queries, serial := n.queries(), n.serialOrZero()
	// a reload that changes another part of the config (a new site)
	extra := fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n\trespond ok\n}\n", freePort(t))
	if code, body := c.load(config + extra); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	time.Sleep(500 * time.Millisecond) // an immediate check would have run by now
	after := ddnsState(t, c, http.MethodGet).Records[0]
	if after.LastCheck != before.LastCheck {
		t.Errorf("the unchanged ddns config checked again on reload (%s → %s)", before.LastCheck, after.LastCheck)
	}
	// the serial query above is ours; nothing else reached named
	if got := n.queries() - queries; got != 1 {
		t.Errorf("%d DNS queries during an unchanged reload, want only the test's own", got-1)
	}
	if n.serialOrZero() != serial {
		t.Errorf("the zone changed")
	}
}

// fakeDynDNS2 is an update service speaking the dyndns2 protocol, whose
// reply the test sets.
type fakeDynDNS2 struct {
	mu       sync.Mutex
	reply    string
	requests []string
}

func (f *fakeDynDNS2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	user, pass, _ := r.BasicAuth()
	f.requests = append(f.requests, fmt.Sprintf("%s %s:%s %s", r.URL.Path, user, pass, r.URL.RawQuery))
	if user != "me" || pass != "right" {
		w.Write([]byte("badauth"))
		return
	}
	w.Write([]byte(strings.ReplaceAll(f.reply, "IP", r.URL.Query().Get("myip"))))
}

func (f *fakeDynDNS2) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func TestDDNSDynDNS2(t *testing.T) {
	t.Parallel()
	fake := &fakeDynDNS2{reply: "good IP"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fake}
	go srv.Serve(ln)
	defer srv.Close()
	config := func(password, ip string) string {
		return fmt.Sprintf(`{
	admin {ADMIN}
	ddns {
		provider dyndns2 {
			server http://%s
			username me
			password %s
		}
		domains {
			example.net home
		}
		ip_source static %s
		interval 1h
	}
}
`, ln.Addr(), password, ip)
	}
	c := launchCaddy(t, config("right", "203.0.113.60"))
	waitFor(t, 30*time.Second, "the update", func() bool {
		st := ddnsState(t, c, http.MethodGet)
		return len(st.Records) == 1 && st.Records[0].RecordValue == "203.0.113.60"
	})
	if fake.requests[0] != "/nic/update me:right hostname=home.example.net&myip=203.0.113.60" {
		t.Errorf("request %q", fake.requests[0])
	}
	// nochg is never repeated
	fake.mu.Lock()
	fake.reply = "nochg IP"
	fake.mu.Unlock()
	if code, body := c.load(config("right", "203.0.113.61")); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the nochg update", func() bool { return fake.count() == 2 })
	ddnsState(t, c, http.MethodPost)
	ddnsState(t, c, http.MethodPost)
	if got := fake.count(); got != 2 {
		t.Errorf("%d requests: an update answered nochg was repeated", got)
	}
	// badauth stops the updates until the config changes
	if code, body := c.load(config("wrong", "203.0.113.62")); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "badauth reported", func() bool {
		st := ddnsState(t, c, http.MethodGet)
		return len(st.Records) == 1 && strings.Contains(st.Records[0].LastError, "badauth") && strings.Contains(st.Records[0].LastError, "stopped")
	})
	stoppedAt := fake.count()
	ddnsState(t, c, http.MethodPost)
	ddnsState(t, c, http.MethodPost)
	if got := fake.count(); got != stoppedAt {
		t.Errorf("%d more requests after badauth", got-stoppedAt)
	}
	fake.mu.Lock()
	fake.reply = "good IP"
	fake.mu.Unlock()
	if code, body := c.load(config("right", "203.0.113.62")); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "updates resumed with the fixed config", func() bool {
		st := ddnsState(t, c, http.MethodGet)
		return len(st.Records) == 1 && st.Records[0].RecordValue == "203.0.113.62" && st.Records[0].LastError == ""
	})
}

func TestExampleDDNS(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	out, err := exec.Command(repoPath("examples", "ddns", "setup-bind.sh"), dir, "example.test", fmt.Sprint(port)).CombinedOutput()
	if err != nil {
		t.Fatalf("setup-bind.sh: %v\n%s", err, out)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "ddns.env"))
	key := strings.TrimSpace(strings.TrimPrefix(string(env), "DDNS_TSIG_KEY="))
	if info, _ := os.Stat(filepath.Join(dir, "ddns.env")); info.Mode().Perm() != 0o600 {
		t.Errorf("the key file is mode %o", info.Mode().Perm())
	}
	n := &named{port: port, zone: "example.test", secret: key, log: &lockedBuffer{}}
	n.cmd = exec.Command("/usr/sbin/named", "-g", "-n", "1", "-c", filepath.Join(dir, "named.conf"))
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { n.cmd.Process.Kill(); n.cmd.Wait() }()
	waitFor(t, 15*time.Second, "named to answer", func() bool { return n.serialOrZero() > 0 })
	// the example's own file, with test values for what it reads from the
	// environment (no address service on the internet is asked)
	t.Setenv("DDNS_TSIG_KEY", key)
	t.Setenv("DDNS_SERVER", fmt.Sprintf("127.0.0.1:%d", port))
	t.Setenv("DDNS_IP_SOURCE_1", "static 203.0.113.90")
	t.Setenv("DDNS_IP_SOURCE_2", "static 203.0.113.90")
	caddyfile, err := os.ReadFile(repoPath("examples", "ddns", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	config := strings.Replace(string(caddyfile), "{\n\tddns {", "{\n\tadmin {ADMIN}\n\tddns {", 1)
	config = config[strings.Index(config, "{\n\tadmin"):] // the global block first
	c := launchCaddy(t, config)
	waitFor(t, 30*time.Second, "the example's records", func() bool {
		st := ddnsState(t, c, http.MethodGet)
		return len(st.Records) == 2 && st.Records[0].RecordValue == "203.0.113.90" && st.Records[1].RecordValue == "203.0.113.90"
	})
	if got := n.addresses(t, "home.example.test"); got != "203.0.113.90" {
		t.Errorf("home.example.test: %q", got)
	}
	if strings.Contains(c.log.String(), key) {
		t.Errorf("the TSIG key is in Caddy's log")
	}
}

// TestDDNSSharedStorageWritesOnce: two Caddy instances (their own data
// directories, as on two machines) with one ddns config and one shared
// storage make one update per record and address change between them,
// not one each.
func TestDDNSSharedStorageWritesOnce(t *testing.T) {
	t.Parallel()
	n := startNamed(t)
	shared := t.TempDir()
	config := func(ip string) string {
		return strings.Replace(ddnsConfig(n, n.secret, "ip_source static "+ip), "\tddns {", "\tstorage file_system "+shared+"\n\tddns {", 1)
	}
	adds := func() int { return strings.Count(n.log.String(), "adding an RR at") }
	a := launchCaddyWithData(t, config("203.0.113.20"), t.TempDir())
	b := launchCaddyWithData(t, config("203.0.113.20"), t.TempDir())
	for _, c := range []*caddyProc{a, b} {
		waitFor(t, 30*time.Second, "the records set, as each instance sees them", func() bool { return ddnsState(t, c, http.MethodGet).allRecords("203.0.113.20") })
	}
	if got := adds(); got != 3 {
		t.Errorf("%d record writes for 3 new records by two instances, want 3:\n%s", got, tail(n.log.String(), 20))
	}
	// the address changes: both see it, one writes
	for _, c := range []*caddyProc{a, b} {
		if code, body := c.load(config("203.0.113.21")); code != 200 {
			t.Fatalf("reload: %d %s", code, body)
		}
	}
	for _, c := range []*caddyProc{a, b} {
		waitFor(t, 30*time.Second, "the records changed", func() bool { return ddnsState(t, c, http.MethodGet).allRecords("203.0.113.21") })
	}
	if got := adds(); got != 6 {
		t.Errorf("%d record writes after one change of 3 records, want 6 in all", got)
	}
	if got := n.addresses(t, "home.example.test"); got != "203.0.113.21" {
		t.Errorf("home: A %q", got)
	}
}

// TestServicesForgetARemovedDDNS: the status shows the names of the ddns
// app of the running config, found by the hearth app when it starts: a
// reload without a ddns app shows none (the ddns app used to publish its
// names into a package variable, which outlived it).
func TestServicesForgetARemovedDDNS(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	site := fmt.Sprintf(`
http://home.example.test:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}`, port)
	c := startCaddy(t, "{\n\tadmin {ADMIN}\n"+dryRunDDNS("203.0.113.10")+"\n}\n"+site)
	ddnsOf := func() ([]string, bool) {
		resp, err := http.Get("http://" + c.admin + "/hearth/services")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list []struct {
			DDNS   []string `json:"ddns"`
			DryRun bool     `json:"ddns_dry_run"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list) != 1 {
			t.Fatalf("services: %v %+v", err, list)
		}
		return list[0].DDNS, list[0].DryRun
	}
	if names, dry := ddnsOf(); len(names) != 1 || names[0] != "home.example.test" || !dry {
		t.Errorf("with the ddns app: %v dry_run %v", names, dry)
	}
	if code, body := c.load(site); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if names, dry := ddnsOf(); len(names) != 0 || dry {
		t.Errorf("after a reload without the ddns app: %v dry_run %v", names, dry)
	}
}
