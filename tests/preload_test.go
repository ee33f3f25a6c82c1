package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

type preloadReply struct {
	Pid, Ppid, ImportedIn, Pgid, Version int
}

func preloadGet(t *testing.T, url string) preloadReply {
	t.Helper()
	_, body := get(t, url)
	var r preloadReply
	if err := json.Unmarshal([]byte(body), &struct {
		Pid        *int `json:"pid"`
		Ppid       *int `json:"ppid"`
		ImportedIn *int `json:"imported_in"`
		Pgid       *int `json:"pgid"`
		Version    *int `json:"version"`
	}{&r.Pid, &r.Ppid, &r.ImportedIn, &r.Pgid, &r.Version}); err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	return r
}

func TestPreloadForksFromForkServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	source, err := os.ReadFile(repoPath("tests", "apps", "preloaded.py"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+"/preloaded.py", string(source))
	config, url := appSite(t, "wsgi", "preloaded:application", dir, "workers 2\n\t\tpreload")
	c := startCaddy(t, config)
	forkServerPid := func() int {
		var pid int
		waitFor(t, 10*time.Second, "a fork server pid in status", func() bool {
			apps, err := c.apps()
			if err != nil {
				return false
			}
			pid = apps[0].ForkServerPid
			return pid > 0
		})
		c.seenPID[pid] = true
		return pid
	}
	tpl := forkServerPid()
	workers := c.workerPIDs()
	seen := map[int]bool{}
	for i := 0; i < 10; i++ {
		r := preloadGet(t, url)
		seen[r.Pid] = true
		if r.ImportedIn != tpl || r.Ppid != tpl {
			t.Fatalf("worker %d: imported in %d, parent %d; want both the fork server %d", r.Pid, r.ImportedIn, r.Ppid, tpl)
		}
		if r.Pgid != r.Pid {
			t.Errorf("worker %d is in process group %d, not its own", r.Pid, r.Pgid)
		}
		if !contains(workers, r.Pid) {
			t.Errorf("served by %d, not one of the workers %v", r.Pid, workers)
		}
	}
	// a killed forked worker is replaced by a new fork
	syscall.Kill(workers[0], syscall.SIGKILL)
	waitFor(t, 20*time.Second, "a forked replacement", func() bool {
		p := c.workerPIDs()
		return len(p) == 2 && !contains(p, workers[0])
	})
	if r := preloadGet(t, url); r.ImportedIn != tpl {
		t.Errorf("replacement not forked from the fork server: %+v", r)
	}
	// a restart loads the new code in a new fork server
	writeFile(t, dir+"/preloaded.py", string(source)+"\nVERSION = 2\n")
	if code, body := adminPost(t, c, "/hearth/apps/preloaded/restart", ""); code != 200 {
		t.Fatalf("restart: %d %s", code, body)
	}
	newTpl := forkServerPid()
	if newTpl == tpl {
		t.Fatal("restart kept the old fork server")
	}
	if !waitGone(tpl, 10*time.Second) {
		t.Errorf("old fork server %d still running after the restart", tpl)
	}
	for i := 0; i < 4; i++ {
		if r := preloadGet(t, url); r.Version != 2 || r.ImportedIn != newTpl {
			t.Errorf("after restart: %+v, want version 2 from fork server %d", r, newTpl)
		}
	}
}

func TestPreloadDiesWithCaddy(t *testing.T) {
	t.Parallel()
	config, _ := site(t, "preloaded:application", "workers 2\n\t\tpreload")
	c := startCaddy(t, config)
	apps, err := c.apps()
	if err != nil {
		t.Fatal(err)
	}
	pids := append(c.workerPIDs(), apps[0].ForkServerPid)
	c.cmd.Process.Kill()
	c.waitExit(10 * time.Second)
	for _, pid := range pids {
		if !waitGone(pid, 5*time.Second) {
			t.Errorf("process %d survived caddy's SIGKILL", pid)
		}
	}
}

// TestWorkersFreezeImportedObjects: every kind of worker takes what the
// app's import made out of the cyclic collector's reach (gc.freeze), so
// a full collection does not walk it and, under preload, the forked
// workers do not write to the pages they share with the fork server.
func TestWorkersFreezeImportedObjects(t *testing.T) {
	t.Parallel()
	var config string
	urls := map[string]string{}
	for _, tc := range []struct{ name, handler, app, options string }{
		{"wsgi", "wsgi", "gcprobe:application", "name gc_wsgi\n\t\tworkers 1"},
		{"preload", "wsgi", "gcprobe:application", "name gc_preload\n\t\tworkers 1\n\t\tpreload"},
		{"asgi", "asgi", "gcprobe:app", "name gc_asgi\n\t\tworkers 1"},
	} {
		site, url := appSite(t, tc.handler, tc.app, repoPath("tests", "apps"), tc.options)
		config += site
		urls[tc.name] = url
	}
	startCaddy(t, config)
	for name, url := range urls {
		_, body := get(t, url)
		var r struct{ Frozen, Tracked int }
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("%s: reply %q: %v", name, body, err)
		}
		if r.Frozen < 1000 { // the app's 1,000 lists at least
			t.Errorf("%s: %d objects frozen (%d tracked), want what the import made", name, r.Frozen, r.Tracked)
		}
	}
}

// TestWorkersCPUPolicy: every kind of worker, and the threads it starts,
// runs under SCHED_BATCH by default (cpu_policy batch), so a worker Caddy
// wakes does not preempt Caddy; cpu_policy normal gives SCHED_OTHER even
// when Caddy runs under SCHED_BATCH; the variable that carries the choice
// does not reach the app.
func TestWorkersCPUPolicy(t *testing.T) {
	t.Parallel()
	const schedOther, schedBatch = 0, 3
	for _, caddyPolicy := range []int{schedOther, schedBatch} {
		var config string
		urls := map[string]string{}
		want := map[string]int{}
		for _, tc := range []struct {
			name, handler, app, options string
			policy                      int
		}{
			{"wsgi", "wsgi", "gcprobe:application", "workers 1", schedBatch},
			{"preload", "wsgi", "gcprobe:application", "workers 1\n\t\tpreload", schedBatch},
			{"asgi", "asgi", "gcprobe:app", "workers 1", schedBatch},
			{"normal", "wsgi", "gcprobe:application", "workers 1\n\t\tcpu_policy normal", schedOther},
		} {
			options := fmt.Sprintf("name cpu_%s_%d\n\t\t%s", tc.name, caddyPolicy, tc.options)
			site, url := appSite(t, tc.handler, tc.app, repoPath("tests", "apps"), options)
			config += site
			urls[tc.name] = url
			want[tc.name] = tc.policy
		}
		c := startCaddyUnder(t, caddyPolicy, config)
		if got := caddyPriority(t, c.cmd.Process.Pid).Policy; got != caddyPolicy {
			t.Fatalf("caddy runs under policy %d, want %d", got, caddyPolicy)
		}
		for name, url := range urls {
			_, body := get(t, url)
			var r struct {
				Policy       *int
				ThreadPolicy *int     `json:"thread_policy"`
				HearthEnv    []string `json:"hearth_env"`
			}
			if err := json.Unmarshal([]byte(body), &r); err != nil || r.Policy == nil || r.ThreadPolicy == nil {
				t.Fatalf("%s: reply %q: %v", name, body, err)
			}
			if *r.Policy != want[name] || *r.ThreadPolicy != want[name] {
				t.Errorf("caddy under %d, %s: the worker runs under policy %d and its thread under %d, want %d", caddyPolicy, name, *r.Policy, *r.ThreadPolicy, want[name])
			}
			if len(r.HearthEnv) > 0 {
				t.Errorf("%s: the app's environment holds %v", name, r.HearthEnv)
			}
		}
		c.stop()
	}
}

// TestWorkersCPUPolicyRefused: under a system call filter that refuses
// sched_setscheduler (as systemd's SystemCallFilter=~@resources does), the
// workers serve under the policy they inherited, and Caddy says so once
// for the pool, not once per worker: two workers, then two more after a
// restart, one warning.
func TestWorkersCPUPolicyRefused(t *testing.T) {
	t.Parallel()
	if runtime.GOARCH != "amd64" {
		t.Skip("tests/apps/seccompwrap.py filters x86_64 system calls")
	}
	const warning = "not the one cpu_policy asks for"
	site, url := appSite(t, "wsgi", "gcprobe:application", repoPath("tests", "apps"), "name cpu_refused\n\t\tworkers 2")
	c := newCaddyProc(t, site, "")
	c.underSeccomp("sched_setscheduler:EPERM")
	c.start()
	c.waitRunning()
	policyOf := func() int {
		_, body := get(t, url)
		var r struct{ Policy *int }
		if err := json.Unmarshal([]byte(body), &r); err != nil || r.Policy == nil {
			t.Fatalf("reply %q: %v", body, err)
		}
		return *r.Policy
	}
	if got := policyOf(); got != 0 {
		t.Fatalf("the worker runs under policy %d: the filter did not refuse SCHED_BATCH, so the test tests nothing", got)
	}
	first := c.workerPIDs()
	if code, body := adminPost(t, c, "/hearth/apps/cpu_refused/restart", ""); code != 200 {
		t.Fatalf("restart: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "two new workers", func() bool {
		p := c.workerPIDs()
		return len(p) == 2 && !contains(p, first[0]) && !contains(p, first[1])
	})
	if got := policyOf(); got != 0 {
		t.Errorf("after the restart the worker runs under policy %d", got)
	}
	if n := strings.Count(c.log.String(), warning); n != 1 {
		t.Errorf("%d warnings that cpu_policy was refused, want 1 for the pool:\n%s", n, c.log.String())
	}
}

// startCaddyUnder starts Caddy under the scheduling policy policy (it
// inherits it from the thread that starts it).
func startCaddyUnder(t *testing.T, policy int, config string) *caddyProc {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old := threadPolicy(t)
	setSchedPolicy(t, policy)
	defer setSchedPolicy(t, old)
	return startCaddy(t, config)
}

// threadPolicy is the scheduling policy of the calling thread.
func threadPolicy(t *testing.T) int {
	t.Helper()
	policy, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, 0, 0, 0)
	if e != 0 {
		t.Fatalf("sched_getscheduler: %v", e)
	}
	return int(policy)
}

// setSchedPolicy puts the calling thread under policy (SCHED_OTHER or
// SCHED_BATCH, priority 0).
func setSchedPolicy(t *testing.T, policy int) {
	t.Helper()
	var param struct{ priority int32 }
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, uintptr(policy), uintptr(unsafe.Pointer(&param))); e != 0 {
		t.Fatalf("sched_setscheduler(%d): %v", policy, e)
	}
}

// TestPreloadUnderAWrapper: a `python` that is a wrapper script running
// the interpreter as its child (no exec) still preloads. The workers'
// parent is the fork server the script started, one process below the
// one Caddy started; Caddy takes a forked worker's pid only from a child
// of the fork server, whose own pid it takes from its greeting only if it
// is at or below the process it started.
func TestPreloadUnderAWrapper(t *testing.T) {
	t.Parallel()
	wrapper := filepath.Join(t.TempDir(), "python-wrapper")
	writeFile(t, wrapper, "#!/bin/sh\n"+pythonPath()+" \"$@\"\n")
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi preloaded:application {
		dir {APPS}
		python %s
		workers 1
		preload
	}
}`, port, wrapper))
	r := preloadGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	if r.ImportedIn == 0 || r.Ppid != r.ImportedIn || r.Pid == r.ImportedIn {
		t.Errorf("the worker %d (parent %d) was not forked from the fork server %d", r.Pid, r.Ppid, r.ImportedIn)
	}
}

// TestPreloadRestartFinishesRequestsInFlight: a restart of a preload app
// retires the old workers gracefully, and their fork server, whose death
// kills them (their parent-death signal), stays until they have ended: the
// requests they are serving when the restart comes get their answers (the
// old fork server was stopped as soon as the replacements were ready, and
// those requests got 502); then it leaves, though the app started a thread
// at import that never ends (the interpreter's exit would wait for it).
func TestPreloadRestartFinishesRequestsInFlight(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	source, err := os.ReadFile(repoPath("tests", "apps", "preloaded.py"))
	if err != nil {
		t.Fatal(err)
	}
	source = append(source, "\nimport threading\nthreading.Thread(target=time.sleep, args=(3600,)).start()\n"...)
	writeFile(t, dir+"/preloaded.py", string(source))
	config, url := appSite(t, "wsgi", "preloaded:application", dir, "workers 2\n\t\tpreload")
	c := startCaddy(t, config)
	oldServer := c.mustApps()[0].ForkServerPid
	c.seenPID[oldServer] = true
	release := filepath.Join(dir, "release")
	answer := make(chan string, 1)
	go func() {
		resp, err := freshConnClient.Get(url + "/wait?for=" + release)
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		answer <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	waitFor(t, 20*time.Second, "the request running in a worker", func() bool {
		_, err := os.Stat(release + ".started")
		return err == nil
	})
	writeFile(t, dir+"/preloaded.py", string(source)+"\nVERSION = 2\n")
	if code, body := adminPost(t, c, "/hearth/apps/preloaded/restart", ""); code != 200 {
		t.Fatalf("restart: %d %s", code, body)
	}
	newServer := c.mustApps()[0].ForkServerPid
	c.seenPID[newServer] = true
	if newServer == oldServer {
		t.Fatal("the restart kept the old fork server")
	}
	if r := preloadGet(t, url); r.Version != 2 || r.ImportedIn != newServer {
		t.Errorf("after the restart: %+v, want version 2 from the fork server %d", r, newServer)
	}
	if waitGone(oldServer, time.Second) {
		t.Errorf("the old fork server %d left while its workers were serving requests", oldServer)
	}
	writeFile(t, release, "")
	select {
	case got := <-answer:
		if !strings.HasPrefix(got, "200 ") || !strings.Contains(got, `"version": 1`) {
			t.Errorf("the request in flight during the restart got %q, want 200 from the old code", got)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the request in flight during the restart got no answer")
	}
	if !waitGone(oldServer, 20*time.Second) {
		t.Errorf("the old fork server %d still runs after its workers ended", oldServer)
	}
}
