package ddns

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/libdns/libdns"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

func TestPublicIP(t *testing.T) {
	for ip, want := range map[string]string{
		"203.0.113.7": "", "8.8.8.8": "", "2001:db8::1": "",
		"192.168.1.10": "not a public", "10.0.0.1": "not a public", "172.16.5.4": "not a public",
		"127.0.0.1": "not a public", "169.254.1.1": "not a public", "fe80::1": "not a public",
		"::1": "not a public", "0.0.0.0": "not a public", "224.0.0.1": "not a public",
		"100.64.0.1": "carrier NAT", "100.127.255.254": "carrier NAT", "100.128.0.1": "",
		// IPv4 as IPv6 is judged as IPv4; special-purpose ranges; a zone
		"::ffff:100.64.1.1": "carrier NAT", "::ffff:10.0.0.1": "not a public", "::ffff:203.0.113.7": "",
		"0.1.2.3": "not a public", "240.0.0.1": "not a public", "255.255.255.255": "not a public",
		"198.18.0.1": "not a public", "64:ff9b::a00:1": "not a public", "2001:db8::1%eth0": "not a public",
		// a DS-Lite router's WAN address, the 6to4 relay, IPv4 in other
		// IPv6 disguises, NAT64's local prefix, discard-only, site-local
		"192.0.0.2": "not a public", "192.88.99.1": "not a public", "::7f00:1": "not a public", "::a00:1": "not a public",
		"::ffff:0:a00:1": "not a public", "64:ff9b:1::a00:1": "not a public", "100::1": "not a public", "fec0::1": "not a public",
		// 6to4 is judged by the IPv4 address it goes through
		"2002:c0a8:101::1": "not a public", "2002:cb00:7107::1": "", "192.0.1.1": "",
	} {
		err := publicIP(netip.MustParseAddr(ip))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", ip, err, want)
		}
	}
}

func ipServer(t *testing.T, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(body)) }))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestDetectNeedsTwoHTTPSourcesToAgree(t *testing.T) {
	a, b, c := ipServer(t, "203.0.113.5\n"), ipServer(t, "203.0.113.6"), ipServer(t, " 203.0.113.5 ")
	ctx := context.Background()
	app := &App{IPSources: []IPSource{{Source: "http", URL: a}, {Source: "http", URL: b}}}
	if _, err := app.detect(ctx, "ipv4"); err == nil || !strings.Contains(err.Error(), "do not agree") {
		t.Errorf("two disagreeing http sources: %v", err)
	}
	app.IPSources = append(app.IPSources, IPSource{Source: "http", URL: c})
	if ip, err := app.detect(ctx, "ipv4"); err != nil || ip.String() != "203.0.113.5" {
		t.Errorf("two of three agree: %v %v", ip, err)
	}
	// a single http source needs no agreement; a private answer is refused
	app.IPSources = []IPSource{{Source: "http", URL: ipServer(t, "192.168.0.2")}, {Source: "http", URL: b}}
	if _, err := app.detect(ctx, "ipv4"); err == nil {
		t.Errorf("a private address and one public vote were accepted")
	}
	// an echo service answering a carrier-NAT address is one wrong
	// source, not a veto over the two that agree
	app.IPSources = []IPSource{{Source: "http", URL: ipServer(t, "100.64.0.9")}, {Source: "http", URL: a}, {Source: "http", URL: c}}
	if ip, err := app.detect(ctx, "ipv4"); err != nil || ip.String() != "203.0.113.5" {
		t.Errorf("one http source answering 100.64.0.9 before two that agree: %v %v", ip, err)
	}
	app.IPSources = []IPSource{{Source: "http", URL: b}}
	if ip, err := app.detect(ctx, "ipv4"); err != nil || ip.String() != "203.0.113.6" {
		t.Errorf("one http source: %v %v", ip, err)
	}
	// the version filters: no IPv6 from an IPv4-only source
	if _, err := app.detect(ctx, "ipv6"); err == nil {
		t.Errorf("an IPv4 answer was taken for ipv6")
	}
	// a command source, and a failing one before it
	app.IPSources = []IPSource{{Source: "command", Command: []string{"false"}}, {Source: "command", Command: []string{"echo", "2001:db8::5"}}}
	if ip, err := app.detect(ctx, "ipv6"); err != nil || ip.String() != "2001:db8::5" {
		t.Errorf("command sources: %v %v", ip, err)
	}
}

// TestDetectConfirmsWhatOnlyTheNetworkSays: an address only the local
// network vouches for (an interface's: any device there may announce an
// IPv6 prefix of its own, which the machine takes an address in; a
// router's UPnP answer) is published, when http sources are listed, only
// if one of them agrees: a device on the network cannot choose where the
// name points (and so get its certificates). Two http sources that agree
// win over it; with no http source it is taken alone.
func TestDetectConfirmsWhatOnlyTheNetworkSays(t *testing.T) {
	defer func(f func(string) ([]netip.Addr, error), g func() map[netip.Addr]uint64) {
		interfaceAddrs, ipv6Flags = f, g
	}(interfaceAddrs, ipv6Flags)
	announced := netip.MustParseAddr("2001:db8:bad::5") // a prefix a device on the network announced
	real := netip.MustParseAddr("2001:db8:1::5")
	interfaceAddrs = func(string) ([]netip.Addr, error) { return []netip.Addr{announced}, nil }
	ipv6Flags = func() map[netip.Addr]uint64 { return nil }
	ctx := context.Background()
	local := IPSource{Source: "interface", Interface: "eth0"}
	echoReal, echoReal2, echoAnnounced := ipServer(t, real.String()), ipServer(t, real.String()+"\n"), ipServer(t, announced.String())
	failing := ipServer(t, "")
	for _, tc := range []struct {
		name    string
		sources []IPSource
		want    netip.Addr
		err     string
	}{
		{"an http source disagrees", []IPSource{local, {Source: "http", URL: echoReal}}, netip.Addr{}, "the http sources answered 2001:db8:1::5 (1)"},
		{"no http source answers", []IPSource{local, {Source: "http", URL: failing}}, netip.Addr{}, "no http source answered to confirm it"},
		{"two http sources agree, against it", []IPSource{local, {Source: "http", URL: echoReal}, {Source: "http", URL: echoReal2}}, real, ""},
		{"an http source agrees", []IPSource{local, {Source: "http", URL: echoAnnounced}}, announced, ""},
		{"one of two http sources agrees", []IPSource{local, {Source: "http", URL: echoReal}, {Source: "http", URL: echoAnnounced}}, announced, ""},
		{"an http source agreed before", []IPSource{{Source: "http", URL: echoAnnounced}, {Source: "http", URL: echoReal}, local}, announced, ""},
		{"no http source listed", []IPSource{local}, announced, ""},
		{"a static address, the operator's", []IPSource{{Source: "static", IP: real.String()}, {Source: "http", URL: echoAnnounced}}, real, ""},
		// the service sees a temporary address of the same prefix (privacy
		// extensions): that confirms the interface's stable one
		{"an http source sees a temporary address of its prefix", []IPSource{local, {Source: "http", URL: ipServer(t, "2001:db8:bad::77aa")}}, announced, ""},
		{"an http source sees a temporary address of its prefix, before", []IPSource{{Source: "http", URL: ipServer(t, "2001:db8:bad::77aa")}, {Source: "http", URL: echoReal}, local}, announced, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, err := (&App{IPSources: tc.sources}).detect(ctx, "ipv6")
			switch {
			case tc.err == "" && (err != nil || ip != tc.want):
				t.Errorf("got %v %v, want %v", ip, err, tc.want)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("got %v %v, want an error saying %q", ip, err, tc.err)
			}
		})
	}
}

// TestInterfaceAddressesANameMayHave: of an interface's IPv6 addresses,
// the temporary (privacy), deprecated, tentative and duplicate ones are
// not published; public ones left in two /64 prefixes are refused (one
// may be a prefix a device on the network announced).
func TestInterfaceAddressesANameMayHave(t *testing.T) {
	flags := parseIPv6Flags("20010db8000100000000000000000005 02 40 00 80     eth0\n" +
		"20010db80001000011223344556677aa 02 40 00 01     eth0\n" +
		"20010db8000100000000000000000006 02 40 00 a0     eth0\n" +
		"20010db8000100000000000000000007 02 40 00 c0     eth0\n" +
		"garbage line\n" +
		"fe800000000000000000000000000001 02 40 20 80     eth0\n")
	stable, temporary := netip.MustParseAddr("2001:db8:1::5"), netip.MustParseAddr("2001:db8:1:0:1122:3344:5566:77aa")
	deprecated, tentative := netip.MustParseAddr("2001:db8:1::6"), netip.MustParseAddr("2001:db8:1::7")
	if flags[stable] != 0x80 || flags[temporary] != 0x01 || flags[deprecated] != 0xa0 || flags[tentative] != 0xc0 || len(flags) != 5 {
		t.Fatalf("parsed flags: %v", flags)
	}
	v4, ula := netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("fd00::2")
	got, err := stableAddrs([]netip.Addr{temporary, deprecated, v4, ula, tentative, stable}, flags)
	if err != nil || !slices.Equal(got, []netip.Addr{v4, ula, stable}) {
		t.Errorf("kept %v %v, want the IPv4, the ULA and the stable address", got, err)
	}
	announced := netip.MustParseAddr("2001:db8:bad::5")
	if _, err := stableAddrs([]netip.Addr{stable, announced}, flags); err == nil || !strings.Contains(err.Error(), "in 2 prefixes (2001:db8:1::/64, 2001:db8:bad::/64)") {
		t.Errorf("two public prefixes: %v", err)
	}
}

// A zone holding a stale address record beside the current one reads
// back as both, so the update that leaves the current one alone runs.
func TestRecordValue(t *testing.T) {
	a := func(name, ip string) libdns.Record {
		return libdns.Address{Name: name, IP: netip.MustParseAddr(ip)}
	}
	records := []libdns.Record{a("home", "203.0.113.9"), a("home", "203.0.113.5"), a("other", "203.0.113.7"),
		a("@", "2001:db8::5"), a("@", "203.0.113.5"), a("home", "203.0.113.9")}
	for _, tc := range []struct{ name, version, want string }{
		{"home", "ipv4", "203.0.113.5, 203.0.113.9"},
		{"home.example.net.", "ipv4", "203.0.113.5, 203.0.113.9"},
		{"other", "ipv4", "203.0.113.7"},
		{"@", "ipv6", "2001:db8::5"},
		{"@", "ipv4", "203.0.113.5"},
		{"none", "ipv4", ""},
	} {
		if got := recordValue(records, tc.name, "example.net", tc.version); got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.name, tc.version, got, tc.want)
		}
	}
}

func TestRelativeName(t *testing.T) {
	for _, tc := range []struct{ name, zone, want string }{
		{"@", "example.net", "@"}, {"home", "example.net", "home"},
		{"home.example.net.", "example.net", "home"}, {"example.net.", "example.net.", "@"},
		{"a.b.example.net.", "example.net", "a.b"},
	} {
		if got := relativeName(tc.name, tc.zone); got != tc.want {
			t.Errorf("relativeName(%q, %q) = %q, want %q", tc.name, tc.zone, got, tc.want)
		}
	}
}

func TestSourceTimeoutAndCarrierNAT(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers before the client gives up
	}))
	defer hang.Close()
	ctx := context.Background()
	app := &App{IPSources: []IPSource{{Source: "http", URL: hang.URL, Timeout: caddy.Duration(200 * time.Millisecond)}}}
	start := time.Now()
	if _, err := app.detect(ctx, "ipv4"); err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("a hanging source: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("the source's timeout was not applied")
	}
	// a timed-out source falls through to the next one
	app.IPSources = append(app.IPSources, IPSource{Source: "static", IP: "203.0.113.77"})
	if ip, err := app.detect(ctx, "ipv4"); err != nil || ip.String() != "203.0.113.77" {
		t.Errorf("after a timeout: %v %v", ip, err)
	}
	// an http source behind carrier NAT stops the check with the explanation
	app.IPSources = []IPSource{{Source: "http", URL: ipServer(t, "100.72.1.2")}}
	if _, err := app.detect(ctx, "ipv4"); err == nil || !strings.Contains(err.Error(), "carrier NAT") {
		t.Errorf("a CGNAT answer: %v", err)
	}
}

// A command source whose command leaves a process behind with the output
// still open gives its address at once instead of waiting for that
// process, and ends it.
func TestCommandSourceLeavesNothingBehind(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	app := &App{IPSources: []IPSource{{Source: "command", Timeout: caddy.Duration(10 * time.Second), Command: []string{
		"/bin/sh", "-c", `sleep 60 & echo $! > "$0"; echo 203.0.113.5`, pidFile}}}}
	pid := 0
	t.Cleanup(func() {
		if pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	start := time.Now()
	ip, err := app.detect(context.Background(), "ipv4")
	if b, rerr := os.ReadFile(pidFile); rerr == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if err != nil || ip.String() != "203.0.113.5" {
		t.Fatalf("got %v, %v", ip, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the source waited %s for the process the command left behind", d)
	}
	if pid <= 1 {
		t.Fatalf("the command wrote no pid")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if !supervisor.Alive(pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process the command left behind (%d) still runs", pid)
		}
	}
}

// What a command or http source answers is an address: more than 4 KiB is
// refused (cut, it could end inside an address and publish another), and
// a failing command's error says what it wrote on stderr.
func TestSourceAnswers(t *testing.T) {
	long := strings.Repeat(" ", sourceOutputLimit-12) + "203.0.113.123"
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, long) }))
	defer echo.Close()
	for _, tc := range []struct {
		name    string
		source  IPSource
		wantErr string
	}{
		{"a command printing too much", IPSource{Source: "command", Command: []string{"/bin/sh", "-c", `printf '%4084s203.0.113.123' ''`}}, "printed more than 4096 bytes"},
		{"an http source answering too much", IPSource{Source: "http", URL: echo.URL}, "answered more than 4096 bytes"},
		{"a failing command with a token in its arguments", IPSource{Source: "command", Command: []string{"/bin/false", "https://ip.example/k/PATHTOKEN123"}}, "command source: /bin/false: exit status 1"},
		{"a failing command", IPSource{Source: "command", Command: []string{"/bin/sh", "-c", "echo 'curl: (6) Could not resolve host' >&2; exit 6"}}, "exit status 6: curl: (6) Could not resolve host"},
		// Caddy's environment holds the providers' credentials (the unit's
		// EnvironmentFile): a command source sees none of it
		{"a command that sees Caddy's secrets", IPSource{Source: "command", Command: []string{"/bin/sh", "-c", `test -n "$PATH" && echo "${HEARTH_TEST_DDNS_SECRET:-203.0.113.9}"`}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HEARTH_TEST_DDNS_SECRET", "not-an-address")
			app := &App{IPSources: []IPSource{tc.source}}
			ip, err := app.detect(context.Background(), "ipv4")
			if tc.wantErr == "" {
				if err != nil || ip.String() != "203.0.113.9" {
					t.Fatalf("got %v, %v; want 203.0.113.9", ip, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "PATHTOKEN") {
				t.Fatalf("got %v, %v; want an error with %q (and no argument)", ip, err, tc.wantErr)
			}
		})
	}
}

// TestEchoServicesAreAskedDirectly: an http source is never asked through
// a proxy from Caddy's environment (HTTPS_PROXY, HTTP_PROXY): every echo
// service would see the proxy's address and agree on it, and the records
// would point at the proxy. (Go never proxies a request to loopback, so a
// local echo service cannot show it; the transport's setting is what
// decides.)
func TestEchoServicesAreAskedDirectly(t *testing.T) {
	tr, ok := ipEchoClient.Transport.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatalf("the http sources' transport (%T) takes a proxy from the environment", ipEchoClient.Transport)
	}
}

// TestBackoffNeverWraps: the wait after failures doubles up to 8
// intervals, and never wraps negative: 8 intervals of 20000d did, and a
// failing check ran again at once, thousands of times a second.
func TestBackoffNeverWraps(t *testing.T) {
	for _, interval := range []time.Duration{MinInterval, DefaultInterval, 20000 * 24 * time.Hour, math.MaxInt64 / 3, math.MaxInt64} {
		s := &state{}
		last := time.Duration(0)
		for i := range 70 {
			d := s.backoff(interval)
			if d < interval || d < last || interval <= math.MaxInt64/8 && d > 8*interval {
				t.Fatalf("interval %v, failure %d: a wait of %v (the one before %v)", interval, i+1, d, last)
			}
			last = d
		}
		if interval <= math.MaxInt64/8 && last != 8*interval {
			t.Errorf("interval %v: the wait ended at %v, not 8 intervals", interval, last)
		}
	}
}
