package tests

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLogsAreSafeForATerminal: what Caddy logs from an app, or says when it
// cannot start one, reaches the terminal of whoever runs `caddy run` (its
// console log writes a message as it is), so control characters in it are
// shown as '?'. The attack from the internet: an app that logs the paths
// it is asked for (Django's "Not Found: <path>") is sent an escape
// sequence in one (OSC 52 writes the terminal's clipboard) and an 8-bit
// CSI; from the app's account: a before_start command that prints one and
// fails, whose output Caddy quotes in its error.
func TestLogsAreSafeForATerminal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir+"/logpath.py", `import sys

def application(environ, start_response):
    sys.stderr.write('Not Found: %s\n' % environ['PATH_INFO'])
    sys.stderr.flush()
    start_response('404 Not Found', [('Content-Type', 'text/plain')])
    return [b'not here']
`)
	port := freePort(t)
	site := func(extra string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi logpath:application {
		dir %s
		python {PYTHON}
		workers 1
		%s
	}
}`, port, dir, extra)
	}
	c := startCaddy(t, site(""))
	for _, path := range []string{"/%1B]52;c;Y3VybCBldmlsfHNo%07end", "/%C2%9B2J"} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	waitFor(t, 10*time.Second, "the app's lines in Caddy's log", func() bool {
		return strings.Contains(c.log.String(), "2J")
	})
	log := c.log.String()
	if !strings.Contains(log, "Not Found: /?]52;c;Y3VybCBldmlsfHNo?end") {
		t.Errorf("the app's line with an escape sequence is not in the log as text:\n%s", tail(log, 6))
	}
	for _, control := range []string{"\x1b", `\u001b`, "\u009b", `\u009b`, "\x07", `\u0007`} {
		if strings.Contains(log, control) {
			t.Errorf("Caddy's log holds the control character %q the app printed:\n%s", control, tail(log, 6))
		}
	}

	// the same through a start error
	failing := refused(t, site(`before_start {PYTHON} -c "print('\x1b]52;c;Y3VybCBldmlsfHNo\x07 \xc2\x9b2J'); raise SystemExit(1)"`))
	if !strings.Contains(failing, "before_start") || !strings.Contains(failing, "?]52;c;Y3VybCBldmlsfHNo?") {
		t.Errorf("the failing before_start's output is not in Caddy's error as text:\n%s", tail(failing, 6))
	}
	for _, control := range []string{"\x1b", `\u001b`, "\u009b", `\u009b`, "\x07", `\u0007`} {
		if strings.Contains(failing, control) {
			t.Errorf("Caddy's error holds the control character %q before_start printed:\n%s", control, tail(failing, 6))
		}
	}
}
