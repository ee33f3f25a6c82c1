package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// nodeSite is the example's Caddyfile on port, with workers instances.
func nodeSite(t *testing.T, port, workers int) (string, string) {
	t.Helper()
	src, err := os.ReadFile(repoPath("examples", "node", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	config := strings.ReplaceAll(string(src), "http://127.0.0.1:4040", fmt.Sprintf("http://127.0.0.1:%d", port))
	config = strings.Replace(config, "workers 2", fmt.Sprintf("workers %d", workers), 1)
	t.Setenv("HEARTH_EXAMPLES", repoPath("examples"))
	return config, fmt.Sprintf("http://127.0.0.1:%d", port)
}

// processSite returns a Caddyfile whose one site, on a fresh loopback
// port, proxies to a process upstream running command with options, and
// the site's URL.
func processSite(t *testing.T, command, options string) (string, string) {
	port := freePort(t)
	return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process %s {
			%s
		}
	}
}`, port, command, options), fmt.Sprintf("http://127.0.0.1:%d", port)
}

func nodePid(t *testing.T, url string) int {
	t.Helper()
	resp, body := get(t, url+"/x")
	var r struct {
		Service string `json:"service"`
		Pid     int    `json:"pid"`
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &r) != nil || r.Service != "servicec" {
		t.Fatalf("node replied %d %q", resp.StatusCode, body)
	}
	return r.Pid
}

func TestProcessUpstreamNode(t *testing.T) {
	port := freePort(t)
	config, url := nodeSite(t, port, 2)
	c := startCaddy(t, config)
	pids := c.workerPIDs()
	if len(pids) != 2 {
		t.Fatalf("instances: %v", pids)
	}
	served := map[int]bool{}
	for i := 0; i < 20; i++ {
		served[nodePid(t, url)] = true
	}
	for p := range served {
		if !contains(pids, p) {
			t.Errorf("served by %d, not an instance %v", p, pids)
		}
	}
	// a killed instance is replaced
	syscall.Kill(pids[0], syscall.SIGKILL)
	waitFor(t, 20*time.Second, "a replacement instance", func() bool {
		p := c.workerPIDs()
		return len(p) == 2 && !contains(p, pids[0])
	})
	for i := 0; i < 10; i++ {
		nodePid(t, url)
	}
	// a restart replaces each instance once: no crash counted, no third
	// process left running unsupervised
	app := c.mustApps()[0]
	beforeRestart, crashes := c.workerPIDs(), app.Restarts["crash"]
	if code, out := hearthCLI(t, c.dir, t.TempDir(), "restart", app.Name, "--address", c.admin); code != 0 {
		t.Fatalf("restart: %d\n%s", code, out)
	}
	waitFor(t, 20*time.Second, "the instances before the restart gone", func() bool {
		for _, o := range beforeRestart {
			if supervisor.Alive(o) {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // the supervision loops have seen the old instances end
	app = c.mustApps()[0]
	if len(app.Workers) != 2 || app.Restarts["crash"] != crashes || app.Restarts["reload"] != 2 {
		t.Errorf("after a restart: %d instances, restarts %v (crashes before: %d)", len(app.Workers), app.Restarts, crashes)
	}
	nodes := 0
	for _, pid := range descendants(c.cmd.Process.Pid) {
		if strings.Contains(cmdline(pid), "server.js") {
			nodes++
		}
	}
	if nodes != 2 {
		t.Errorf("%d node processes under Caddy after a restart, want 2", nodes)
	}
	// an unchanged reload keeps the instances; a changed one replaces them
	before := sortedPIDs(c.workerPIDs())
	extra := fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n\trespond ok\n}\n", freePort(t))
	if code, body := c.load(config + extra); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if after := sortedPIDs(c.workerPIDs()); after != before {
		t.Errorf("instances changed on an unchanged reload: %s → %s", before, after)
	}
	old := c.workerPIDs()
	changed, _ := nodeSite(t, port, 3)
	if code, body := c.load(changed); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 20*time.Second, "three new instances, the old ones gone", func() bool {
		p := c.workerPIDs()
		for _, o := range old {
			if contains(p, o) || supervisor.Alive(o) {
				return false
			}
		}
		return len(p) == 3
	})
	nodePid(t, url)
}

func TestProcessUpstreamGunicorn(t *testing.T) {
	t.Parallel()
	config, url := processSite(t, "/usr/bin/gunicorn --bind 127.0.0.1:{port} --workers 1 hello:application", "dir {APPS}")
	c := startCaddy(t, config)
	resp, body := get(t, url+"/")
	if resp.StatusCode != 200 || body != "Hello, world!\n" {
		t.Errorf("gunicorn behind the process upstream: %d %q", resp.StatusCode, body)
	}
	if a := c.mustApps(); len(a) != 1 || a[0].Name != "gunicorn" || len(a[0].Workers) != 1 {
		t.Errorf("status: %+v", a)
	}
}

func TestProcessUpstreamThatNeverListens(t *testing.T) {
	t.Parallel()
	config, _ := processSite(t, "sleep 30", "start_timeout 1s")
	log := refused(t, config)
	if !strings.Contains(log, "was not ready on 127.0.0.1:") || !strings.Contains(log, "$PORT or {port}") {
		t.Errorf("the error does not explain:\n%s", tail(log, 5))
	}
}

func TestServicesAndStatusCommand(t *testing.T) {
	p1, p2 := freePort(t), freePort(t)
	t.Setenv("HEARTH_EXAMPLES", repoPath("examples"))
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
%s
}
http://home.example.test:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process node server.js {
			name servicec
			dir {EXAMPLES}/node
		}
	}
}`, dryRunDDNS("203.0.113.70"), p1, p2))
	resp, body := get(t, "http://"+c.admin+"/hearth/services")
	var list []struct {
		Name   string   `json:"name"`
		Listen []string `json:"listen"`
		Hosts  []string `json:"hosts"`
		DDNS   []string `json:"ddns"`
		Pools  []struct {
			State string `json:"state"`
		} `json:"pools"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /hearth/services: %d %s", resp.StatusCode, body)
	}
	if len(list) != 2 || list[0].Name != "hello" || list[1].Name != "servicec" {
		t.Fatalf("services: %s", body)
	}
	hello, node := list[0], list[1]
	if !strings.Contains(strings.Join(hello.Listen, ","), fmt.Sprint(p1)) || strings.Join(hello.Hosts, ",") != "home.example.test" ||
		strings.Join(hello.DDNS, ",") != "home.example.test" || hello.Pools[0].State != "running" {
		t.Errorf("hello service: %+v", hello)
	}
	if !strings.Contains(strings.Join(node.Listen, ","), fmt.Sprint(p2)) || len(node.DDNS) != 0 || node.Pools[0].State != "running" {
		t.Errorf("node service: %+v", node)
	}
	out, err := exec.Command(caddyBinary(t), "hearth", "status", "--address", c.admin).CombinedOutput()
	if err != nil {
		t.Fatalf("caddy hearth status: %v\n%s", err, out)
	}
	for _, want := range []string{"SERVICE", "hello", "servicec", "home.example.test", "running", fmt.Sprint(p2)} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

func TestProcessUpstreamUnixSocketAndFastCGI(t *testing.T) {
	t.Parallel()
	p1, p2 := freePort(t), freePort(t)
	c := startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process /usr/bin/gunicorn --bind unix:{socket} --workers 1 hello:application {
			dir {APPS}
			socket
		}
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process {PYTHON} fcgi_responder.py {
			name fcgi
			dir {APPS}
		}
		transport fastcgi
	}
}`, p1, p2))
	if resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", p1)); resp.StatusCode != 200 || body != "Hello, world!\n" {
		t.Errorf("gunicorn on a unix socket: %d %q", resp.StatusCode, body)
	}
	if resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/index.php", p2)); resp.StatusCode != 200 || !strings.HasPrefix(body, "fastcgi GET /index.php") {
		t.Errorf("a FastCGI responder: %d %q", resp.StatusCode, body)
	}
	for _, a := range c.mustApps() {
		if len(a.Workers) != 1 {
			t.Errorf("%s: %d instances", a.Name, len(a.Workers))
		}
	}
}

// TestProcessUpstreamPortTakenByAnotherAccount: Hearth picks a free port,
// then the instance binds it; another local account that binds it first
// (it reads the port in the instance's command line) would have received
// the site's requests, cookies and passwords, the readiness check happy to
// connect to it. The instance is not ready while another account's socket
// holds its port, and the error names it.
func TestProcessUpstreamPortTakenByAnotherAccount(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("a listener of another account needs root to start")
	}
	const marker = "sleep 2; exec"
	config, _ := processSite(t, fmt.Sprintf(`/bin/sh -c "%s %s -m http.server $0 --bind 127.0.0.1" {port}`, marker, pythonPath()), "start_timeout 10s")
	squatted := make(chan int, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// find the instance's port in its command line, and take it as nobody
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			select {
			case <-stop:
				return
			default:
			}
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				b, _ := os.ReadFile(p)
				args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
				if len(args) != 4 || args[0] != "/bin/sh" || !strings.HasPrefix(args[2], marker) {
					continue
				}
				squatter := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", pythonPath(), "-c",
					"import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\ntime.sleep(60)", args[3])
				if err := squatter.Start(); err != nil {
					t.Errorf("starting the squatter: %v", err)
					return
				}
				t.Cleanup(func() { _ = squatter.Process.Kill(); _ = squatter.Wait() })
				squatted <- squatter.Process.Pid
				return
			}
		}
	}()
	log := refused(t, config)
	select {
	case <-squatted:
	default:
		t.Fatal("the instance's port was never found to take")
	}
	if !strings.Contains(log, "of uid 65534 holds 127.0.0.1:") || !strings.Contains(log, "another account took it first") {
		t.Errorf("the error does not say who took the port:\n%s", tail(log, 6))
	}
}

// TestProcessUpstreamExitTakesItsChildren: when an instance's process
// exits, what it started (npm's node, sh's background jobs) goes with it,
// instead of keeping its port and memory until Caddy stops; and an
// instance that listens on every interface, where the network reaches it
// without Caddy, is reported.
func TestProcessUpstreamExitTakesItsChildren(t *testing.T) {
	t.Parallel()
	config, url := processSite(t, fmt.Sprintf(`/bin/sh -c "sleep 300 & exec %s -m http.server $0 --bind 0.0.0.0" {port}`, pythonPath()), "")
	c := startCaddy(t, config)
	if resp, _ := get(t, url+"/"); resp.StatusCode != 200 {
		t.Fatalf("the instance answered %d", resp.StatusCode)
	}
	apps := c.mustApps()
	if len(apps) != 1 || len(apps[0].Workers) != 1 {
		t.Fatalf("want one process upstream with one instance: %+v", apps)
	}
	leader := apps[0].Workers[0].Pid
	var child int
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(sleep") {
			continue
		}
		if f := strings.Fields(s[i+1:]); len(f) > 2 && f[2] == fmt.Sprint(leader) {
			fmt.Sscan(strings.Fields(s)[0], &child)
		}
	}
	if child == 0 {
		t.Fatalf("the instance's background sleep was not found in its process group %d", leader)
	}
	if err := syscall.Kill(leader, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(child, 10*time.Second) {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("the crashed instance's child %d (%s) outlived it", child, cmdline(child))
	}
	waitFor(t, 10*time.Second, "an instance on 0.0.0.0 reported in the log", func() bool {
		return strings.Contains(c.log.String(), "the process listens on every interface")
	})
}

// TestProcessUpstreamInASessionOfItsOwn: an instance whose listener is in
// another process group or session of its account (setsid, sudo, a
// container's proxy) is ready once it listens: only another account's
// socket on its port stops it.
func TestProcessUpstreamInASessionOfItsOwn(t *testing.T) {
	t.Parallel()
	config, url := processSite(t, fmt.Sprintf("/usr/bin/setsid --wait %s -m http.server {port} --bind 127.0.0.1", pythonPath()), "start_timeout 15s")
	startCaddy(t, config)
	if resp, _ := get(t, url+"/"); resp.StatusCode != 200 {
		t.Errorf("the instance in a session of its own answered %d", resp.StatusCode)
	}
}
