package tests

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// load sends requests from several goroutines until stopped and counts
// what came back.
type load struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	ok       atomic.Int64
	retried  atomic.Int64
	mu       sync.Mutex
	failures []string
}

func startLoad(url string, clients int) *load {
	l := &load{stop: make(chan struct{})}
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err != nil && connectionClosed(err) {
					// an idle keep-alive connection closed by the server
					// just as the request went out (Caddy's old server on a
					// reload): HTTP clients retry such a GET once (RFC 9112
					// §9.3.1), as browsers do; the request never reached
					// the app
					l.retried.Add(1)
					resp, err = client.Get(url)
				}
				if err != nil {
					l.fail(err.Error())
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					l.fail(fmt.Sprintf("status %d %v %q", resp.StatusCode, err, body))
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

// connectionClosed reports a connection the server closed under the
// request (reset, or closed before any response).
func connectionClosed(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "server closed idle connection")
}

func (l *load) fail(what string) {
	l.mu.Lock()
	l.failures = append(l.failures, what)
	l.mu.Unlock()
}

// finish stops the load and fails the test if any request failed or too
// few succeeded.
func (l *load) finish(t *testing.T, minOK int64) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if len(l.failures) > 0 {
		t.Errorf("%d requests failed (of %d), first: %s", len(l.failures), int64(len(l.failures))+l.ok.Load(), l.failures[0])
	}
	if l.ok.Load() < minOK {
		t.Errorf("only %d requests succeeded, want at least %d", l.ok.Load(), minOK)
	}
}

// waitServed waits until the load has completed n more requests.
func (l *load) waitServed(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	waitFor(t, 30*time.Second, fmt.Sprintf("%d more requests", n), func() bool { return l.ok.Load() >= target })
}

// underLoad starts caddy with a site serving app with options, and load
// from clients goroutines on path. It returns caddy, the workers in
// service before the load began, and the load.
func underLoad(t *testing.T, app, options, path string, clients int) (*caddyProc, []int, *load) {
	t.Helper()
	config, url := site(t, app, options)
	c := startCaddy(t, config)
	first := c.workerPIDs()
	return c, first, startLoad(url+path, clients)
}

func sortedPIDs(pids []int) string {
	sort.Ints(pids)
	return fmt.Sprint(pids)
}

func TestWorkerKilledUnderLoad(t *testing.T) {
	t.Parallel()
	c, before, l := underLoad(t, "fail:application", "workers 2", "/slow?0.01", 8)
	l.waitServed(t, 50)
	victim := before[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a replacement worker", func() bool {
		pids := c.workerPIDs()
		return len(pids) == 2 && pids[0] != victim && pids[1] != victim
	})
	l.waitServed(t, 50)
	l.finish(t, 100)
	apps := c.mustApps()
	if apps[0].Restarts["crash"] != 1 {
		t.Errorf("restarts: %v", apps[0].Restarts)
	}
	waitFor(t, 10*time.Second, "the crash in the log", func() bool {
		return strings.Contains(c.log.String(), "worker exited; replacing it")
	})
}

func TestCrashLoopBacksOff(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// an app that imports fine at first, then fails to import once the
	// marker file is gone: every replacement fails until it comes back
	writeFile(t, dir+"/flaky.py", `
import os
if not os.path.exists(os.path.join(os.path.dirname(__file__), 'ok')):
    raise RuntimeError('flaky cannot start: marker missing')

def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
`)
	writeFile(t, dir+"/ok", "")
	port := freePort(t)
	c := startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi flaky:application {
		dir %s
		python {PYTHON}
		workers 1
	}
}`, port, dir))
	pid := c.workerPIDs()[0]
	removeFile(t, dir+"/ok")
	syscall.Kill(pid, syscall.SIGKILL)
	sawBackoff := false
	waitFor(t, 20*time.Second, "three consecutive failures", func() bool {
		a := c.mustApps()[0]
		sawBackoff = sawBackoff || a.BackoffUntil != nil
		return a.ConsecutiveFailures >= 3 && strings.Contains(a.LastError, "flaky cannot start")
	})
	if !sawBackoff {
		t.Errorf("the backoff never showed in status (backoff_until)")
	}
	// the delays double: 100ms, 200ms, 400ms … (not a hot loop)
	starts := strings.Count(c.log.String(), "replacement worker failed to start")
	if starts > 8 {
		t.Errorf("%d failed starts in a short time: no backoff", starts)
	}
	writeFile(t, dir+"/ok", "")
	waitFor(t, 30*time.Second, "recovery once the app is fixed", func() bool {
		a := c.mustApps()[0]
		return len(a.Workers) == 1 && a.ConsecutiveFailures == 0
	})
	resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	if resp.StatusCode != 200 || body != "ok" {
		t.Errorf("after recovery: %d %q", resp.StatusCode, body)
	}
}

func TestReloadUnchangedKeepsWorkers(t *testing.T) {
	t.Parallel()
	config, url := site(t, "fail:application", "workers 2")
	c := startCaddy(t, config)
	before := sortedPIDs(c.workerPIDs())
	l := startLoad(url+"/slow?0.01", 8)
	l.waitServed(t, 30)
	for i := 0; i < 3; i++ {
		// the same pool in a different config (an extra site): must be kept
		extra := fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n\trespond \"extra %d\"\n}\n", freePort(t), i)
		if code, body := c.load(config + extra); code != 200 {
			t.Fatalf("reload: %d %s", code, body)
		}
		l.waitServed(t, 30)
	}
	l.finish(t, 100)
	if after := sortedPIDs(c.workerPIDs()); after != before {
		t.Errorf("workers changed across unchanged reloads: %s → %s", before, after)
	}
	// the log says what the reload kept, and how changed code is loaded
	if n := strings.Count(c.log.String(), "app kept running: its block did not change"); n != 3 || !strings.Contains(c.log.String(), "caddy hearth restart fail") {
		t.Errorf("%d reloads said they kept the app (want 3, with the restart command):\n%s", n, tail(c.log.String(), 10))
	}
}

func TestReloadChangedReplacesWorkers(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	config := func(workers int) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi fail:application {
		dir {APPS}
		python {PYTHON}
		workers %d
	}
}`, port, workers)
	}
	c := startCaddy(t, config(2))
	before := c.workerPIDs()
	l := startLoad(fmt.Sprintf("http://127.0.0.1:%d/slow?0.02", port), 8)
	l.waitServed(t, 30)
	if code, body := c.load(config(3)); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	l.waitServed(t, 30)
	if code, body := c.load(config(2)); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	l.waitServed(t, 30)
	l.finish(t, 90)
	after := c.workerPIDs()
	if len(after) != 2 {
		t.Fatalf("workers after reloads: %v", after)
	}
	for _, p := range before {
		if p == after[0] || p == after[1] {
			t.Errorf("worker %d of the old pool still serves after a changed reload", p)
		}
		if !waitGone(p, 10*time.Second) {
			t.Errorf("old worker %d still running", p)
		}
	}
}

func TestReloadWithBrokenAppKeepsOldConfig(t *testing.T) {
	t.Parallel()
	config, url := site(t, "hello:application", "workers 1")
	c := startCaddy(t, config)
	before := c.workerPIDs()
	broken, _ := site(t, "broken_import:application", "workers 1")
	code, body := c.load(broken)
	if code == 200 {
		t.Fatalf("a config with an unimportable app was accepted")
	}
	if !strings.Contains(body, "JSONDecodeError") || !strings.Contains(body, "Traceback") {
		t.Errorf("the load error lacks the traceback: %s", body)
	}
	resp, got := get(t, url+"/")
	if resp.StatusCode != 200 || got != "Hello, world!\n" {
		t.Errorf("old config not serving: %d %q", resp.StatusCode, got)
	}
	if after := c.workerPIDs(); sortedPIDs(after) != sortedPIDs(before) {
		t.Errorf("workers changed: %v → %v", before, after)
	}
}

func TestCaddySIGKILLLeavesNoWorkers(t *testing.T) {
	t.Parallel()
	config, url := site(t, "fail:application", "workers 3\n\t\tthreads 2")
	c := startCaddy(t, config)
	pids := c.workerPIDs()
	if len(pids) != 3 {
		t.Fatalf("workers: %v", pids)
	}
	// one of them busy in a request when caddy dies
	go http.Get(url + "/slow?30")
	waitFor(t, 10*time.Second, "a busy worker", func() bool {
		for _, w := range c.mustApps()[0].Workers {
			if w.State == "busy" {
				return true
			}
		}
		return false
	})
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.waitExit(10 * time.Second)
	for _, pid := range pids {
		if !waitGone(pid, 5*time.Second) {
			t.Errorf("worker %d survived caddy's SIGKILL", pid)
		}
	}
}

func TestGracefulStopFinishesInFlight(t *testing.T) {
	t.Parallel()
	config, url := site(t, "fail:application", "workers 1")
	c := startCaddy(t, config)
	done := make(chan string, 1)
	go func() {
		resp, err := http.Get(url + "/slow?1")
		if err != nil {
			done <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	waitFor(t, 5*time.Second, "the request to reach the worker", func() bool {
		a := c.mustApps()
		return len(a) == 1 && len(a[0].Workers) == 1 && a[0].Workers[0].State == "busy"
	})
	c.cmd.Process.Signal(syscall.SIGTERM)
	got := <-done
	if !strings.HasPrefix(got, "200 hello from") {
		t.Errorf("in-flight request during shutdown: %s", got)
	}
	if code := c.waitExit(20 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
