package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// bombApp is a WSGI app whose /bomb forks children that sleep until it
// has 400 or a fork fails, then ends them and answers how many it started
// and how the last fork failed; /hold forks until a fork fails and keeps
// them, /release ends them; any other path answers its RLIMIT_NPROC.
const bombApp = `import os, resource, signal, time

held = []

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
    elif environ['PATH_INFO'] == '/hold':
        # forks until a fork fails, and keeps its children
        while True:
            try:
                pid = os.fork()
            except OSError as e:
                body = 'holding %d errno %d' % (len(held), e.errno)
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            held.append(pid)
    elif environ['PATH_INFO'] == '/release':
        for pid in held:
            os.kill(pid, signal.SIGKILL)
        for pid in held:
            os.waitpid(pid, 0)
        body = 'released %d' % len(held)
        held.clear()
    else:
        body = 'limit %d %d' % resource.getrlimit(resource.RLIMIT_NPROC)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body.encode()]
`

// A fork bomb in an app running as its own account stops at the global
// max_processes: its forks past it fail with EAGAIN (errno 11), Caddy and
// the app's other worker keep serving, and the status shows the limit. A
// reload that changes it gives the new limit to workers started from then
// on (here by a restart). The account is games (uid 5): no other test
// runs anything as it, and the limit counts the account's every process.
func TestMaxProcessesStopsAForkBomb(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the app as another account")
	}
	t.Parallel()
	dir := bombAppDir(t)
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

	// caddy hearth exec runs the app's code with the limit of the config
	// it reads (the file Caddy was started with)
	cli := exec.Command(caddyBinary(t), "hearth", "exec", "--user", "games", "bomb", "--", "python", "-c", "import resource; print(*resource.getrlimit(resource.RLIMIT_NPROC))")
	cli.Dir, cli.Env = c.dir, append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(c.dir, "data"))
	if out, err := cli.CombinedOutput(); err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "\n200 200") && strings.TrimSpace(string(out)) != "200 200" {
		t.Errorf("caddy hearth exec: %v, %q; want its RLIMIT_NPROC 200 200", err, out)
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

// With preload, a worker that holds its account at max_processes keeps
// the fork server from forking a replacement: the fork server says so
// and goes on (it used to die of the failed fork, and every worker with
// it), the worker serves on, and once the processes are gone the
// replacement is forked. The account is news (uid 9), for the same reason
// as games above.
func TestForkServerAtMaxProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the app as another account")
	}
	t.Parallel()
	dir := bombAppDir(t)
	port := freePort(t)
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		max_processes 150
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi bomb:application {
		name preloaded_bomb
		dir %s
		python {PYTHON}
		workers 2
		preload
		user news
		guard enforce {
			allow HG-ADMIN-01 # the harness's admin API is on TCP
		}
	}
}`, port, dir))
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	apps := c.mustApps()
	forkServer := apps[0].ForkServerPid
	if forkServer == 0 || len(apps[0].Workers) != 2 {
		t.Fatalf("the app: %+v", apps[0])
	}
	if _, body := get(t, site+"/hold"); !strings.HasPrefix(body, "holding ") || !strings.HasSuffix(body, "errno 11") {
		t.Fatalf("/hold: %q", body)
	}
	var holder, other int
	for _, w := range apps[0].Workers {
		if len(descendants(w.Pid)) > 0 {
			holder = w.Pid
		} else {
			other = w.Pid
		}
	}
	if holder == 0 || other == 0 {
		t.Fatalf("no worker holds the processes: %+v", apps[0].Workers)
	}
	// as many more processes of the account as the other worker has
	// threads, started by root (whose starts the limit does not hold):
	// with the other worker gone, the account is still at the limit when
	// the fork server forks its replacement
	var extras []*exec.Cmd
	defer func() {
		for _, extra := range extras {
			extra.Process.Kill()
			extra.Wait()
		}
	}()
	for range threadsOf(t, other) {
		extra := exec.Command("/bin/sleep", "60")
		extra.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 9, Gid: 9}}
		if err := extra.Start(); err != nil {
			t.Fatal(err)
		}
		extras = append(extras, extra)
	}
	syscall.Kill(other, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "the failed fork to be logged", func() bool {
		return strings.Contains(c.log.String(), "the fork server could not fork a worker: resource temporarily unavailable: the account news (uid 9) is at its process limit")
	})
	if !supervisor.Alive(forkServer) || !supervisor.Alive(holder) {
		t.Fatalf("after the failed fork: fork server alive %v, the other worker alive %v", supervisor.Alive(forkServer), supervisor.Alive(holder))
	}
	if resp, body := get(t, site+"/release"); resp.StatusCode != 200 || !strings.HasPrefix(body, "released ") {
		t.Fatalf("/release: %d %q", resp.StatusCode, body)
	}
	for _, extra := range extras {
		extra.Process.Kill()
	}
	waitFor(t, 60*time.Second, "the replacement worker", func() bool {
		apps, err := c.apps()
		return err == nil && len(apps) == 1 && len(apps[0].Workers) == 2 && apps[0].ForkServerPid == forkServer && allRunning(apps)
	})
}

// threadsOf counts a process's threads.
func threadsOf(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(tasks)
}

// bombAppDir makes a directory holding bombApp that other accounts can read.
func bombAppDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	writeFile(t, filepath.Join(dir, "bomb.py"), bombApp)
	os.Chmod(filepath.Join(dir, "bomb.py"), 0o644)
	return dir
}
