package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTimeoutKillsHungRequest(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	// two handlers for the same app: one pool, two timeouts
	c := startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	@long path /long/*
	wsgi @long hang:application {
		dir {APPS}
		python {PYTHON}
		workers 2
		timeout 10s
	}
	wsgi hang:application {
		dir {APPS}
		python {PYTHON}
		workers 2
		timeout 1s
	}
}`, port))
	if apps := c.mustApps(); len(apps) != 1 || len(apps[0].Workers) != 2 {
		t.Fatalf("two handlers with the same pool settings must share one pool of 2 workers: %+v", apps)
	}
	before := c.workerPIDs()
	resp, _ := get(t, url+"/hang")
	if resp.StatusCode != 504 {
		t.Fatalf("hung request: status %d, want 504", resp.StatusCode)
	}
	waitFor(t, 10*time.Second, "the stack dump in the log", func() bool {
		log := c.log.String()
		return strings.Contains(log, "sleep_forever_on_purpose") && strings.Contains(log, "request timed out")
	})
	waitFor(t, 10*time.Second, "the hung worker replaced", func() bool {
		a := c.mustApps()[0]
		return len(a.Workers) == 2 && a.Restarts["timeout"] == 1
	})
	after := c.workerPIDs()
	replaced := 0
	for _, p := range before {
		if !contains(after, p) {
			replaced++
			if !waitGone(p, 5*time.Second) {
				t.Errorf("hung worker %d still running", p)
			}
		}
	}
	if replaced != 1 {
		t.Errorf("%d workers replaced, want 1 (before %v, after %v)", replaced, before, after)
	}
	// 2s is past the 1s timeout but within the /long/ route's 10s
	if resp, _ := get(t, url+"/long/slow?2"); resp.StatusCode != 200 {
		t.Errorf("/long/slow?2 under a 10s timeout: %d", resp.StatusCode)
	}
	if resp, _ := get(t, url+"/slow?2"); resp.StatusCode != 504 {
		t.Errorf("/slow?2 under a 1s timeout: %d", resp.StatusCode)
	}
}

func contains(list []int, x int) bool {
	for _, v := range list {
		if v == x {
			return true
		}
	}
	return false
}

func TestMaxRequestsRecyclesWithoutFailures(t *testing.T) {
	t.Parallel()
	c, first, l := underLoad(t, "fail:application", "workers 2\n\t\tmax_requests 50\n\t\tmax_requests_jitter 5", "/slow?0.002", 8)
	a := recycleUnderLoad(t, c, first, l, "max_requests", 10, 500)
	// a worker past its limit keeps serving only until its replacement is
	// ready (spawn before retire), so a little over 55 requests
	for _, w := range a.Workers {
		if w.Requests > 55*4 {
			t.Errorf("worker %d served %d requests with max_requests 50 (+5 jitter)", w.Pid, w.Requests)
		}
	}
}

func TestMaxMemoryRecyclesLeakyWorker(t *testing.T) {
	t.Parallel()
	c, first, l := underLoad(t, "leaky:application", "workers 2\n\t\tmax_memory 120MiB", "/", 4)
	a := recycleUnderLoad(t, c, first, l, "memory", 2, 50)
	for _, w := range a.Workers {
		if w.RSS < 1<<20 {
			t.Errorf("worker %d reports an RSS of %d bytes", w.Pid, w.RSS)
		}
	}
}

// A max_memory below what a worker holds once its app is imported is said
// once, and not enforced on such workers: replacing them would import the
// app again every second, each replacement over the limit too.
func TestMaxMemoryBelowAFreshWorker(t *testing.T) {
	t.Parallel()
	config, url := site(t, "hello:application", "workers 2\n\t\tmax_memory 2MiB")
	c := startCaddy(t, config)
	first := c.workerPIDs()
	for range 20 {
		get(t, url+"/")
		time.Sleep(200 * time.Millisecond) // the memory monitor samples once a second
	}
	if a := c.mustApps()[0]; a.Restarts["memory"] != 0 || !slices.Equal(c.workerPIDs(), first) {
		t.Errorf("workers over max_memory from their start were replaced: restarts %v, workers %v then %v", a.Restarts, first, c.workerPIDs())
	}
	if log := c.log.String(); strings.Count(log, "max_memory is below what a worker holds right after it starts: such workers are held to twice that instead") != 1 {
		t.Errorf("the log does not say once that max_memory is too low:\n%s", log)
	}
	// such a worker that then leaks is still replaced, at twice what it
	// started with (4 MiB kept per request)
	config, url = site(t, "leaky:application", "workers 1\n\t\tmax_memory 2MiB")
	c = startCaddy(t, config)
	waitFor(t, 60*time.Second, "the leaking worker replaced", func() bool {
		get(t, url+"/")
		time.Sleep(100 * time.Millisecond) // the memory monitor samples once a second
		return c.mustApps()[0].Restarts["memory"] >= 1
	})
}

// recycleUnderLoad waits while l runs until the pool has replaced workers
// for reason at least n times, then finishes l, wanting minOK successful
// requests. It fails the test if a worker crashed meanwhile or if one of
// the first workers is still in service, and returns the app's status for
// the caller's own checks.
func recycleUnderLoad(t *testing.T, c *caddyProc, first []int, l *load, reason string, n int, minOK int64) appStatus {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d %s recycles", n, reason), func() bool {
		return c.mustApps()[0].Restarts[reason] >= n
	})
	l.finish(t, minOK)
	a := c.mustApps()[0]
	if a.Restarts["crash"] != 0 {
		t.Errorf("crash restarts during %s recycling: %v", reason, a.Restarts)
	}
	for _, p := range first {
		if contains(c.workerPIDs(), p) {
			t.Errorf("worker %d was never recycled (%s)", p, reason)
		}
	}
	return a
}

func TestMaxLifetime(t *testing.T) {
	t.Parallel()
	c, _, l := underLoad(t, "fail:application", "workers 2\n\t\tmax_lifetime 1s", "/", 4)
	waitFor(t, 30*time.Second, "lifetime recycles", func() bool {
		return c.mustApps()[0].Restarts["lifetime"] >= 4
	})
	l.finish(t, 50)
	if n, a := len(c.workerPIDs()), c.mustApps()[0]; n != 2 || a.Restarts["crash"] != 0 {
		t.Errorf("after lifetime recycles: %d workers, restarts %v", n, a.Restarts)
	}
}

func TestAutoscaling(t *testing.T) {
	t.Parallel()
	config, url := site(t, "hang:application", "workers 1 3\n\t\tidle_timeout 1s")
	c := startCaddy(t, config)
	if n := len(c.workerPIDs()); n != 1 {
		t.Fatalf("autoscaled pool starts with %d workers, want the minimum 1", n)
	}
	l := startLoad(url+"/slow?0.2", 6)
	most := 0
	waitFor(t, 30*time.Second, "scale up to the maximum", func() bool {
		n := len(c.mustApps()[0].Workers)
		most = max(most, n)
		return n == 3
	})
	l.waitServed(t, 30)
	for i := 0; i < 20; i++ {
		most = max(most, len(c.mustApps()[0].Workers))
		time.Sleep(25 * time.Millisecond)
	}
	l.finish(t, 30)
	if most > 3 {
		t.Errorf("%d workers, above the maximum 3", most)
	}
	waitFor(t, 30*time.Second, "scale back down to the minimum", func() bool {
		a := c.mustApps()[0]
		live := 0
		for _, w := range a.Workers {
			if w.State != "retiring" {
				live++
			}
		}
		return live == 1 && a.Restarts["scale"] == 2
	})
	time.Sleep(1500 * time.Millisecond) // longer than idle_timeout: must not go below the minimum
	if n := len(c.mustApps()[0].Workers); n != 1 {
		t.Errorf("%d workers after idling, want 1", n)
	}
}

// adminPost posts to the admin API and returns the status and body.
func adminPost(t *testing.T, c *caddyProc, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+c.admin+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminRestartAndScaleUnderLoad(t *testing.T) {
	t.Parallel()
	c, first, l := underLoad(t, "fail:application", "workers 2", "/slow?0.01", 8)
	l.waitServed(t, 30)
	if code, body := adminPost(t, c, "/hearth/apps/fail/restart", ""); code != 200 {
		t.Fatalf("restart: %d %s", code, body)
	}
	waitFor(t, 20*time.Second, "the restarted workers alone in service", func() bool {
		serving, all, _ := inService(c)
		return serving == 2 && all == 2
	})
	holdsAt(t, c, 2, "after a restart under load")
	l.waitServed(t, 30)
	second := c.workerPIDs()
	for _, p := range first {
		if contains(second, p) {
			t.Errorf("worker %d survived a restart", p)
		}
	}
	for _, n := range []int{4, 1, 3} {
		if code, body := adminPost(t, c, "/hearth/apps/fail/scale", fmt.Sprintf(`{"workers": %d}`, n)); code != 200 {
			t.Fatalf("scale to %d: %d %s", n, code, body)
		}
		waitFor(t, 20*time.Second, fmt.Sprintf("%d workers", n), func() bool {
			live := 0
			for _, w := range c.mustApps()[0].Workers {
				if w.State != "retiring" {
					live++
				}
			}
			return live == n
		})
		holdsAt(t, c, n, fmt.Sprintf("scaled to %d under load", n))
		l.waitServed(t, 30)
	}
	l.finish(t, 150)
	// idle: a SIGKILLed worker is replaced once
	_, _, pids := inService(c)
	syscall.Kill(pids[0], syscall.SIGKILL)
	waitFor(t, 30*time.Second, "the killed worker replaced", func() bool {
		serving, _, now := inService(c)
		return serving == 3 && !contains(now, pids[0])
	})
	holdsAt(t, c, 3, "idle after a kill")
	a := c.mustApps()[0]
	if a.Restarts["reload"] != 2 || a.Restarts["crash"] != 1 {
		t.Errorf("restarts %v", a.Restarts)
	}
}

func TestAdminBadInput(t *testing.T) {
	t.Parallel()
	config, _ := site(t, "hello:application", "workers 1")
	c := startCaddy(t, config)
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/hearth/apps/nosuch/restart", "", 404, "no app named \"nosuch\""},
		{"POST", "/hearth/apps/nosuch/scale", `{"workers": 2}`, 404, "no app named \"nosuch\""},
		{"POST", "/hearth/apps/hello/scale", `{"workers": "two"}`, 400, "send {\"workers\": N}"},
		{"POST", "/hearth/apps/hello/scale", `{"workers": 3}{"workers": 99999}`, 400, "more after its JSON object"},
		{"POST", "/hearth/apps/hello/scale?workers=abc", "", 400, "is not a number"},
		{"POST", "/hearth/apps/hello/scale", `{"workers": 0}`, 400, "out-of-range"},
		{"POST", "/hearth/apps/hello/scale", `{"workers": 99999}`, 400, "out-of-range"},
		{"POST", "/hearth/apps/hello/scale", `garbage{`, 400, "reading the request body"},
		{"POST", "/hearth/apps/hello/scale", `{"workers": 2, "extra": 1}`, 400, "unknown field"},
		{"GET", "/hearth/apps/hello/restart", "", 405, "use POST"},
		{"DELETE", "/hearth/apps", "", 405, "use GET"},
		{"GET", "/hearth/nothing", "", 404, "unknown Hearth admin route"},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+c.admin+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		if resp.StatusCode != tc.status || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %s %s: %d %s; want %d with %q", tc.method, tc.path, tc.body, resp.StatusCode, body, tc.status, tc.want)
		}
	}
	if n := len(c.workerPIDs()); n != 1 {
		t.Errorf("bad requests changed the pool: %d workers", n)
	}
}

func TestWatchRestartsOnChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir+"/watched.py", "def application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [b'version 1']\n")
	config, url := appSite(t, "wsgi", "watched:application", dir, "workers 2\n\t\twatch")
	c := startCaddy(t, config)
	if _, body := get(t, url); body != "version 1" {
		t.Fatalf("got %q", body)
	}
	writeFile(t, dir+"/watched.py", "def application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [b'version 2']\n")
	waitFor(t, 20*time.Second, "the new code served", func() bool {
		_, body := get(t, url)
		return body == "version 2" && c.mustApps()[0].Restarts["reload"] == 2
	})
	// files the globs do not match, or in a directory that is never
	// watched: no restart
	os.MkdirAll(dir+"/.git", 0o755)
	writeFile(t, dir+"/notes.txt", "not code\n")
	writeFile(t, dir+"/.git/hook.py", "x = 1\n")
	time.Sleep(1500 * time.Millisecond) // well past the watcher's settling time
	if n := c.mustApps()[0].Restarts["reload"]; n != 2 {
		t.Errorf("%d restarts after changes to unwatched files, want 2", n)
	}
	// a directory created after the start is watched
	os.MkdirAll(dir+"/pkg/sub", 0o755)
	writeFile(t, dir+"/pkg/sub/helper.py", "x = 1\n")
	waitFor(t, 20*time.Second, "the restart after a file in a new directory", func() bool {
		return c.mustApps()[0].Restarts["reload"] == 4
	})
	// a change that breaks the app: the old workers keep serving
	writeFile(t, dir+"/watched.py", "this is not python(\n")
	waitFor(t, 20*time.Second, "the failed restart reported", func() bool {
		return strings.Contains(c.log.String(), "restart after a file change failed")
	})
	if _, body := get(t, url); body != "version 2" {
		t.Errorf("after a broken change: %q", body)
	}
}

// TestRestartCutShortByAReloadIs409: a reload that replaces an app while
// a restart of it waits for a new worker ends the restart with 409, "ask
// again", as the README says (it answered 500, as for a worker that
// could not start).
func TestRestartCutShortByAReloadIs409(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate") // while it is missing, a worker of the first config waits to import
	if err := os.WriteFile(filepath.Join(dir, "gated.py"), []byte(`import os, time
gate = os.environ.get("GATE")
if gate and not os.path.exists(gate):
    open(gate + ".waiting", "w").close()
while gate and not os.path.exists(gate):
    time.sleep(0.05)

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	config := func(more string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\twsgi gated:application {\n\t\tname gated\n\t\tdir %s\n\t\tpython {PYTHON}\n\t\tworkers 1\n\t\t%s\n\t}\n}\n", port, dir, more)
	}
	c := startCaddy(t, config("env GATE "+gate))
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code int
		body string
	}
	restarted := make(chan answer, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Post("http://"+c.admin+"/hearth/apps/gated/restart", "application/json", nil)
		if err != nil {
			restarted <- answer{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		restarted <- answer{resp.StatusCode, string(b)}
	}()
	waitFor(t, 20*time.Second, "the restart's new worker waiting to import", func() bool {
		select {
		case a := <-restarted:
			t.Fatalf("the restart ended before the reload: %d %s", a.code, a.body)
		default:
		}
		_, err := os.Stat(gate + ".waiting")
		return err == nil
	})
	if code, body := c.load(config("")); code != 200 {
		t.Fatalf("the reload: %d %s", code, body)
	}
	select {
	case a := <-restarted:
		if a.code != http.StatusConflict || !strings.Contains(a.body, "ask again") {
			t.Errorf("a restart cut short by a reload: %d %s, want 409 saying to ask again", a.code, a.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the restart did not end after the reload replaced its app")
	}
}
