package tests

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The isolation tests start Caddy the way the unit of `caddy hearth
// systemd` starts it: the unit is generated, then its User=, Environment=,
// EnvironmentFile=, capabilities, NoNewPrivileges=, UMask=,
// RuntimeDirectory= (/run/caddy, mode 0700, on a private /run) and
// ProtectProc=/ProcSubset= (/proc remounted hidepid=invisible,subset=pid)
// are applied with unshare and setpriv. The file-system protections
// (ProtectSystem=, PrivateTmp=, ReadWritePaths=) and the system call filter
// are left to systemd-analyze.

// caddyUser and appsUser are the accounts of these tests: Caddy's (a
// system account that exists on Debian) and the apps'.
const caddyUser, appsUser = "www-data", "nobody"

// unitCaddy is a Caddy started as its unit starts it.
type unitCaddy struct {
	t      *testing.T
	cmd    *exec.Cmd
	log    *lockedBuffer
	exited chan struct{}
}

// needUnitRun skips unless the test can switch users and namespaces.
func needUnitRun(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running Caddy as its unit does needs root (setpriv, unshare)")
	}
	for _, tool := range []string{"setpriv", "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	for _, name := range []string{caddyUser, appsUser} {
		if _, err := user.Lookup(name); err != nil {
			t.Skipf("no user %s: %v", name, err)
		}
	}
}

// openToAll makes dir and its parents up to the temp directory traversable
// by every user (t.TempDir makes them 0700).
func openToAll(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// chownTree gives a tree to a user and the primary group of another.
func chownTree(t *testing.T, root, name, groupOf string) {
	t.Helper()
	u, _ := user.Lookup(name)
	g, _ := user.Lookup(groupOf)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	err := filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// unitFor writes the config and returns the unit `caddy hearth systemd`
// prints for it, with Caddy's data in dataDir and credentials in envFile.
func unitFor(t *testing.T, config, dataDir, envFile string) string {
	t.Helper()
	return runHearth(t, "systemd", "--config", config, "--adapter", "caddyfile", "--user", caddyUser, "--apps-user", appsUser,
		"--binary", caddyBinary(t), "--data-dir", dataDir, "--env-file", envFile)
}

// unitSettings reads a unit's [Service] settings (repeated keys in order).
func unitSettings(unit string) map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = append(out[k], v)
		}
	}
	return out
}

// unitEnvironment is what Environment= and EnvironmentFile= give Caddy.
func unitEnvironment(t *testing.T, s map[string][]string) []string {
	t.Helper()
	var env []string
	for _, v := range s["Environment"] {
		if strings.HasPrefix(v, `"`) {
			env = append(env, strings.Trim(v, `"`))
			continue
		}
		env = append(env, strings.Fields(v)...)
	}
	for _, file := range s["EnvironmentFile"] {
		f, err := os.Open(strings.TrimPrefix(file, "-"))
		if err != nil {
			if strings.HasPrefix(file, "-") {
				continue
			}
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
				env = append(env, line)
			}
		}
		f.Close()
	}
	return env
}

// startAsUnit generates the unit for caddyfile and starts Caddy as it
// does; envFile lines are the unit's EnvironmentFile (mode 0600).
func startAsUnit(t *testing.T, caddyfile string, envFile map[string]string) (*unitCaddy, string) {
	t.Helper()
	needUnitRun(t)
	dir := t.TempDir()
	openToAll(t, dir)
	config := filepath.Join(dir, "Caddyfile")
	writeFile(t, config, caddyfile)
	data := filepath.Join(dir, "lib", "caddy")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(data), 0o755)
	chownTree(t, data, caddyUser, caddyUser)
	envPath := filepath.Join(dir, "caddy.env")
	var lines []string
	for k, v := range envFile {
		lines = append(lines, k+"="+v)
	}
	if err := os.WriteFile(envPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unit := unitFor(t, config, data, envPath)
	s := unitSettings(unit)
	u, _ := user.Lookup(s["User"][0])
	caps := strings.ToLower(strings.ReplaceAll(strings.Join(s["AmbientCapabilities"], " "), "CAP_", ""))
	capList := "+" + strings.Join(strings.Fields(caps), ",+")
	bounding := strings.ToLower(strings.ReplaceAll(strings.Join(s["CapabilityBoundingSet"], " "), "CAP_", ""))
	setpriv := []string{"setpriv", "--reuid=" + u.Uid, "--regid=" + u.Gid, "--clear-groups",
		"--inh-caps=" + capList, "--ambient-caps=" + capList, "--bounding-set=-all,+" + strings.Join(strings.Fields(bounding), ",+")}
	if s["NoNewPrivileges"][0] == "true" {
		setpriv = append(setpriv, "--no-new-privs")
	}
	proc := "hidepid=" + s["ProtectProc"][0] + ",subset=" + s["ProcSubset"][0]
	exec0 := strings.Fields(s["ExecStart"][0])
	script := fmt.Sprintf(`set -e
mount -t proc -o %s proc /proc
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m %s /run/%s
chown %s:%s /run/%s
umask %s
exec "$@"`, proc, s["RuntimeDirectoryMode"][0], s["RuntimeDirectory"][0], u.Uid, u.Gid, s["RuntimeDirectory"][0], s["UMask"][0])
	args := append([]string{"-m", "--propagation", "private", "sh", "-c", script, "sh"}, setpriv...)
	args = append(args, "--", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin")
	args = append(args, unitEnvironment(t, s)...)
	args = append(args, exec0...)
	c := &unitCaddy{t: t, log: &lockedBuffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command("unshare", args...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.stop)
	waitFor(t, 30*time.Second, "the admin socket", func() bool {
		select {
		case <-c.exited:
			t.Fatalf("caddy exited:\n%s", c.log.String())
		default:
		}
		_, err := os.Stat(c.socket())
		return err == nil
	})
	return c, unit
}

// socket is the admin socket, seen from outside Caddy's mount namespace.
func (c *unitCaddy) socket() string {
	return fmt.Sprintf("/proc/%d/root/run/caddy/admin.sock", c.cmd.Process.Pid)
}

// admin sends a request to the admin socket.
func (c *unitCaddy) admin(method, path string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest(method, "http://127.0.0.1"+path, nil)
	return c.adminDo(req)
}

// load posts a Caddyfile to the admin socket, as `caddy reload` does.
func (c *unitCaddy) load(caddyfile string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/load", strings.NewReader(caddyfile))
	req.Header.Set("Content-Type", "text/caddyfile")
	return c.adminDo(req)
}

func (c *unitCaddy) adminDo(req *http.Request) (int, string) {
	c.t.Helper()
	code, body, err := c.tryAdmin(req)
	if err != nil {
		c.t.Fatalf("%s %s on the admin socket: %v", req.Method, req.URL.Path, err)
	}
	return code, body
}

// tryAdmin is adminDo returning its error: while Caddy starts, its admin
// socket may exist before it accepts connections.
func (c *unitCaddy) tryAdmin(req *http.Request) (int, string, error) {
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", c.socket())
		}}}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// waitRunning waits until every app's pool runs.
func (c *unitCaddy) waitRunning(apps int) []appStatus {
	c.t.Helper()
	var status struct {
		Apps []appStatus `json:"apps"`
	}
	waitFor(c.t, 90*time.Second, "the apps to run", func() bool {
		select {
		case <-c.exited:
			c.t.Fatalf("caddy exited:\n%s", c.log.String())
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/hearth/apps", nil)
		code, body, err := c.tryAdmin(req) // (asked again until it accepts)
		// and Caddy has started all its apps: the HTTP servers listen (the
		// pools may run a moment before, while the hearth app schedules jobs)
		return err == nil && code == 200 && json.Unmarshal([]byte(body), &status) == nil && len(status.Apps) == apps && allRunning(status.Apps) &&
			strings.Contains(c.log.String(), "serving initial configuration")
	})
	return status.Apps
}

// inCaddyNamespace runs a command in Caddy's mount namespace (where
// /run/caddy is) as root or, with asUser, as that user.
func (c *unitCaddy) inCaddyNamespace(asUser string, env []string, args ...string) (string, error) {
	cmdline := []string{"-t", strconv.Itoa(c.cmd.Process.Pid), "-m", "--"}
	if asUser != "" {
		u, _ := user.Lookup(asUser)
		cmdline = append(cmdline, "setpriv", "--reuid="+u.Uid, "--regid="+u.Gid, "--clear-groups", "--")
	}
	cmd := exec.Command("nsenter", append(cmdline, args...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/"}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *unitCaddy) stop() {
	stopCaddy(c.t, c.cmd, c.exited)
	if c.t.Failed() {
		c.t.Logf("caddy log:\n%s", tail(c.log.String(), 60))
	}
}

// probeApp copies the SSRF probe into a directory every user can read.
func probeApp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	openToAll(t, dir)
	src, err := os.ReadFile(repoPath("tests", "apps", "adminprobe.py"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "adminprobe.py"), string(src))
	return dir
}

// probeResult is what tests/apps/adminprobe.py answers.
type probeResult struct {
	UID     int                          `json:"uid"`
	Caps    map[string]string            `json:"caps"`
	Reached map[string]map[string]string `json:"reached"`
}

func probe(t *testing.T, url string) probeResult {
	t.Helper()
	resp, body := get(t, url)
	var r probeResult
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &r) != nil {
		t.Fatalf("the probe answered %d %s", resp.StatusCode, body)
	}
	return r
}

// TestAdminUnreachableFromApps is the SSRF case of issue 14: app code (any
// view that fetches a URL) tries to read the config and load one through
// every admin endpoint it can find. Run as its unit runs it, Caddy's
// admin API is a socket the app's account cannot open, and the app holds
// no capability.
func TestAdminUnreachableFromApps(t *testing.T) {
	t.Parallel()
	needUnitRun(t)
	port, tcpAdmin := freePort(t), freePort(t)
	c, _ := startAsUnit(t, fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi adminprobe:application {
		dir %s
		python %s
		workers 1
		env ADMIN_PROBE_TCP 127.0.0.1:%d
		env ADMIN_PROBE_UNIX /run/caddy/admin.sock
	}
}
`, port, probeApp(t), pythonPath(), tcpAdmin), nil)
	apps := c.waitRunning(1)
	r := probe(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	nobody, _ := user.Lookup(appsUser)
	if strconv.Itoa(r.UID) != nobody.Uid {
		t.Errorf("the app runs as uid %d, not %s (HEARTH_DEFAULT_USER)", r.UID, appsUser)
	}
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb"} {
		if r.Caps[set] != "0000000000000000" {
			t.Errorf("the app holds capabilities: %s %s", set, r.Caps[set])
		}
	}
	if len(r.Reached) != 2 {
		t.Fatalf("the probe tried %d endpoints: %v", len(r.Reached), r.Reached)
	}
	for endpoint, tries := range r.Reached {
		for what, result := range tries {
			if !strings.HasPrefix(result, "error: ") {
				t.Errorf("the app reached the admin API: %s on %s answered %q", what, endpoint, result)
			}
		}
	}
	if unix := r.Reached["unix /run/caddy/admin.sock"]["GET /config/"]; !strings.Contains(unix, "Permission denied") {
		t.Errorf("the socket refused the app for another reason than its permissions: %q", unix)
	}
	// Caddy itself holds only the unit's capabilities, none to pass on
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	for _, want := range []string{"CapInh:\t0000000000000000", "CapAmb:\t0000000000000000", "CapEff:\t00000000000000e0"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("Caddy's capabilities: want %s:\n%s", want, status)
		}
	}
	// with /proc hiding the app's processes, Caddy still reads their memory
	if len(apps[0].Workers) != 1 || apps[0].Workers[0].RSS == 0 {
		t.Errorf("no resident memory for the worker under ProtectProc=invisible: %+v", apps[0].Workers)
	}
	if strings.Contains(c.log.String(), "HG-ADMIN-01") || strings.Contains(c.log.String(), "every local account") {
		t.Errorf("HG-ADMIN-01, or the warning about a TCP admin API, reported for the unit's socket:\n%s", c.log.String())
	}
	// whoever holds the socket (Caddy's account) gets neither root nor a
	// process as Caddy's own account, which may switch to any other
	for _, tc := range []struct{ account, want string }{
		{"user root\n\t\t\tallow_root", "Caddy does not run as root"},
		{"user " + caddyUser, "runs as Caddy's own account (" + caddyUser + ")"},
	} {
		code, body := c.load(fmt.Sprintf("{\n\thearth {\n\t\tservice escalate {\n\t\t\tcommand /bin/sleep 300\n\t\t\t%s\n\t\t}\n\t}\n}\n", tc.account))
		if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("a service with %q loaded over the unit's socket: %d %s", tc.account, code, body)
		}
	}
}

// TestAdminFindingTCP: with the admin API on TCP, the probe (the positive
// control of the test above) reaches it, and HG-ADMIN-01 says so: a
// warning for an app running as Caddy's own user, blocking for one under
// another `user`, in the log and in `caddy hearth check`.
func TestAdminFindingTCP(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("user nobody needs root")
	}
	dir := probeApp(t)
	port := freePort(t)
	config := func(options string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi adminprobe:application {
		dir %s
		python {PYTHON}
		workers 1
		env ADMIN_PROBE_TCP {ADMIN}
		%s
	}
}`, port, dir, options)
	}
	// another user, enforce: refused
	log := refused(t, config("user nobody"))
	if !strings.Contains(log, "HG-ADMIN-01") || !strings.Contains(log, "listens on TCP") {
		t.Errorf("user nobody with a TCP admin API was not refused for HG-ADMIN-01:\n%s", tail(log, 10))
	}
	// an abstract unix socket (@name) has no permissions: as open as TCP
	log = refused(t, fmt.Sprintf("{\n\tadmin unix/@hearth-test-admin-%d\n}\n", port)+config("user nobody"))
	if !strings.Contains(log, "HG-ADMIN-01") || !strings.Contains(log, "abstract unix socket") {
		t.Errorf("user nobody with an admin API on an abstract unix socket was not refused for HG-ADMIN-01:\n%s", tail(log, 10))
	}
	// another user, warn: the app starts and reaches the admin API
	c := startCaddy(t, config("user nobody\n\t\tguard warn"))
	r := probe(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	tcp := r.Reached["tcp "+c.admin]
	if !strings.Contains(tcp["GET /config/"], " 200 ") || !strings.Contains(tcp["POST /load"], " 400 ") {
		t.Errorf("the probe did not reach a TCP admin API: %v", r.Reached)
	}
	if !strings.Contains(c.log.String(), `"id":"HG-ADMIN-01"`) {
		t.Errorf("no HG-ADMIN-01 warning:\n%s", tail(c.log.String(), 10))
	}
	// and, Caddy being root, every local account could use it: said once
	if !strings.Contains(c.log.String(), "while Caddy runs as root (or may switch users): every local account") {
		t.Errorf("no warning that every local account can reach a root Caddy's TCP admin API:\n%s", tail(c.log.String(), 10))
	}
	// Caddy's own user: a warning, the app starts
	c.stop()
	own := startCaddy(t, config(""))
	if !strings.Contains(own.log.String(), `"id":"HG-ADMIN-01"`) || !strings.Contains(own.log.String(), "runs as Caddy's own user") {
		t.Errorf("no HG-ADMIN-01 warning for an app running as Caddy's user:\n%s", tail(own.log.String(), 10))
	}
	// caddy hearth check: blocking for user nobody
	path := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, path, "{\n\tadmin 127.0.0.1:2999\n}\n"+strings.NewReplacer("{PYTHON}", pythonPath(), "{ADMIN}", "127.0.0.1:2999").Replace(config("user nobody")))
	out, err := exec.Command(caddyBinary(t), "hearth", "check", "--user", "nobody", "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "HG-ADMIN-01") || !strings.Contains(string(out), "blocking") {
		t.Errorf("caddy hearth check (%v) does not block on HG-ADMIN-01:\n%s", err, out)
	}
}

// TestAdminReachRefusedForOwnAccounts: a service, a job or a process
// upstream running under an account of its own is refused when that
// account can use the admin API (here TCP, which every local process
// reaches): its code, compromised, could load a config that runs anything
// as Caddy, root here (a Python app has had HG-ADMIN-01 for this). The
// same blocks as Caddy's own account start, which the log says is root.
func TestAdminReachRefusedForOwnAccounts(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("user nobody needs root")
	}
	port := freePort(t)
	for _, tc := range []struct{ what, config string }{
		{"service probe", "{\n\tadmin {ADMIN}\n\thearth {\n\t\tservice probe {\n\t\t\tcommand /bin/sleep 300\n\t\t\t%s\n\t\t}\n\t}\n}\n"},
		{"job probe", "{\n\tadmin {ADMIN}\n\thearth {\n\t\tjob probe {\n\t\t\tcommand /bin/true\n\t\t\tschedule every 1h\n\t\t\t%s\n\t\t}\n\t}\n}\n"},
		{"process upstream probe", fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\treverse_proxy {\n\t\tdynamic process {PYTHON} -m http.server {port} --bind 127.0.0.1 {\n\t\t\tname probe\n\t\t\tdir /\n\t\t\t%%s\n\t\t}\n\t}\n}\n", port)},
	} {
		t.Run(tc.what, func(t *testing.T) {
			log := refused(t, fmt.Sprintf(tc.config, "user nobody"))
			if !strings.Contains(log, "listens on TCP") || !strings.Contains(log, tc.what+" (user nobody) can load a config that runs any command") {
				t.Errorf("%s as nobody, with the admin API on TCP, was not refused:\n%s", tc.what, tail(log, 6))
			}
			c := launchCaddy(t, fmt.Sprintf(tc.config, ""))
			waitFor(t, 60*time.Second, "the config as Caddy's own account to start", func() bool {
				select {
				case <-c.exited:
					t.Fatalf("as Caddy's own account, refused too:\n%s", tail(c.log.String(), 6))
				default:
				}
				return strings.Contains(c.log.String(), "serving initial configuration")
			})
			// Caddy's own account is root here: said when the config loads
			if log := c.log.String(); !strings.Contains(log, rootWarning) || !strings.Contains(log, `"what":"`+tc.what+`"`) {
				t.Errorf("%s runs as root, and the log does not say so:\n%s", tc.what, tail(log, 8))
			}
			c.stop()
		})
	}
}

// TestHomeserverAsUnit: examples/homeserver, started as the unit generated
// for it starts Caddy (its user, capabilities, environment file, admin
// socket, hidden /proc), serves its three services with the apps under
// their own account; `caddy hearth status` and `caddy reload` find the
// socket without flags as root and as Caddy's user, and the apps' account
// cannot use them.
func TestHomeserverAsUnit(t *testing.T) {
	needUnitRun(t)
	ports, _ := homeserverEnv(t)
	root := os.Getenv("HEARTH_EXAMPLES")
	openToAll(t, root)
	chownTree(t, root, appsUser, caddyUser) // the apps write their database and static files, Caddy serves them
	env := map[string]string{}
	for _, k := range []string{"HEARTH_EXAMPLES", "HOME_BIND", "HOME_HOST", "ENGWRITE_PORT", "GUESTBOOK_PORT", "SERVICEC_PORT",
		"DASHBOARD", "DDNS_TSIG_KEY", "DDNS_SERVER", "DDNS_IP_SOURCE_1", "DDNS_IP_SOURCE_2", "REDIS_PORT"} {
		env[k] = os.Getenv(k)
	}
	src, err := os.ReadFile(repoPath("examples", "homeserver", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	c, unit := startAsUnit(t, string(src), env)
	apps := c.waitRunning(5) // three apps, the redis and celery services
	nobody, _ := user.Lookup(appsUser)
	for _, a := range apps {
		for _, w := range a.Workers {
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.Pid))
			if !strings.Contains(string(status), "Uid:\t"+nobody.Uid+"\t") || !strings.Contains(string(status), "CapEff:\t0000000000000000") {
				t.Errorf("%s worker %d does not run as %s without capabilities:\n%s", a.Name, w.Pid, appsUser, status)
			}
		}
	}
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
	// the CLI finds the socket (CADDY_ADMIN unset) as root and as Caddy's user
	for _, as := range []string{"", caddyUser} {
		out, err := c.inCaddyNamespace(as, nil, caddyBinary(t), "hearth", "status")
		if err != nil || !strings.Contains(out, "engwrite") || !strings.Contains(out, "servicec") {
			t.Errorf("caddy hearth status as %q: %v\n%s", as, err, out)
		}
	}
	out, err := c.inCaddyNamespace(appsUser, nil, caddyBinary(t), "hearth", "status")
	if err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("caddy hearth status as %s: %v\n%s", appsUser, err, out)
	}
	var envLines []string
	for k, v := range env {
		envLines = append(envLines, k+"="+v)
	}
	reload := strings.Fields(unitSettings(unit)["ExecReload"][0])
	if out, err := c.inCaddyNamespace("", envLines, reload...); err != nil {
		t.Errorf("%s: %v\n%s", strings.Join(reload, " "), err, out)
	}
	c.waitRunning(5) // three apps, the redis and celery services
	if strings.Contains(c.log.String(), env["DDNS_TSIG_KEY"]) {
		t.Errorf("the TSIG key from the environment file is in Caddy's log")
	}
}

// TestPreloadAsUnit: under the unit, /proc hides the apps' processes from
// Caddy's account (ProtectProc=invisible); the workers a preloading fork
// server forks are still known as its children, and serve.
func TestPreloadAsUnit(t *testing.T) {
	t.Parallel()
	needUnitRun(t)
	port := freePort(t)
	c, _ := startAsUnit(t, fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi adminprobe:application {
		dir %s
		python %s
		workers 2
		preload
	}
}
`, port, probeApp(t), pythonPath()), nil)
	apps := c.waitRunning(1)
	if len(apps[0].Workers) != 2 {
		t.Fatalf("workers: %+v\n%s", apps[0].Workers, c.log.String())
	}
	r := probe(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	if nobody, _ := user.Lookup(appsUser); strconv.Itoa(r.UID) != nobody.Uid {
		t.Errorf("the forked worker runs as uid %d, not %s", r.UID, appsUser)
	}
	if strings.Contains(c.log.String(), "reading process") {
		t.Errorf("a forked worker was refused:\n%s", c.log.String())
	}
}

// TestCheckGivesNoKeyToAnotherAccount: a config an app's account can edit
// may hold a block that names another app (its name and directory) and
// runs as the editing account. `caddy hearth check` run as root must not
// hand that code the other app's secret key from Caddy's data directory:
// a block whose account does not own its directory is checked with a
// throwaway key.
func TestCheckGivesNoKeyToAnotherAccount(t *testing.T) {
	t.Parallel()
	needUnitRun(t)
	data := t.TempDir()
	victim := t.TempDir() // the other app's directory: root's, not nobody's
	openToAll(t, victim)
	drop := t.TempDir()
	openToAll(t, drop)
	if err := os.Chmod(drop, 0o777); err != nil {
		t.Fatal(err)
	}
	leak := filepath.Join(drop, "leak")
	writeFile(t, filepath.Join(victim, "victim.py"), "import os\ntry:\n    open("+strconv.Quote(leak)+", 'w').write(os.environ.get('SECRET_KEY', ''))\nexcept OSError:\n    pass\n\ndef application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n")
	config := func(user string) string {
		path := filepath.Join(t.TempDir(), "Caddyfile")
		writeFile(t, path, fmt.Sprintf("{\n\tadmin off\n}\n:%d {\n\twsgi victim:application {\n\t\tname victim\n\t\tdir %s\n\t\tpython %s\n\t\tsettings auto\n\t\tguard warn\n%s\t}\n}\n", freePort(t), victim, pythonPath(), user))
		return path
	}
	check := func(path string, args ...string) {
		cmd := exec.Command(caddyBinary(t), append([]string{"hearth", "check", "--config", path}, args...)...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+data)
		out, _ := cmd.CombinedOutput()
		t.Logf("check %v:\n%s", args, out)
	}
	// the app's own check (as root, the directory's owner) stores its key
	check(config(""), "--user", "root")
	keys, _ := filepath.Glob(filepath.Join(data, "caddy", "hearth", "secrets", "victim-*.key"))
	if len(keys) != 1 {
		t.Fatalf("no stored key for the app: %v", keys)
	}
	stored, _ := os.ReadFile(keys[0])
	// the block an app's account (nobody) wrote
	os.Remove(leak)
	check(config("\t\tuser "+appsUser+"\n"), "--user", appsUser)
	got, err := os.ReadFile(leak)
	if err != nil {
		t.Fatalf("the check did not import the app as %s: %v", appsUser, err)
	}
	if len(got) == 0 || strings.TrimSpace(string(got)) == strings.TrimSpace(string(stored)) {
		t.Errorf("the code of a block run as %s got the stored key of the app whose directory it named (%d bytes)", appsUser, len(got))
	}
}

// TestCommandsGiveNoKeyToAnotherAccount: `caddy hearth exec` and `manage`,
// run as root beside a config another account can edit, must not hand an
// app's stored secret key to code running as any account but the one
// Caddy runs the app as. A block naming the app's name and directory, run
// as the editing account, is refused with what to do; run as the app's
// account, it gets the key. A key such a command made before Caddy first
// ran the app is replaced when Caddy starts it as another account.
func TestCommandsGiveNoKeyToAnotherAccount(t *testing.T) {
	t.Parallel()
	needUnitRun(t)
	data := t.TempDir()
	victim := t.TempDir() // the app's directory: root's, its code run as www-data
	openToAll(t, victim)
	writeFile(t, filepath.Join(victim, "victim.py"), "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n")
	drop := t.TempDir()
	openToAll(t, drop)
	if err := os.Chmod(drop, 0o777); err != nil {
		t.Fatal(err)
	}
	leak := filepath.Join(drop, "leak")
	site := func(name, user string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\twsgi victim:application {\n\t\tname %s\n\t\tdir %s\n\t\tpython %s\n\t\tworkers 1\n\t\tsettings auto\n\t\tguard warn\n%s\t}\n}\n", freePort(t), name, victim, pythonPath(), user)
	}
	config := func(name, user string) string {
		path := filepath.Join(t.TempDir(), "Caddyfile")
		writeFile(t, path, "{\n\tadmin off\n}\n"+site(name, user))
		return path
	}
	// command runs `caddy hearth <verb>` as root and returns what the app's
	// code saw as SECRET_KEY ("" when it did not run) and the output
	command := func(path, verb, name, account string) (string, string) {
		os.Remove(leak)
		args := []string{"hearth", verb, "--config", path, "--user", account, name}
		if verb == "exec" {
			args = append(args, "--", "python", "-c", "import os; open("+strconv.Quote(leak)+", 'w').write(os.environ.get('SECRET_KEY', ''))")
		}
		cmd := exec.Command(caddyBinary(t), args...)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+data)
		out, _ := cmd.CombinedOutput()
		got, _ := os.ReadFile(leak)
		return string(got), string(out)
	}
	storedKey := func(name string) string {
		keys, _ := filepath.Glob(filepath.Join(data, "caddy", "hearth", "secrets", name+"-*.key"))
		if len(keys) != 1 {
			t.Fatalf("stored keys of %s: %v", name, keys)
		}
		key, _ := os.ReadFile(keys[0])
		return strings.TrimSpace(string(key))
	}
	// serve runs the app under Caddy as account, once, and returns the log
	serve := func(name, account string) string {
		c := launchCaddyWithData(t, site(name, "\t\tuser "+account+"\n"), data)
		c.waitRunning()
		c.stop()
		return c.log.String()
	}

	// Caddy runs the app as www-data: it records that account
	serve("victim", caddyUser)
	key := storedKey("victim")
	// the block the app's account (or any other) wrote: no user, named
	// the victim; root runs it as nobody
	attacker := config("victim", "")
	for _, verb := range []string{"exec", "manage"} {
		got, out := command(attacker, verb, "victim", appsUser)
		if got != "" || !strings.Contains(out, "secret key is for "+caddyUser+", the account Caddy runs the app as") || !strings.Contains(out, "--user "+caddyUser) {
			t.Errorf("%s as %s: the code got %d bytes of key; output:\n%s", verb, appsUser, len(got), out)
		}
	}
	// the app's own account gets its key
	if got, out := command(config("victim", ""), "exec", "victim", caddyUser); got != key {
		t.Errorf("exec as %s (the app's account) got %q, not the app's key; output:\n%s", caddyUser, got, out)
	}
	// the editing account's own app ("mine", which Caddy runs as nobody),
	// with a config naming a storage in a directory of that account's: a
	// link there where the key's file goes would have root read any file
	// for the app's code (and a record there could be forged)
	serve("mine", appsUser)
	rootOnly := filepath.Join(t.TempDir(), "root-only")
	writeFile(t, rootOnly, "ROOT-ONLY-0123456789-0123456789-0123456789\n")
	os.Chmod(rootOnly, 0o600)
	theirs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(theirs, "hearth", "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("mine\x00" + victim))
	if err := os.Symlink(rootOnly, filepath.Join(theirs, "hearth", "secrets", "mine-"+hex.EncodeToString(sum[:6])+".key")); err != nil {
		t.Fatal(err)
	}
	chownTree(t, theirs, appsUser, appsUser)
	withStorage := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, withStorage, "{\n\tadmin off\n\tstorage file_system "+theirs+"\n}\n"+site("mine", ""))
	if got, out := command(withStorage, "exec", "mine", appsUser); got != "" || !strings.Contains(out, "cannot be trusted with the apps' secret keys") {
		t.Errorf("exec as %s with a storage of its own: the code got %q; output:\n%s", appsUser, got, out)
	}
	if storedKey("victim") != key {
		t.Errorf("the app's key moved or changed")
	}

	// a key made by a command for nobody, before Caddy ever ran the app,
	// is replaced when Caddy starts it as www-data
	made, out := command(config("fresh", ""), "exec", "fresh", appsUser)
	if len(made) < 32 || !strings.Contains(out, "created app fresh's secret key") || !strings.Contains(out, "run this with XDG_DATA_HOME=/var/lib instead") {
		t.Fatalf("exec of a new app as %s: key %q; output:\n%s", appsUser, made, out)
	}
	log := serve("fresh", caddyUser)
	if now := storedKey("fresh"); now == made || !strings.Contains(log, "replaced the app's secret key before its first use") {
		t.Errorf("Caddy kept the key a command made for %s (replaced: %v); log:\n%s", appsUser, now != made, log)
	}
}

// TestCommandsUseTheUnitsKeys: under the unit of `caddy hearth systemd`,
// Caddy runs as its own account and keeps the apps' secret keys in its data
// directory, that account's. `caddy hearth exec` and `manage` must run as
// root there (only root switches to the apps' account), and with the
// unit's XDG_DATA_HOME they must hand the app's code the key Caddy serves
// it with, and leave every file in that directory its owner's, so that
// Caddy can still use what they create. Before, root refused the directory
// (not root's), and a key root made in its own was not the app's.
func TestCommandsUseTheUnitsKeys(t *testing.T) {
	t.Parallel()
	needUnitRun(t)
	app := t.TempDir()
	openToAll(t, app)
	writeFile(t, filepath.Join(app, "keyapp.py"), "import os\n\ndef application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [os.environ.get('SECRET_KEY', '').encode()]\n")
	port := freePort(t)
	block := func(name string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\twsgi keyapp:application {\n\t\tname %s\n\t\tdir %s\n\t\tpython %s\n\t\tworkers 1\n\t\tsettings auto\n\t\tguard warn\n\t}\n}\n", port, name, app, pythonPath())
	}
	c, unit := startAsUnit(t, block("keyapp"), nil)
	c.waitRunning(1)
	_, served := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	if len(served) < 32 {
		t.Fatalf("the app was served with no secret key: %q", served)
	}
	var dataHome, config string
	for _, kv := range unitEnvironment(t, unitSettings(unit)) {
		if v, ok := strings.CutPrefix(kv, "XDG_DATA_HOME="); ok {
			dataHome = v
		}
	}
	exec0 := strings.Fields(unitSettings(unit)["ExecStart"][0])
	if i := slices.Index(exec0, "--config"); i >= 0 && i+1 < len(exec0) {
		config = exec0[i+1]
	}
	if dataHome == "" || config == "" {
		t.Fatalf("no XDG_DATA_HOME or --config in the unit:\n%s", unit)
	}
	caddyAccount, _ := user.Lookup(caddyUser)
	// command runs `caddy hearth <verb>` as root with the unit's data
	// directory, and returns the SECRET_KEY the app's code saw, and the output
	commandWith := func(dataHome, config, verb, name, account string) (string, string) {
		cmd := exec.Command(caddyBinary(t), "hearth", verb, "--config", config, "--user", account, name,
			"--", "python", "-c", "import os; print('KEY=' + os.environ.get('SECRET_KEY', ''))")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dataHome)
		out, _ := cmd.CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if k, ok := strings.CutPrefix(strings.TrimSpace(line), "KEY="); ok {
				return k, string(out)
			}
		}
		return "", string(out)
	}
	command := func(config, verb, name string) (string, string) {
		return commandWith(dataHome, config, verb, name, appsUser)
	}
	if got, out := command(config, "exec", "keyapp"); got != served || !strings.Contains(out, "secret key is handled as "+caddyUser+", the owner of Caddy's data directory") {
		t.Errorf("exec as root with the unit's data directory: the code got %q, Caddy serves the app with %q; output:\n%s", got, served, out)
	}
	// a data directory whose parent another account owns (it could move
	// the directory and put its own there) is refused, as before
	theirs := t.TempDir()
	openToAll(t, theirs)
	if err := os.MkdirAll(filepath.Join(theirs, "share", "caddy"), 0o700); err != nil {
		t.Fatal(err)
	}
	chownTree(t, filepath.Join(theirs, "share"), caddyUser, caddyUser)
	if got, out := commandWith(filepath.Join(theirs, "share"), config, "exec", "keyapp", appsUser); got != "" || !strings.Contains(out, "is owned by "+caddyUser) {
		t.Errorf("exec as root with a data directory under %s's own directory: the code got %q; output:\n%s", caddyUser, got, out)
	}
	// an app Caddy has not started yet: the command makes its key, as the
	// directory's owner
	other := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, other, "{\n\tadmin off\n}\n"+block("fresh"))
	made, out := command(other, "exec", "fresh")
	if len(made) < 32 || !strings.Contains(out, "as "+caddyUser+", the owner of that data directory") {
		t.Errorf("exec of an app never started: key %q; output:\n%s", made, out)
	}
	if again, out := command(other, "exec", "fresh"); again != made {
		t.Errorf("a second exec got %q, not the key the first made (%q); output:\n%s", again, made, out)
	}
	// a key made for root's code is recorded as root's (the account the
	// command runs the code as), not as the directory's owner's
	rootApp := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, rootApp, "{\n\tadmin off\n}\n"+block("rootfresh"))
	if made, out := commandWith(dataHome, rootApp, "exec", "rootfresh", "root"); len(made) < 32 {
		t.Errorf("exec of an app never started, as root: key %q; output:\n%s", made, out)
	}
	records, _ := filepath.Glob(filepath.Join(dataHome, "caddy", "hearth", "secrets", "rootfresh-*.holder"))
	if len(records) != 1 {
		t.Fatalf("records of rootfresh's key: %v", records)
	}
	if record, _ := os.ReadFile(records[0]); string(record) != "uid 0 command\n" {
		t.Errorf("the key made for root's code is recorded as %q", record)
	}
	// every file the commands touched is still Caddy's account's
	err := filepath.Walk(filepath.Join(dataHome, "caddy"), func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if uid, gid := strconv.Itoa(int(st.Uid)), strconv.Itoa(int(st.Gid)); uid != caddyAccount.Uid || gid != caddyAccount.Gid {
			t.Errorf("%s belongs to uid %s and gid %s, not to %s (uid %s, gid %s), Caddy's account", path, uid, gid, caddyUser, caddyAccount.Uid, caddyAccount.Gid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// and Caddy still serves its app with its key after a restart of the app
	if code, body := c.admin(http.MethodPost, "/hearth/apps/keyapp/restart"); code != http.StatusOK {
		t.Fatalf("restart: %d %s", code, body)
	}
	if _, again := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); again != served {
		t.Errorf("after the commands, the app is served with %q, not %q", again, served)
	}
}

// TestCommandsKeepRootsEnvironmentFromAnotherAccount: a config an app's
// account can edit (here, owns) reads the environment of the command run
// beside it ({$NAME}, {env.NAME}, env_inherit) and the files it imports,
// as root. As root for that account's code, a command (exec, check) hands
// it none of the operator's own variables (a `sudo -E` shell's token), says
// which it left out, and refuses a config importing a file that account
// cannot read; for root's code, and for a config only root can change, the
// config reads this environment as before.
func TestCommandsKeepRootsEnvironmentFromAnotherAccount(t *testing.T) {
	t.Parallel()
	needUnitRun(t)
	const secret, imported = "operator-token-0123456789", "imported-secret-0123456789"
	dir := t.TempDir()
	openToAll(t, dir)
	drop := t.TempDir()
	openToAll(t, drop)
	if err := os.Chmod(drop, 0o777); err != nil {
		t.Fatal(err)
	}
	leak := filepath.Join(drop, "leak")
	// the app writes its whole environment where the test reads it, when imported
	writeFile(t, filepath.Join(dir, "envdump.py"), "import os\ntry:\n    open("+strconv.Quote(leak)+", 'w').write(repr(dict(os.environ)))\nexcept OSError:\n    pass\n\ndef application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n")
	block := func(extra string) string {
		return fmt.Sprintf("{\n\tadmin off\n}\n:%d {\n\twsgi envdump:application {\n\t\tdir %s\n\t\tpython %s\n\t\tguard warn\n\t\tenv_inherit CLOUD_TOKEN\n\t\tenv FROM_PLACEHOLDER {env.CLOUD_TOKEN}\n\t\tenv FROM_PARSE {$CLOUD_TOKEN:none}\n%s\t}\n}\n", freePort(t), dir, pythonPath(), extra)
	}
	// the app's account's config, in a directory of its own
	theirs := t.TempDir()
	openToAll(t, theirs)
	config := filepath.Join(theirs, "Caddyfile")
	writeFile(t, config, block(""))
	chownTree(t, theirs, appsUser, appsUser)
	// root's own config, beside a root-only file it imports
	rootDir := t.TempDir()
	openToAll(t, rootDir)
	rootOnly := filepath.Join(rootDir, "secrets.caddy")
	writeFile(t, rootOnly, "env IMPORTED "+imported+"\n")
	os.Chmod(rootOnly, 0o600)
	rootConfig := filepath.Join(rootDir, "Caddyfile")
	writeFile(t, rootConfig, block("\t\timport "+rootOnly+"\n"))
	data := t.TempDir()
	var extraEnv []string
	run := func(config, account, verb string, rest ...string) (string, string) {
		os.Remove(leak)
		cmd := exec.Command(caddyBinary(t), append([]string{"hearth", verb, "--config", config, "--user", account}, rest...)...)
		cmd.Env = append(append(os.Environ(), "XDG_DATA_HOME="+data, "CLOUD_TOKEN="+secret), extraEnv...)
		out, _ := cmd.CombinedOutput()
		got, _ := os.ReadFile(leak)
		return string(got), string(out)
	}
	sawAll := func(seen string, values ...string) bool {
		for _, v := range values {
			if !strings.Contains(seen, v) {
				return false
			}
		}
		return true
	}
	for _, args := range [][]string{{"exec", "envdump", "--", "python", "-c", "import envdump"}, {"check"}} {
		verb := args[0]
		// as root, for nobody's code, with nobody's config: none of the
		// operator's variables
		seen, out := run(config, appsUser, verb, args[1:]...)
		if seen == "" {
			t.Fatalf("%s as %s: the app did not run; output:\n%s", verb, appsUser, out)
		}
		if strings.Contains(seen, secret) || strings.Contains(out, secret) || !strings.Contains(out, "CLOUD_TOKEN") || !strings.Contains(out, "left out") {
			t.Errorf("%s as %s: the app's code saw the operator's variable (%v), or the command did not say it left it out; output:\n%s", verb, appsUser, strings.Contains(seen, secret), out)
		}
		// for root's own code, the config reads this environment as before
		if seen, out := run(config, "root", verb, args[1:]...); !sawAll(seen, "'FROM_PLACEHOLDER': '"+secret, "'FROM_PARSE': '"+secret, "'CLOUD_TOKEN': '"+secret) {
			t.Errorf("%s as root: the config's placeholders and env_inherit did not read the environment: %s; output:\n%s", verb, seen, out)
		}
		// and so does root's own config, for nobody's code
		if seen, out := run(rootConfig, appsUser, verb, args[1:]...); !sawAll(seen, "'FROM_PLACEHOLDER': '"+secret, "'IMPORTED': '"+imported) {
			t.Errorf("%s of root's own config as %s: the config did not read the environment and its import: %s; output:\n%s", verb, appsUser, seen, out)
		}
	}
	// nobody's config importing root's file: refused, before anything runs
	exec1 := []string{"exec", "envdump", "--", "python", "-c", "import envdump"}
	writeFile(t, config, block("\t\timport "+rootOnly+"\n"))
	chownTree(t, theirs, appsUser, appsUser)
	seen, out := run(config, appsUser, exec1[0], exec1[1:]...)
	if seen != "" || strings.Contains(out, imported) || !strings.Contains(out, "is read as "+appsUser) || !strings.Contains(out, "permission denied") {
		t.Errorf("exec as %s of its config importing a root-only file: the code ran (%v) or saw it (%v); output:\n%s", appsUser, seen != "", strings.Contains(seen, imported), out)
	}
	// and one whose import depends on the environment: harmless with the
	// operator's (SUDO_USER names a file of nobody's), root's file without
	// it; it is read as the command adapts it, without
	harmless := filepath.Join(theirs, "harmless.caddy")
	writeFile(t, harmless, "env HARMLESS yes\n")
	writeFile(t, config, block("\t\timport {$SUDO_USER:"+rootOnly+"}\n"))
	chownTree(t, theirs, appsUser, appsUser)
	extraEnv = []string{"SUDO_USER=" + harmless}
	seen, out = run(config, appsUser, exec1[0], exec1[1:]...)
	if strings.Contains(seen, imported) || strings.Contains(out, imported) || !strings.Contains(out, "permission denied") {
		t.Errorf("exec as %s of its config importing by the environment: the code ran (%v) or saw root's file (%v); output:\n%s", appsUser, seen != "", strings.Contains(seen, imported), out)
	}
}

// TestCommandsRunNoOneElsesCodeAsTheAdmin: an admin who runs `caddy hearth
// exec` (or manage, check) without sudo, on an app whose block names no
// user (under the unit, HEARTH_DEFAULT_USER, in the unit only, names it),
// runs its code as the admin: when that code's directory belongs to the
// apps' account, which could have changed settings.py or the venv to act
// with the admin's rights, the command is refused with what to do. The
// admin's own app runs.
func TestCommandsRunNoOneElsesCodeAsTheAdmin(t *testing.T) {
	t.Parallel()
	needUnitRun(t)
	admin, err := user.Lookup(appsUser) // the admin: an account that is not root
	if err != nil {
		t.Fatal(err)
	}
	other, err := user.Lookup(caddyUser) // the apps' account
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(admin.Uid)
	gid, _ := strconv.Atoi(admin.Gid)
	data := t.TempDir() // the admin's
	openToAll(t, data)
	if err := os.Chown(data, uid, gid); err != nil {
		t.Fatal(err)
	}
	run := func(owner *user.User, dirGroup *user.User, dirMode os.FileMode) (int, string) {
		dir := t.TempDir()
		openToAll(t, dir)
		writeFile(t, filepath.Join(dir, "app.py"), "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n")
		config := filepath.Join(dir, "Caddyfile")
		writeFile(t, config, fmt.Sprintf("{\n\tadmin off\n}\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n\twsgi app:application {\n\t\tdir %s\n\t\tpython %s\n\t\tworkers 1\n\t\tguard warn\n\t}\n}\n", freePort(t), dir, pythonPath()))
		for _, f := range []string{dir, filepath.Join(dir, "app.py"), config} {
			ownerUID, _ := strconv.Atoi(owner.Uid)
			ownerGID, _ := strconv.Atoi(owner.Gid)
			if err := os.Chown(f, ownerUID, ownerGID); err != nil {
				t.Fatal(err)
			}
			os.Chmod(f, 0o755)
		}
		groupGID, _ := strconv.Atoi(dirGroup.Gid)
		ownerUID, _ := strconv.Atoi(owner.Uid)
		if err := os.Chown(dir, ownerUID, groupGID); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, dirMode)
		cmd := exec.Command(caddyBinary(t), "hearth", "exec", "--config", config, "app", "--", "python", "-c", "import os; print('uid', os.getuid())")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + data, "XDG_DATA_HOME=" + data}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			code = -1
		}
		return code, string(out)
	}
	if code, out := run(other, other, 0o755); code == 0 || !strings.Contains(out, "belongs to "+caddyUser) || strings.Contains(out, "uid "+admin.Uid) {
		t.Errorf("an app whose directory is %s's, run by %s without sudo: exit %d\n%s", caddyUser, appsUser, code, out)
	}
	// the admin's, but writable by the apps' group (its database beside)
	if code, out := run(admin, other, 0o775); code == 0 || !strings.Contains(out, "others can write") || strings.Contains(out, "uid "+admin.Uid) {
		t.Errorf("an app whose directory %s's group may write, run by %s without sudo: exit %d\n%s", caddyUser, appsUser, code, out)
	}
	if code, out := run(admin, admin, 0o755); code != 0 || !strings.Contains(out, "uid "+admin.Uid) {
		t.Errorf("the admin's own app: exit %d\n%s", code, out)
	}
}
