package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium runs Debian's Chromium headless with args, on loopback pages
// only (no background networking), and returns its standard output.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): `make test` installs the chromium package", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, tail(stderr.String(), 20))
	}
	return string(out)
}

func TestDashboardInChromium(t *testing.T) {
	dashPort, appPort := freePort(t), freePort(t)
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		dashboard 127.0.0.1:%d
	}
%s
}
http://home.example.test:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 2
		guard warn
		env FLASK_DEBUG 1
	}
}`, dashPort, dryRunDDNS("203.0.113.80"), appPort))
	url := fmt.Sprintf("http://127.0.0.1:%d/", dashPort)
	waitFor(t, 30*time.Second, "the dry-run DDNS record on the page", func() bool {
		_, body := get(t, url)
		return strings.Contains(body, "203.0.113.80")
	})
	pids := c.workerPIDs()
	using, all := c.cpuUse()
	dom := chromium(t, "--dump-dom", url)
	for _, want := range []string{
		fmt.Sprintf("Caddy's own code uses %d of %d CPUs", using, all),
		"<title>Hearth dashboard</title>", `id="service-hello"`, "home.example.test", "state-running",
		fmt.Sprint(pids[0]), fmt.Sprint(pids[1]), "HG-ENV-01", "DDNS keeps", "203.0.113.80", "refreshes every 5 seconds",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q:\n%s", want, truncateString(dom, 3000))
		}
	}
	if strings.Contains(dom, "http://") && strings.Contains(dom, "<script src") {
		t.Errorf("the page loads external assets")
	}
	// a reload keeps the dashboard's socket
	if code, body := c.load(strings.Replace(c.lastConfig, "workers 2", "workers 1", 1)); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, "the dashboard after a reload", func() bool {
		resp, body := get(t, url)
		return resp.StatusCode == 200 && strings.Count(body, "<tr><td>") >= 1 && len(c.workerPIDs()) == 1
	})
	// a screenshot for people to look at
	dir := repoPath("tests", "artifacts")
	os.MkdirAll(dir, 0o755)
	shot := filepath.Join(dir, "dashboard.png")
	os.Remove(shot)
	chromium(t, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", url)
	info, err := os.Stat(shot)
	if err != nil || info.Size() < 10<<10 {
		t.Errorf("no screenshot at %s: %v", shot, err)
	}
	// the dashboard listens on loopback only
	for _, l := range listeningOn(dashPort) {
		if !strings.HasPrefix(l, "127.0.0.1:") {
			t.Errorf("the dashboard listens on %s", l)
		}
	}
}

// listeningOn lists the local addresses listening on port, from /proc.
func listeningOn(port int) []string {
	var out []string
	data, _ := os.ReadFile("/proc/net/tcp")
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) {
			if strings.HasPrefix(f[1], "0100007F") {
				out = append(out, fmt.Sprintf("127.0.0.1:%d", port))
			} else {
				out = append(out, f[1])
			}
		}
	}
	return out
}
