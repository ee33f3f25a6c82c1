package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// servicesCaddyfile is a Django app whose view enqueues a Celery task, a
// real redis-server as a service, and a real Celery worker as a service
// in the app's environment; extra is added to the redis block.
func servicesCaddyfile(redisPort, webPort int, extraRedis, extraSite string) string {
	return strings.NewReplacer("{REDIS}", fmt.Sprint(redisPort), "{WEB}", fmt.Sprint(webPort), "{EXTRA_REDIS}", extraRedis, "{EXTRA_SITE}", extraSite).Replace(`{
	admin {ADMIN}
	hearth {
		service redis {
			command redis-server --port {REDIS} --bind 127.0.0.1 --save "" --appendonly no
			ready tcp 127.0.0.1:{REDIS}
			stop_timeout 5s
			{EXTRA_REDIS}
		}
		service celery {
			app djcelery
			command python -m celery -A djcelery:celery_app worker --concurrency 1 --loglevel WARNING
			ready command python -m celery -A djcelery:celery_app inspect ping --timeout 2
			start_timeout 50s
			stop_timeout 10s
		}
	}
}
:{WEB} {
	wsgi djcelery:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		settings auto
		guard off
		env REDIS_URL redis://127.0.0.1:{REDIS}/0
		env SERVICE_MARKER in-app-env
	}
}
{EXTRA_SITE}
`)
}

// redisPing asks the Redis server on port for PONG.
func redisPing(port int) error {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	reply := make([]byte, 7)
	n, err := io.ReadAtLeast(conn, reply, 7)
	if err != nil {
		return err
	}
	if string(reply[:n]) != "+PONG\r\n" {
		return fmt.Errorf("redis answered %q", reply[:n])
	}
	return nil
}

// taskResult is what the app's view answers: the Celery task's result.
type taskResult struct {
	Sum       int    `json:"sum"`
	KeyLength int    `json:"key_length"`
	Marker    string `json:"marker"`
	Pid       int    `json:"pid"`
}

// enqueue asks the app to run add(x, y) on the Celery worker.
func enqueue(web int, x, y int) (taskResult, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/add?x=%d&y=%d", web, x, y))
	if err != nil {
		return taskResult{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return taskResult{}, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var r taskResult
	err = json.Unmarshal(body, &r)
	return r, err
}

// servicePID is the pid of a service's one process, once it runs (0
// before).
func servicePID(c *caddyProc, name string) int {
	apps, err := c.apps()
	if err != nil {
		return 0
	}
	for _, a := range apps {
		if a.Name == name && a.Kind == "service" && a.State == "running" && len(a.Workers) == 1 {
			return a.Workers[0].Pid
		}
	}
	return 0
}

// TestServicesCeleryAndRedis: a Django view enqueues a task that a real
// Celery worker, run by Hearth in the app's environment (settings auto's
// key included), processes through a real redis-server, also run by
// Hearth. SIGKILL of either is survived; a reload that leaves them
// unchanged keeps both processes; a changed redis, which cannot run
// beside its old self on the same port, replaces it; a restart by name
// replaces the worker; nothing is left behind.
func TestServicesCeleryAndRedis(t *testing.T) {
	t.Parallel()
	redis, web := freePort(t), freePort(t)
	c := startCaddy(t, servicesCaddyfile(redis, web, "", ""))
	r, err := enqueue(web, 2, 3)
	if err != nil {
		t.Fatalf("the task did not run: %v\n%s", err, tail(c.log.String(), 40))
	}
	if r.Sum != 5 || r.KeyLength < 32 || r.Marker != "in-app-env" {
		t.Fatalf("the worker's answer %+v: want sum 5, the app's settings auto key and its env", r)
	}
	redisPID, celeryPID := servicePID(c, "redis"), servicePID(c, "celery")
	if redisPID == 0 || celeryPID == 0 || !strings.Contains(cmdline(redisPID), "redis-server") || !strings.Contains(cmdline(celeryPID), "celery") {
		t.Fatalf("services' pids %d (%s), %d (%s)", redisPID, cmdline(redisPID), celeryPID, cmdline(celeryPID))
	}

	// SIGKILL of each: replaced, and the queue works again
	for _, name := range []string{"redis", "celery"} {
		old := servicePID(c, name)
		if old <= 0 {
			t.Fatalf("no pid for service %s", name)
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 90*time.Second, name+" replaced after SIGKILL", func() bool {
			p := servicePID(c, name)
			return p != 0 && p != old
		})
		waitFor(t, 60*time.Second, "the task queue working after "+name+" was killed", func() bool {
			r, err := enqueue(web, 4, 5)
			return err == nil && r.Sum == 9
		})
	}
	for _, a := range c.mustApps() {
		if a.Kind == "service" && a.Restarts["crash"] != 1 {
			t.Errorf("service %s counts %d crashes, want 1", a.Name, a.Restarts["crash"])
		}
	}

	// a reload that changes something else keeps both services' processes
	redisPID, celeryPID = servicePID(c, "redis"), servicePID(c, "celery")
	other := freePort(t)
	if code, body := c.load(servicesCaddyfile(redis, web, "", fmt.Sprintf(":%d {\n\trespond ok\n}", other))); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the new site", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", other))
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	if p := servicePID(c, "redis"); p != redisPID {
		t.Errorf("an unchanged redis service was replaced by a reload: pid %d → %d", redisPID, p)
	}
	if p := servicePID(c, "celery"); p != celeryPID {
		t.Errorf("an unchanged celery service was replaced by a reload: pid %d → %d", celeryPID, p)
	}

	// a changed redis cannot start beside the old one (its port): the old
	// one is stopped first, and the new one serves
	if code, body := c.load(servicesCaddyfile(redis, web, "stop_timeout 6s", "")); code != 200 {
		t.Fatalf("reload with a changed redis: %d %s\n%s", code, body, tail(c.log.String(), 30))
	}
	if p := servicePID(c, "redis"); p == redisPID || p == 0 || supervisor.Alive(redisPID) {
		t.Errorf("the changed redis service was not replaced: pid %d → %d (old alive: %v)", redisPID, p, supervisor.Alive(redisPID))
	}
	if !strings.Contains(c.log.String(), "could not start beside its previous version") {
		t.Error("the log does not say why the old redis was stopped first")
	}
	waitFor(t, 60*time.Second, "the task queue working with the new redis", func() bool {
		r, err := enqueue(web, 1, 1)
		return err == nil && r.Sum == 2
	})

	// a restart by name replaces the worker, the new one up first
	celeryPID = servicePID(c, "celery")
	if code, out := hearthCLI(t, c.dir, t.TempDir(), "restart", "celery", "--address", c.admin); code != 0 {
		t.Fatalf("caddy hearth restart celery: %d %s", code, out)
	}
	if p := servicePID(c, "celery"); p == celeryPID || p == 0 {
		t.Errorf("restart kept the celery worker %d", celeryPID)
	}
	waitFor(t, 15*time.Second, "the old celery worker gone", func() bool { return !supervisor.Alive(celeryPID) })
	if r, err := enqueue(web, 20, 22); err != nil || r.Sum != 42 {
		t.Errorf("after the restart: %+v %v", r, err)
	}

	// a restart of redis stops it first (its successor needs the port)
	redisPID = servicePID(c, "redis")
	if code, out := hearthCLI(t, c.dir, t.TempDir(), "restart", "redis", "--address", c.admin); code != 0 {
		t.Fatalf("caddy hearth restart redis: %d %s", code, out)
	}
	if p := servicePID(c, "redis"); p == redisPID || p == 0 || supervisor.Alive(redisPID) {
		t.Errorf("restart kept redis %d (now %d)", redisPID, p)
	}
	waitFor(t, 60*time.Second, "the task queue working after the redis restart", func() bool {
		r, err := enqueue(web, 3, 4)
		return err == nil && r.Sum == 7
	})

	// status, metrics
	code, out := hearthCLI(t, c.dir, t.TempDir(), "status", "--address", c.admin)
	if code != 0 || !strings.Contains(out, "BACKGROUND SERVICE") || !strings.Contains(out, "celery") || !strings.Contains(out, "djcelery") {
		t.Errorf("caddy hearth status: %d\n%s", code, out)
	}
	m := scrape(t, c)
	if m[`hearth_service_up{service="redis"}`] != 1 || m[`hearth_service_processes{service="celery"}`] != 1 ||
		m[`hearth_service_restarts_total{reason="reload",service="redis"}`] != 1 || m[`hearth_service_restarts_total{reason="crash",service="celery"}`] != 1 {
		t.Errorf("service metrics: %v", m)
	}

	// a reload that changes redis again but is refused (a service after
	// it cannot start): the redis this config had to stop for the new one
	// is started again (last: the queue may take Celery's reconnect
	// backoff to come back after its broker went away twice in a row)
	redisPID = servicePID(c, "redis")
	broken := fmt.Sprintf("stop_timeout 7s\n\t\t}\n\t\tservice broken {\n\t\t\tcommand /bin/false\n\t\t\tready tcp 127.0.0.1:%d\n\t\t\tstart_timeout 3s", freePort(t))
	if code, body := c.load(servicesCaddyfile(redis, web, broken, "")); code == 200 {
		t.Fatalf("a config with a service that cannot start was accepted: %s", body)
	}
	if strings.Count(c.log.String(), "could not start beside its previous version") < 2 ||
		!strings.Contains(c.log.String(), "starting the previous version again") {
		t.Fatalf("the refused reload did not replace redis and then start the previous one again:\n%s", tail(c.log.String(), 30))
	}
	waitFor(t, 60*time.Second, "the previous redis running again after the refused reload", func() bool {
		p := servicePID(c, "redis")
		return p != 0 && p != redisPID && supervisor.Alive(p) && strings.Contains(cmdline(p), "redis-server")
	})
	if supervisor.Alive(redisPID) {
		t.Errorf("the redis process from before the refused reload (pid %d) still runs beside the revived one", redisPID)
	}
	waitFor(t, 30*time.Second, "the revived redis answering PING", func() bool {
		return redisPing(redis) == nil
	})
}

// TestServicesStopInReverseOrder: at Caddy's exit, services stop in the
// reverse of the order the config declares them, as systemd stops units:
// one declared after another may need it until it has stopped (Celery,
// finishing its tasks, needs Redis). Real processes, a real SIGTERM.
func TestServicesStopInReverseOrder(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	out := filepath.Join(t.TempDir(), "seen")
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		service base {
			command {PYTHON} {APPS}/stoporder.py listen %[1]d
			ready tcp 127.0.0.1:%[1]d
			stop_timeout 5s
		}
		service user {
			command {PYTHON} {APPS}/stoporder.py needs %[1]d %[2]s %[3]d
			ready tcp 127.0.0.1:%[3]d
			stop_timeout 5s
		}
	}
}
`, port, out, freePort(t)))
	waitFor(t, 30*time.Second, "both services", func() bool { return servicePID(c, "base") != 0 && servicePID(c, "user") != 0 })
	c.stop()
	seen, err := os.ReadFile(out)
	if err != nil || string(seen) != "up" {
		t.Errorf("while the service declared second stopped, the first one was %q (%v), want up:\n%s", seen, err, tail(c.log.String(), 10))
	}
}
