package hearth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-dev/hearth/modules/job"
)

type namedConfig struct {
	name string
	bad  bool
}

func (c *namedConfig) check() error {
	if c.bad {
		return errors.New("bad config " + c.name)
	}
	return nil
}

func TestCheckNamed(t *testing.T) {
	for _, tc := range []struct {
		name    string
		configs []*namedConfig
		want    string // "" for no error
	}{
		{"unique", []*namedConfig{{name: "a"}, {name: "b"}}, ""},
		{"none", nil, ""},
		{"twice", []*namedConfig{{name: "a"}, {name: "b"}, {name: "a"}}, "two jobs are named a; give each its own name"},
		{"missing", []*namedConfig{{name: "a"}, nil}, "jobs: an empty job"},
		{"own check", []*namedConfig{{name: "a"}, {name: "b", bad: true}}, "bad config b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkNamed("jobs", tc.configs, "an empty job", (*namedConfig).check,
				func(c *namedConfig) string { return c.name })
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// What an app or a remote service wrote reaches a terminal (maybe root's)
// without an escape sequence.
func TestForTerminal(t *testing.T) {
	for _, tc := range []struct{ in, oneLine, lines string }{
		{"plain text", "plain text", "plain text"},
		{"two\nlines\ttab", "two lines tab", "two\nlines tab"},
		{"\x1b]0;owned\x07\x1b[2J clear", "?]0;owned?\x3f[2J clear", "?]0;owned??[2J clear"},
		{"c1 \u009b31m csi", "c1 ?31m csi", "c1 ?31m csi"},
		{"bad \xff utf-8 \x7f", "bad ? utf-8 ?", "bad ? utf-8 ?"},
		{"crlf\r\nline 10%\r20%", "crlf  line 10% 20%", "crlf\nline 10%20%"},
		// bidirectional controls reorder what the terminal shows ("Trojan Source")
		{"ok \u202egnp.exe\u202c \u2066x\u2069 \u200f", "ok ?gnp.exe? ?x? ?", "ok ?gnp.exe? ?x? ?"},
		{"emoji \U0001F469\u200d\U0001F4BB stays", "emoji \U0001F469\u200d\U0001F4BB stays", "emoji \U0001F469\u200d\U0001F4BB stays"},
	} {
		if got := printable(tc.in); got != tc.oneLine {
			t.Errorf("printable(%q) = %q, want %q", tc.in, got, tc.oneLine)
		}
		if got := printableLines(tc.in); got != tc.lines {
			t.Errorf("printableLines(%q) = %q, want %q", tc.in, got, tc.lines)
		}
	}
}

func TestPrintJSON(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{`{"a":"plain","n":1}`, "{\"a\":\"plain\",\"n\":1}\n", ""},
		{"{\"a\":\"ends in a newline\"}\n", "{\"a\":\"ends in a newline\"}\n", ""},
		{"{\"c1\":\"\u009b31m \u0085\",\"del\":\"\x7f\"}", `{"c1":"\u009b31m \u0085","del":"\u007f"}` + "\n", ""},
		{"{\"bad\":\"\x9b31m \xff\"}", "{\"bad\":\"\uFFFD31m \uFFFD\"}\n", ""},
		{"{\"fine\":\"é ü € \u00a0\"}", "{\"fine\":\"é ü € \u00a0\"}\n", ""},
		{"{\"out\":\"ok \u202egnp.exe\u2066\"}", `{"out":"ok \u202egnp.exe\u2066"}` + "\n", ""}, // bidi controls
		{"\x1b]0;owned\x07", "", "not JSON"},
		{"{\"raw escape\":\"\x1b[2J\"}", "", "not JSON"},
		{"", "", "not JSON"},
	} {
		var out bytes.Buffer
		err := printJSON(&out, []byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || out.Len() > 0 {
				t.Errorf("printJSON(%q) = %v, printed %q; want an error saying %q and nothing printed", tc.in, err, out.String(), tc.err)
			}
			continue
		}
		if err != nil || out.String() != tc.want {
			t.Errorf("printJSON(%q) printed %q (%v), want %q", tc.in, out.String(), err, tc.want)
		}
		if !json.Valid(out.Bytes()) {
			t.Errorf("printJSON(%q) printed invalid JSON %q", tc.in, out.String())
		}
	}
}

// TestStatusJSONFromAnotherListener: when Caddy is not running, any local
// account may listen on the admin API's address; `caddy hearth status
// --json` and `caddy hearth jobs --json` then print what it answers, to an
// administrator's terminal (maybe root's). A C1 control sequence (valid
// JSON) reaches it escaped; something that is not JSON is refused.
func TestStatusJSONFromAnotherListener(t *testing.T) {
	answer := "[{\"name\":\"\u009b2J\u009d0;owned\u009c \x7f\"}]"
	squatter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer squatter.Close()
	for _, c := range []struct {
		name string
		cmd  func() *cobra.Command
	}{{"status", statusCommand}, {"jobs", jobsCommand}} {
		cmd := c.cmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(io.Discard)
		cmd.SetArgs([]string{"--json", "--address", squatter.Listener.Addr().String()})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%s --json: %v", c.name, err)
		}
		if s := out.String(); strings.ContainsAny(s, "\u009b\u009c\u009d\x7f") || !strings.Contains(s, `\u009b2J`) {
			t.Errorf("%s --json printed %q: control characters must reach the terminal escaped", c.name, s)
		}
	}
}

// TestStatusTablesForTerminal: what the status tables print comes from the
// admin API (anything listening where the CLI looks, when Caddy is not
// running), so no field reaches the terminal with a control character.
func TestStatusTablesForTerminal(t *testing.T) {
	var rows []serviceRow
	if err := json.Unmarshal([]byte(`[{"name":"site\u001b]0;owned\u0007","listen":[":2929\u009b31m"],"hosts":["h\u001b[2J"],
		"certificates":[{"name":"a.example","state":"valid","issuer":"CA\u001b[5m","not_after":"2030-01-01T00:00:00Z"}],
		"pools":[{"state":"running\u0007"}]}]`), &rows); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printServices(&out, rows); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out.String(), "\x1b\x07\u009b") || !strings.Contains(out.String(), "site?]0;owned?") {
		t.Errorf("the table reaches the terminal with control characters:\n%q", out.String())
	}
	// a cell with a line break or a tab makes no row or column of its own
	out.Reset()
	if err := printJobs(&out, []job.Status{{Name: "nightly\nFAKE\tok", Schedule: "every 1h\tx"}}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 || strings.Contains(out.String(), "\t") {
		t.Errorf("a job's cells made rows or columns:\n%s", out.String())
	}
}

// Whatever listens on the admin address and never answers (any local
// account may, while Caddy is down) does not hold a command for good.
func TestAdminCallIsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never answered
		}
	}()
	old := adminReadWait
	adminReadWait = 300 * time.Millisecond
	defer func() { adminReadWait = old }()
	done := make(chan error, 1)
	go func() { _, err := adminCall(ln.Addr().String(), http.MethodGet, "/hearth/apps"); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no answer from Caddy's admin API") {
			t.Errorf("a silent listener: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("adminCall waits for a silent listener")
	}
}

// TestRunJobWaitsBoundedly: `caddy hearth jobs run` waits for the run's
// end, but whatever answers on the admin address while Caddy is down (any
// local account may listen there) can list the run as running forever.
// The command stops waiting once the run is past its timeout, when Caddy
// would have ended it, and says so.
func TestRunJobWaitsBoundedly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"run": 1}`)
			return
		}
		json.NewEncoder(w).Encode(job.Status{Name: "clean", Timeout: 0.2, Recent: []job.Run{{ID: 1, Result: job.Running}}})
	}))
	defer srv.Close()
	old := runWaitMargin
	runWaitMargin = 300 * time.Millisecond
	defer func() { runWaitMargin = old }()
	cmd := &cobra.Command{}
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	done := make(chan error, 1)
	go func() { done <- runJob(cmd, strings.TrimPrefix(srv.URL, "http://"), "jobs", "clean", false) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "still listed as running") || !strings.Contains(err.Error(), "stopped waiting") {
			t.Errorf("a run listed as running forever: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("runJob waits for a run listed as running forever")
	}
	for _, tc := range []struct {
		seconds float64
		want    time.Duration
	}{{0, job.DefaultTimeout}, {-1, job.DefaultTimeout}, {90, 90 * time.Second}, {1e300, maxRunWait}} {
		if got := runWait(tc.seconds); got != tc.want+runWaitMargin {
			t.Errorf("runWait(%g) = %s, want %s", tc.seconds, got, tc.want+runWaitMargin)
		}
	}
}
