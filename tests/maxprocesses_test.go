package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// bombApp is a WSGI app whose /bomb forks children that sleep until it
// has 400 or a fork fails, then ends them and answers how many it started
// and how the last fork failed; any other path answers its RLIMIT_NPROC.
const bombApp = `import os, resource, signal, time

def application(environ, start_response):
    if environ['PATH_INFO'] == '/bomb':
        kids, failure = [], 'none'
        while len(kids) < 400:
            try:
                pid = os.fork()
            except OSError as e:
                failure = 'errno %d' % e.errno
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            kids.append(pid)
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
        for pid in kids:
            os.waitpid(pid, 0)
        body = 'started %d %s' % (len(kids), failure)
    else:
        body = 'limit %d %d' % resource.getrlimit(resource.RLIMIT_NPROC)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
`

// A fork bomb in an app running as its own account stops at the global
// max_processes: its forks past it fail with EAGAIN (errno 11), Caddy and
// the app's other worker keep serving, and the status shows the limit. A
// reload that changes it gives the new limit to workers started from then
// on (here by a restart), and the keeper of the old limit ends with the
// last process it started. The account is games (uid 5): no other test
// runs anything as it, and the limit counts the account's every process.
func TestMaxProcessesStopsAForkBomb(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the app as another account")
	}
	t.Parallel()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	writeFile(t, filepath.Join(dir, "bomb.py"), bombApp)
	os.Chmod(filepath.Join(dir, "bomb.py"), 0o644)
	port := freePort(t)
	config := func(limit string) string {
		return fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		max_processes %s
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi bomb:application {
		dir %s
		python {PYTHON}
		workers 2
		user games
		guard enforce {
			allow HG-ADMIN-01 # the harness's admin API is on TCP
		}
	}
}`, limit, port, dir)
	}
	c := startCaddy(t, config("200"))
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	if _, body := get(t, site+"/"); body != "limit 200 200" {
		t.Errorf("a worker's RLIMIT_NPROC: %q, want 200 200", body)
	}
	if got := maxProcessesStatus(t, c); got != 200 {
		t.Errorf("GET /hearth/apps: max_processes %d, want 200", got)
	}

	resp, body := get(t, site+"/bomb")
	var started int
	var failure string
	if _, err := fmt.Sscanf(body, "started %d %s", &started, &failure); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the fork bomb: %d %q", resp.StatusCode, body)
	}
	if started >= 200 || !strings.HasSuffix(body, "errno 11") {
		t.Errorf("the fork bomb: %q; want fewer than 200 started, then EAGAIN (errno 11)", body)
	}
	for i := 0; i < 4; i++ { // both workers, the bomb's included, still serve
		if resp, body := get(t, site+"/"); resp.StatusCode != 200 || body != "limit 200 200" {
			t.Errorf("after the fork bomb: %d %q", resp.StatusCode, body)
		}
	}

	oldKeepers := keepersOf(c)
	if len(oldKeepers) != 1 {
		t.Fatalf("keepers before the reload: %v, want the one of limit 200", oldKeepers)
	}
	if code, body := c.load(config("300")); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if got := maxProcessesStatus(t, c); got != 300 {
		t.Errorf("GET /hearth/apps after the reload: max_processes %d, want 300", got)
	}
	if _, body := get(t, site+"/"); body != "limit 200 200" {
		t.Errorf("a worker kept across the reload: %q, want the limit it started with, 200 200", body)
	}
	if code, body := adminPost(t, c, "/hearth/apps/bomb/restart", ""); code != 200 {
		t.Fatalf("restart: %d %s", code, body)
	}
	for i := 0; i < 4; i++ {
		if _, body := get(t, site+"/"); body != "limit 300 300" {
			t.Errorf("a worker started after the reload: %q, want 300 300", body)
		}
	}
	waitFor(t, 15*time.Second, "the keeper of the old limit to end", func() bool {
		for _, pid := range oldKeepers {
			if supervisor.Alive(pid) {
				return false
			}
		}
		return true
	})
	if now := keepersOf(c); len(now) != 1 || now[0] == oldKeepers[0] {
		t.Errorf("keepers after the restart: %v, want one, not %d", now, oldKeepers[0])
	}
	if strings.Contains(c.log.String(), "process keeper ended") {
		t.Errorf("the retired keeper's end was logged as a failure:\n%s", tail(c.log.String(), 10))
	}
}

// maxProcessesStatus reads max_processes from GET /hearth/apps.
func maxProcessesStatus(t *testing.T, c *caddyProc) int {
	t.Helper()
	resp, err := freshConnClient.Get("http://" + c.admin + "/hearth/apps")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var status struct {
		MaxProcesses *int `json:"max_processes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil || resp.StatusCode != http.StatusOK || status.MaxProcesses == nil {
		t.Fatalf("GET /hearth/apps: %d, %v", resp.StatusCode, err)
	}
	return *status.MaxProcesses
}

// keepersOf lists the keeper processes of c's Caddy.
func keepersOf(c *caddyProc) []int {
	var pids []int
	for _, pid := range descendants(c.cmd.Process.Pid) {
		if cmdline(pid) == "hearth-keeper" {
			pids = append(pids, pid)
		}
	}
	return pids
}
