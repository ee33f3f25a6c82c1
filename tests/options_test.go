package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type envReply struct {
	Executable string            `json:"executable"`
	Prefix     string            `json:"prefix"`
	Cwd        string            `json:"cwd"`
	Path0      string            `json:"path0"`
	Env        map[string]string `json:"env"`
}

func TestEnvVenvAndDir(t *testing.T) {
	tmp := t.TempDir()
	venv := filepath.Join(tmp, "venv")
	if out, err := exec.Command(pythonPath(), "-m", "venv", "--without-pip", "--system-site-packages", venv).CombinedOutput(); err != nil {
		t.Fatalf("creating a venv: %v\n%s", err, out)
	}
	envFile := filepath.Join(tmp, "app.env")
	writeFile(t, envFile, "# settings\nFROM_FILE=file value\nOVERRIDDEN=from file\nexport QUOTED=\"a b\"\n")
	os.Chmod(envFile, 0o600) // the guard refuses env files others can read
	os.Setenv("HEARTH_TEST_OUTER", "outer-value")
	defer os.Unsetenv("HEARTH_TEST_OUTER")
	port := freePort(t)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi envinfo:application {
		dir {APPS}
		venv %s
		env_file %s
		env OVERRIDDEN "from env"
		env PLACEHOLDER {env.HEARTH_TEST_OUTER}
		workers 1
	}
}`, port, venv, envFile))
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/?FROM_FILE,OVERRIDDEN,QUOTED,PLACEHOLDER,VIRTUAL_ENV,HEARTH_APP", port))
	var got envReply
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(body)
	}
	want := map[string]string{"FROM_FILE": "file value", "OVERRIDDEN": "from env", "QUOTED": "a b", "PLACEHOLDER": "outer-value", "VIRTUAL_ENV": venv}
	for k, v := range want {
		if got.Env[k] != v {
			t.Errorf("%s = %q, want %q", k, got.Env[k], v)
		}
	}
	if got.Env["HEARTH_APP"] != "" {
		t.Errorf("runtime variables leak into the app's environment")
	}
	if got.Prefix != venv || !strings.HasPrefix(got.Executable, venv) {
		t.Errorf("not running in the venv: prefix %s executable %s", got.Prefix, got.Executable)
	}
	if got.Cwd != repoPath("tests", "apps") && filepath.Clean(got.Cwd) != filepath.Clean(repoPath("tests", "apps")) {
		t.Errorf("cwd %s", got.Cwd)
	}
	if filepath.Clean(got.Path0) != filepath.Clean(repoPath("tests", "apps")) {
		t.Errorf("sys.path[0] = %s, want the app dir", got.Path0)
	}
}

func TestThreadsAndLeastBusyDispatch(t *testing.T) {
	t.Parallel()
	// one worker with 4 threads: 4 requests meet inside it at once
	config, url := site(t, "rendezvous:application", "workers 1\n\t\tthreads 4")
	startCaddy(t, config)
	pids := concurrentGets(t, url+"/meet?n=4", 4)
	if len(pids) != 1 {
		t.Errorf("4 requests on 1 worker came from %v", pids)
	}
	// two workers with 2 threads each: while one worker is busy, requests
	// go to the idle one, not to the busy one's free thread
	config, url = site(t, "rendezvous:application", "workers 2\n\t\tthreads 2")
	c := startCaddy(t, config)
	held := make(chan int, 1)
	go func() {
		resp, err := http.Get(url + "/sleep?2")
		if err != nil {
			held <- 0
			return
		}
		resp.Body.Close()
		held <- resp.StatusCode
	}()
	busy := 0
	waitFor(t, 10*time.Second, "one busy worker", func() bool {
		for _, a := range c.mustApps() {
			for _, w := range a.Workers {
				if w.State == "busy" {
					busy = w.Pid
					return true
				}
			}
		}
		return false
	})
	for i := 0; i < 5; i++ {
		_, pid := get(t, url+"/pid")
		if pid == fmt.Sprint(busy) {
			t.Fatalf("request %d went to the busy worker %d while another was idle", i, busy)
		}
	}
	if status := <-held; status != 200 {
		t.Errorf("held request: %d", status)
	}
}

// concurrentGets runs n GETs at once and returns the distinct bodies.
func concurrentGets(t *testing.T, url string, n int) map[string]bool {
	t.Helper()
	var mu sync.Mutex
	bodies := map[string]bool{}
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(url)
			if err != nil {
				t.Error(err)
				return
			}
			var b [32]byte
			k, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
				return
			}
			mu.Lock()
			bodies[string(b[:k])] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	return bodies
}

func TestBeforeStart(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	marker := filepath.Join(tmp, "ran")
	config, _ := site(t, "envinfo:application", `env MARKER `+marker+`
		workers 1
		before_start python -c "import os; open(os.environ['MARKER'], 'w').write('first')"
		before_start /bin/sh -c "echo second >> $MARKER"`)
	c := startCaddy(t, config)
	data, _ := os.ReadFile(marker)
	if string(data) != "firstsecond\n" {
		t.Errorf("before_start commands: marker holds %q", data)
	}
	_ = c
	// a failing before_start refuses the config, with its output
	failing, _ := site(t, "hello:application", "workers 1\n\t\tbefore_start python -c \"import sys; print('migration 0042 exploded'); sys.exit(3)\"")
	code, body := c.load(failing)
	if code == 200 || !strings.Contains(body, "migration 0042 exploded") || !strings.Contains(body, "exit status 3") {
		t.Errorf("failing before_start: %d %s", code, body)
	}
}

func TestStartTimeout(t *testing.T) {
	t.Parallel()
	config, _ := site(t, "slow_import:application", "workers 1\n\t\tstart_timeout 1s")
	if log := refused(t, config); !strings.Contains(log, "did not become ready within start_timeout (1s)") {
		t.Errorf("log lacks the start_timeout explanation:\n%s", tail(log, 20))
	}
}

// TestStopDoesNotWaitForAStartingWorker: Caddy stopping while a worker is
// still importing the app (a replacement, its import slow this time) does
// not wait for its greeting: the stop waited start_timeout for it (here
// two minutes), past what systemd gives a stop before it kills Caddy.
func TestStopDoesNotWaitForAStartingWorker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	imports := filepath.Join(dir, "imports")
	// the inspection's import and the first worker's are quick, the next ones slow
	writeFile(t, filepath.Join(dir, "slowagain.py"), fmt.Sprintf(`import time
with open(%q, 'a+') as f:
    f.write('import\n')
    f.seek(0)
    n = len(f.readlines())
if n > 2:
    time.sleep(300)


def application(environ, start_response):
    start_response('200 OK', [])
    return [b'ok']
`, imports))
	config, _ := appSite(t, "wsgi", "slowagain:application", dir, "workers 1\n\t\tstart_timeout 120s")
	c := startCaddy(t, config)
	pid := c.workerPIDs()[0]
	_ = syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "the replacement importing the app", func() bool {
		data, _ := os.ReadFile(imports)
		return strings.Count(string(data), "import") >= 3
	})
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	c.waitExit(15 * time.Second) // the stop's own bound for its workers is 10 s
}
