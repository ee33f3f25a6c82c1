package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deployCaddyfile is the home-server layout: a Django-style app on its own
// port with a host name, a second app on a bare port, a loopback-only
// service, and (when low) a site on port 80.
func deployCaddyfile(t *testing.T, busyPort int, low bool) string {
	t.Helper()
	extra := ""
	if low {
		extra = ":80 {\n\trespond ok\n}\n"
	}
	path := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, path, fmt.Sprintf(`{
	admin off
}
home.example.net:2929 {
	wsgi hello:application {
		name engwrite
		dir %[1]s
		python %[2]s
	}
}
:%[3]d {
	wsgi echo:application {
		dir %[1]s
		python %[2]s
	}
}
http://127.0.0.1:4040 {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process node server.js {
			dir %[4]s
		}
	}
}
%[5]s`, repoPath("tests", "apps"), pythonPath(), busyPort, repoPath("examples", "node"), extra))
	return path
}

func runHearth(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(caddyBinary(t), append([]string{"hearth"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("caddy hearth %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestPortsCommand(t *testing.T) {
	// something else already listens on the second app's port
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	out := runHearth(t, "ports", "--config", deployCaddyfile(t, port, false))
	for _, want := range []string{
		"external port 2929 TCP -> ", ":2929 TCP   (home.example.net)",
		"external port 2929 UDP", // HTTP/3 on the HTTPS site
		fmt.Sprintf("external port %d TCP", port),
		"sudo ufw allow 2929/tcp", fmt.Sprintf("sudo ufw allow %d/tcp", port), "sudo ufw allow 2929/udp",
		fmt.Sprintf("tcp dport { 2929, %d } accept", port),
		"Not forwarded (loopback only):\n  127.0.0.1:4040",
		fmt.Sprintf("port %d: ", port), "already listens on 127.0.0.1:" + fmt.Sprint(port),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ports output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "external port 4040") {
		t.Errorf("a loopback-only site is forwarded:\n%s", out)
	}
}

func TestSystemdCommand(t *testing.T) {
	dir := t.TempDir()
	high := runHearth(t, "systemd", "--config", deployCaddyfile(t, freePort(t), false))
	if strings.Contains(high, "AmbientCapabilities") || !strings.Contains(high, "CapabilityBoundingSet=\n") {
		t.Errorf("no port below 1024, yet a capability:\n%s", high)
	}
	unit := runHearth(t, "systemd", "--config", deployCaddyfile(t, freePort(t), true))
	for _, want := range []string{
		"Restart=always", "Environment=GODEBUG=http2xconnect=1", "NoNewPrivileges=true", "ProtectSystem=strict", "User=caddy",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"ReadWritePaths=/var/lib/caddy " + repoPath("examples", "node") + " " + repoPath("tests", "apps"),
		"ExecReload=" + caddyBinary(t) + " reload --config ", "Description=Caddy with Hearth (echo, engwrite, node)",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q:\n%s", want, unit)
		}
	}
	// systemd's own checker, when the machine has it
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the unit was checked by content only")
		return
	}
	path := filepath.Join(dir, "caddy.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "User=caddy\nGroup=caddy", "User=root\nGroup=root")), 0o644); err != nil {
		t.Fatal(err)
	}
	// it exits 0 even for lines it ignores: any output is a finding
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
