package hearth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDashboardHostCheck: the dashboard answers loopback names, its listen
// address's host and the configured names, with or without a port, in
// any case; any other Host gets 403 and a message naming the hosts option.
func TestDashboardHostCheck(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "status") })
	for _, tc := range []struct {
		listen string
		hosts  []string
		host   string
		want   int
	}{
		{"127.0.0.1", nil, "127.0.0.1:2020", 200},
		{"127.0.0.1", nil, "127.0.0.1", 200},
		{"127.0.0.1", nil, "localhost:2020", 200},
		{"127.0.0.1", nil, "LocalHost", 200},
		{"127.0.0.1", nil, "localhost.", 200},
		{"127.0.0.1", nil, "[::1]:2020", 200},
		{"127.0.0.1", nil, "[::1]", 200},
		{"192.168.1.5", nil, "192.168.1.5:2020", 200},
		{"192.168.1.5", nil, "192.168.1.6:2020", 403},
		{"::", nil, "[::]:2020", 403},
		{"0.0.0.0", nil, "0.0.0.0:2020", 403},
		{"0.0.0.0", []string{"box.lan", "Home.Example.NET", "fd00::5"}, "box.lan:2020", 200},
		{"0.0.0.0", []string{"box.lan", "Home.Example.NET", "fd00::5"}, "home.example.net", 200},
		{"0.0.0.0", []string{"box.lan", "Home.Example.NET", "fd00::5"}, "[fd00::5]:2020", 200},
		{"0.0.0.0", []string{"box.lan"}, "box.lan.evil.example", 403},
		{"127.0.0.1", nil, "evil.example", 403},
		{"127.0.0.1", nil, "evil.example:2020", 403},
		{"127.0.0.1", nil, "localhost.evil.example", 403},
		{"127.0.0.1", nil, "", 403},
	} {
		h := checkHost(dashboardHosts(tc.listen, tc.hosts), ok)
		r := httptest.NewRequest("GET", "/status.json", nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("listen %s, hosts %v, Host %q: %d, want %d (%s)", tc.listen, tc.hosts, tc.host, w.Code, tc.want, w.Body)
		}
		if tc.want == 403 {
			body := w.Body.String()
			if strings.Contains(body, "status") || !strings.Contains(body, "does not answer to the host") ||
				!strings.Contains(body, "hosts <name>...") || !strings.Contains(body, "dashboard_hosts") ||
				!strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
				t.Errorf("Host %q: the refusal does not explain itself: %s %q", tc.host, w.Header().Get("Content-Type"), body)
			}
		}
	}
}

// TestSummarizeError: the dashboard shows of a pool's or background
// service's last error the exception's name, never its message.
func TestSummarizeError(t *testing.T) {
	const where = " (the whole error: caddy hearth status, the admin API, or Caddy's log)"
	for in, want := range map[string]string{
		"worker failed to start:\nTraceback (most recent call last):\n  File \"settings.py\", line 3\nValueError: Port could not be cast to integer value as 's3cr3t'\n": "ValueError" + where,
		"Traceback (most recent call last):\n  File \"x\"\ndjango.core.exceptions.ImproperlyConfigured: DATABASE_URL=postgres://u:s3cr3t@db\n":                           "django.core.exceptions.ImproperlyConfigured" + where,
		"ready command failed: token=s3cr3t":                                "failed" + where,
		"Traceback (most recent call last):\n  File \"x\"\nmy s3cr3t: boom": "failed" + where,
		"": "",
		"Traceback (most recent call last):\r\n  File \"x\"\r\nKeyboardInterrupt\r\n": "KeyboardInterrupt" + where,
		"Traceback (most recent call last):\nhunter2\n":                               "failed" + where, // no frame: not a traceback's end
		// a message of several lines: its last line is not the exception's name
		"Traceback (most recent call last):\n  File \"x\", line 1\nValueError: bad URL\nHunter2_s3cr3t_Pa55word\n": "ValueError" + where,
		"Traceback (most recent call last):\n  File \"x\"\nKeyError\n":                                             "KeyError" + where,
		// chained: the last traceback's exception
		"Traceback (most recent call last):\n  File \"a\"\nOSError: x\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"b\"\nRuntimeError: y s3cr3t\n": "RuntimeError" + where,
	} {
		st := map[string]any{"last_error": in}
		summarizeError(st)
		if got, _ := st["last_error"].(string); got != want {
			t.Errorf("summarizeError(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDashboardDataIsShared: requests within a second share one making of
// the dashboard's data (each reads every certificate from storage), so a
// client on the LAN asking in a loop costs one making a second.
func TestDashboardDataIsShared(t *testing.T) {
	d := &dashboard{}
	first := d.current()
	d.at = time.Now().Add(time.Hour) // (fresh whatever the machine's pauses: the test is of the sharing, not of the clock)
	for range 50 {
		if got := d.current(); !got.Generated.Equal(first.Generated) {
			t.Fatalf("made again within %v: %v then %v", dashboardFresh, first.Generated, got.Generated)
		}
	}
	d.at = time.Now().Add(-dashboardFresh)
	if got := d.current(); got.Generated.Equal(first.Generated) {
		t.Errorf("not made again once %v old", dashboardFresh)
	}
}
