package hearth

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestDashboardClash: a dashboard address an HTTP server or the admin API
// listens on too is refused (the sockets would be shared, the connections
// split); other ports, other hosts and unix sockets are not.
func TestDashboardClash(t *testing.T) {
	servers := func(listen ...string) *caddyhttp.App {
		return &caddyhttp.App{Servers: map[string]*caddyhttp.Server{"srv0": {Listen: listen}}}
	}
	for _, tc := range []struct {
		dashboard string
		http      *caddyhttp.App
		admin     string
		clash     string // what the error names, "" for none
	}{
		{"127.0.0.1:2020", servers(":443", ":80"), "localhost:2019", ""},
		{"127.0.0.1:8080", servers(":8080"), "localhost:2019", "the HTTP server srv0 (:8080)"},
		{"0.0.0.0:443", servers("192.168.1.5:443"), "", "the HTTP server srv0 (192.168.1.5:443)"},
		{"192.168.1.5:80", servers(":80"), "", "the HTTP server srv0 (:80)"},
		{"127.0.0.1:8080", servers("127.0.0.1:8080"), "", "the HTTP server srv0 (127.0.0.1:8080)"},
		{"127.0.0.1:8080", servers("127.0.0.2:8080"), "", ""},
		{"[::1]:8080", servers("tcp6/[::]:8080"), "", "the HTTP server srv0 (tcp6/[::]:8080)"},
		{"127.0.0.1:8085", servers(":8080-8090"), "", "the HTTP server srv0 (:8080-8090)"},
		{"127.0.0.1:8080", servers("udp/:8080", "unix//run/app.sock"), "", ""},
		{"127.0.0.1:2019", nil, "localhost:2019", "the admin API (localhost:2019)"},
		{"127.0.0.1:2019", nil, "unix//run/caddy/admin.sock|0600", ""},
		{"127.0.0.1:2020", servers(":2020"), "127.0.0.1:2020", "the HTTP server srv0 (:2020) and the admin API (127.0.0.1:2020)"},
		{"LOCALHOST:2019", nil, "localhost:2019", "the admin API (localhost:2019)"},
		{"127.0.0.1:8080", servers("[::]:8080"), "", "the HTTP server srv0 ([::]:8080)"}, // Go listens on both families there
		{"0.0.0.0:8080", servers("[::1]:8080"), "", ""},
		{"[::1]:8080", servers("tcp4/:8080"), "", ""},
		{"127.0.0.1:8080", servers("tcp6/:8080"), "", ""},
	} {
		na, _, err := dashboardAddress(tc.dashboard)
		if err != nil {
			t.Fatal(err)
		}
		err = dashboardClash(na, tc.http, tc.admin, tc.admin != "")
		switch {
		case tc.clash == "" && err != nil:
			t.Errorf("dashboard %s: %v, want no clash", tc.dashboard, err)
		case tc.clash != "" && (err == nil || !strings.Contains(err.Error(), tc.clash+" listens there too")):
			t.Errorf("dashboard %s: %v, want it to name %s", tc.dashboard, err, tc.clash)
		}
	}
}
