package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// homeserverEnv points examples/homeserver/Caddyfile at copies of the
// examples, free loopback ports, and offline DDNS sources.
func homeserverEnv(t *testing.T) (ports [3]int, dashboard int) {
	t.Helper()
	root := copyExample(t, "django")
	for _, name := range []string{"flask", "node"} {
		other := copyExample(t, name)
		if err := os.Rename(filepath.Join(other, name), filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range ports {
		ports[i] = freePort(t)
	}
	dashboard = freePort(t)
	for k, v := range map[string]string{
		"HEARTH_EXAMPLES": root, "HOME_BIND": "127.0.0.1", "HOME_HOST": "localhost",
		"ENGWRITE_PORT": fmt.Sprint(ports[0]), "GUESTBOOK_PORT": fmt.Sprint(ports[1]), "SERVICEC_PORT": fmt.Sprint(ports[2]),
		"DASHBOARD": fmt.Sprintf("127.0.0.1:%d", dashboard), "DDNS_TSIG_KEY": "a2V5a2V5a2V5a2V5", "DDNS_SERVER": "127.0.0.1:9",
		"DDNS_IP_SOURCE_1": "static 203.0.113.100", "DDNS_IP_SOURCE_2": "static 203.0.113.100",
		"BACKUP_DIR": filepath.Join(root, "backups"), "REDIS_PORT": fmt.Sprint(freePort(t)),
	} {
		t.Setenv(k, v)
	}
	return ports, dashboard
}

// homeserverConfig is the example's Caddyfile with the harness's admin
// address in its global options.
func homeserverConfig(t *testing.T) string {
	src, err := os.ReadFile(repoPath("examples", "homeserver", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	config := string(src)
	global := strings.Index(config, "\n{\n") + 1 // the global options block, after the comments
	return "{\n\tadmin {ADMIN}\n" + config[global+len("{\n"):]
}

func TestExampleHomeserver(t *testing.T) {
	ports, _ := homeserverEnv(t)
	config := homeserverConfig(t)
	c := startCaddy(t, config)
	// the three services, on their ports
	if resp, body := get(t, fmt.Sprintf("http://localhost:%d/", ports[0])); resp.StatusCode != 200 || !strings.Contains(body, "csrfmiddlewaretoken") {
		t.Errorf("engwrite: %d %s", resp.StatusCode, truncateString(body, 200))
	}
	if resp, _ := get(t, fmt.Sprintf("http://localhost:%d/static/admin/css/base.css", ports[0])); resp.StatusCode != 200 {
		t.Errorf("engwrite static: %d", resp.StatusCode)
	}
	if resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", ports[1])); resp.StatusCode != 200 || !strings.Contains(strings.ToLower(body), "guestbook") {
		t.Errorf("guestbook: %d %s", resp.StatusCode, truncateString(body, 200))
	}
	nodePid(t, fmt.Sprintf("http://127.0.0.1:%d", ports[2]))

	pools := func() map[string][]int {
		out := map[string][]int{}
		for _, a := range c.mustApps() {
			for _, w := range a.Workers {
				if w.State != "retiring" {
					out[a.Name] = append(out[a.Name], w.Pid)
				}
			}
			slices.Sort(out[a.Name])
		}
		return out
	}
	before := pools()
	if len(before["engwrite"]) != 2 || len(before["guestbook"]) != 2 || len(before["servicec"]) != 2 {
		t.Fatalf("pools: %v", before)
	}
	// killing the Node process: restarted
	syscall.Kill(before["servicec"][0], syscall.SIGKILL)
	waitFor(t, 20*time.Second, "the Node process restarted", func() bool {
		p := pools()["servicec"]
		return len(p) == 2 && !slices.Contains(p, before["servicec"][0])
	})
	// a reload that changes only the Node service keeps the Python pools
	// ({$…} values come from Caddy's own environment: change the text)
	if code, body := c.load(strings.Replace(config, "{$SERVICEC_WORKERS:2}", "3", 1)); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 20*time.Second, "three Node processes", func() bool { return len(pools()["servicec"]) == 3 })
	after := pools()
	for _, name := range []string{"engwrite", "guestbook"} {
		if !slices.Equal(after[name], before[name]) {
			t.Errorf("%s pids changed on a reload that changed only Node: %v → %v", name, before[name], after[name])
		}
	}
	// the status JSON and the CLI table tell the same
	resp, body := get(t, "http://"+c.admin+"/hearth/services")
	var services []struct {
		Name   string   `json:"name"`
		Listen []string `json:"listen"`
		DDNS   []string `json:"ddns"`
		Pools  []struct {
			Workers []json.RawMessage `json:"workers"`
		} `json:"pools"`
	}
	if err := json.Unmarshal([]byte(body), &services); err != nil || resp.StatusCode != 200 || len(services) != 3 {
		t.Fatalf("services: %d %s", resp.StatusCode, body)
	}
	out, err := exec.Command(caddyBinary(t), "hearth", "status", "--address", c.admin).CombinedOutput()
	if err != nil {
		t.Fatalf("caddy hearth status: %v\n%s", err, out)
	}
	sites, background, _ := strings.Cut(strings.TrimSpace(string(out)), "\n\n")
	lines := strings.Split(sites, "\n")
	if len(lines) != 4 || !strings.Contains(background, "BACKGROUND SERVICE") || !strings.Contains(background, "celery") || !strings.Contains(background, "redis") {
		t.Fatalf("status table:\n%s", out)
	}
	for i, s := range services {
		row := strings.Fields(lines[i+1])
		if row[0] != s.Name || row[1] != strings.Join(s.Listen, ",") || row[3] != "running" || row[4] != fmt.Sprint(len(s.Pools[0].Workers)) {
			t.Errorf("table row %q does not match the JSON %+v", lines[i+1], s)
		}
	}
	// the Celery worker (a service in engwrite's environment) runs a task
	// sent through the Redis service
	send := `from engwrite.celery import app; print("notes:", app.send_task("notes.tasks.count_notes").get(timeout=30))`
	if code, out := hearthCLI(t, c.dir, filepath.Join(c.dir, "data"), "exec", "engwrite", "--", "python", "-c", send); code != 0 || !strings.Contains(out, "notes: ") {
		t.Errorf("a task through the celery and redis services: exit %d\n%s", code, out)
	}
	// the nightly clearsessions job, run now, in engwrite's environment
	out, err = exec.Command(caddyBinary(t), "hearth", "jobs", "run", "clearsessions", "--address", c.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "clearsessions, run 1: ok (exit status 0)") {
		t.Errorf("caddy hearth jobs run clearsessions: %v\n%s", err, out)
	}
	out, _ = exec.Command(caddyBinary(t), "hearth", "jobs", "--address", c.admin).CombinedOutput()
	if !strings.Contains(string(out), "0 3 * * *") {
		t.Errorf("caddy hearth jobs:\n%s", out)
	}
	// a backup of engwrite's DATABASES["default"], now
	out, err = exec.Command(caddyBinary(t), "hearth", "backup", "engwrite", "--address", c.admin).CombinedOutput()
	copies, _ := filepath.Glob(filepath.Join(os.Getenv("BACKUP_DIR"), "engwrite-*.sqlite3"))
	if err != nil || !strings.Contains(string(out), "backup engwrite, run 1: ok") || len(copies) != 1 || !strings.Contains(string(out), "db.sqlite3") {
		t.Errorf("caddy hearth backup engwrite: %v, copies %v\n%s", err, copies, out)
	}
	if len(copies) == 1 {
		engwrite := pools()["engwrite"]
		out, err = exec.Command(caddyBinary(t), "hearth", "restore", "engwrite", copies[0], "--address", c.admin).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "restarted app engwrite's workers") {
			t.Errorf("caddy hearth restore engwrite: %v\n%s", err, out)
		}
		if now := pools()["engwrite"]; len(now) != 2 || slices.Contains(now, engwrite[0]) || slices.Contains(now, engwrite[1]) {
			t.Errorf("engwrite's workers after the restore: %v (before: %v)", now, engwrite)
		}
		if resp, _ := get(t, fmt.Sprintf("http://localhost:%d/", ports[0])); resp.StatusCode != 200 {
			t.Errorf("engwrite after the restore: %d", resp.StatusCode)
		}
		if log := c.log.String(); !strings.Contains(log, "paused: requests wait in the queue") || !strings.Contains(log, `"msg":"resumed"`) {
			t.Error("the restore did not hold engwrite's requests around it (no paused/resumed in the log)")
		}
	}
}

func TestHomeserverDeployHelpers(t *testing.T) {
	config := repoPath("examples", "homeserver", "Caddyfile")
	for _, k := range []string{"HOME_BIND", "ENGWRITE_PORT", "GUESTBOOK_PORT", "SERVICEC_PORT", "HEARTH_EXAMPLES", "BACKUP_DIR"} {
		t.Setenv(k, "") // restored after the test
		os.Unsetenv(k)  // the example's own defaults
	}
	ports := runHearth(t, "ports", "--config", config)
	for _, want := range []string{
		"external port 2929 TCP -> ", ":2929 TCP   (localhost)",
		"external port 3131 TCP -> ", ":3131 TCP   (any host name)",
		"external port 4040 TCP -> ", ":4040 TCP   (any host name)",
		"sudo ufw allow 2929/tcp\n  sudo ufw allow 3131/tcp\n  sudo ufw allow 4040/tcp",
		"sudo nft add rule inet filter input tcp dport { 2929, 3131, 4040 } accept",
	} {
		if !strings.Contains(ports, want) {
			t.Errorf("ports output lacks %q:\n%s", want, ports)
		}
	}
	if strings.Contains(ports, "UDP") {
		t.Errorf("plain-HTTP sites got UDP forwarding:\n%s", ports)
	}
	// the example's default directories are relative to where `caddy run`
	// runs; under systemd that is /: refused, saying to write them whole
	out, err := exec.Command(caddyBinary(t), "hearth", "systemd", "--config", config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `the config names the directory "examples/django" relative to Caddy's working directory`) {
		t.Errorf("caddy hearth systemd with relative app directories (%v):\n%s", err, out)
	}
	examples := repoPath("examples")
	t.Setenv("HEARTH_EXAMPLES", examples)
	unit := runHearth(t, "systemd", "--config", config)
	for _, want := range []string{
		"Description=Caddy with Hearth (engwrite, guestbook, servicec)",
		// the apps' directories, and the backup's (optional: it may not exist yet)
		"ReadWritePaths=" + filepath.Join(examples, "django") + " " + filepath.Join(examples, "flask") + " " + filepath.Join(examples, "node") + " -/var/backups/engwrite\n",
		"sudo install -d -o caddy -g caddy -m 0700 /var/backups/engwrite\n",
		"StateDirectory=caddy\n", // the data directory, /var/lib/caddy
		"CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_KILL\n", "ExecStart=" + caddyBinary(t) + " run --config " + config + "\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
}
