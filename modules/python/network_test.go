package python

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestPublicAdmin: the admin API is reachable from the network when the
// config puts it on TCP at a host that is not loopback.
func TestPublicAdmin(t *testing.T) {
	for _, tc := range []struct {
		listen string
		on     bool
		want   string
	}{
		{"localhost:2019", true, ""},
		{"LOCALHOST:2019", true, ""},
		{"admin.localhost:2019", true, ""},
		{"ip6-localhost:2019", true, ""},
		{"localhost.:2019", true, ""},
		{"localhost.example.net:2019", true, "localhost.example.net:2019"},
		{"127.0.0.1:2019", true, ""},
		{"127.0.0.2:2019", true, ""},
		{"[::1]:2019", true, ""},
		{"tcp/localhost:2019", true, ""},
		{"unix//run/caddy/admin.sock", true, ""},
		{"0.0.0.0:2019", false, ""},
		{"0.0.0.0:2019", true, "0.0.0.0:2019"},
		{":2019", true, "every interface, port 2019"},
		{"192.168.1.5:2019", true, "192.168.1.5:2019"},
		{"[::]:2019", true, "[::]:2019"},
		{"box.lan:2019", true, "box.lan:2019"},
	} {
		if got := publicAdmin(tc.listen, tc.on); got != tc.want {
			t.Errorf("publicAdmin(%q, %v) = %q, want %q", tc.listen, tc.on, got, tc.want)
		}
	}
}

// TestCaddysOwnSocketsAreNotItsAdminAPI: Caddy's own sockets on other
// interfaces than loopback are its sites' and its dashboard's — during a
// reload, the running config's on ports the new one no longer uses — not
// its admin API, which the config says where it is. Any such socket on a
// port outside the new config's sites refused every app under `guard
// enforce`: a reload that moved a site to another port, a dashboard for
// the LAN.
func TestCaddysOwnSocketsAreNotItsAdminAPI(t *testing.T) {
	l, err := net.Listen("tcp4", "0.0.0.0:0") // (listens only: nothing is sent)
	if err != nil {
		t.Skipf("no IPv4 wildcard listener here: %v", err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	has := func(findings []Finding, id, text string) bool {
		for _, f := range findings {
			if f.ID == id && strings.Contains(f.Problem, text) {
				return true
			}
		}
		return false
	}
	if f := networkFindings([]string{"1"}, "localhost:2019", true); has(f, "HG-NET-02", "") || has(f, "HG-NET-01", ":"+port) {
		t.Errorf("Caddy's own socket on port %s: %+v", port, f)
	}
	if f := networkFindings([]string{port}, "0.0.0.0:"+port, true); !has(f, "HG-NET-02", "0.0.0.0:"+port) {
		t.Errorf("the admin API on every interface: %+v", f)
	}
}
