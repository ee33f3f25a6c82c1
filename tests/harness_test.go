// Package tests holds Hearth's integration tests: they start the built
// bin/caddy (HEARTH_CADDY) on loopback with real Python workers
// (HEARTH_PYTHON) and stop everything they started, by PID.
//
// A test begins with t.Parallel() (make test runs four at once: they
// mostly wait on processes, and the suite took 18 minutes one by one on
// two cores), and so takes nothing shared: ports come from freePort,
// directories from t.TempDir, the admin API's address from the harness.
// A test stays serial when it changes the test process's environment
// (t.Setenv: caddy inherits it), listens on a fixed port, measures CPU
// time that other tests would take, or needs requests to be fast (the
// pipelining tests).
package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// caddyBinary is the caddy under test.
func caddyBinary(t testing.TB) string {
	if p := os.Getenv("HEARTH_CADDY"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../bin/caddy")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no caddy binary at %s: run `make build` (or `make test`) first", p)
	}
	return p
}

// pythonPath is the interpreter with Debian's Django and Flask.
func pythonPath() string {
	if p := os.Getenv("HEARTH_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

// repoPath is a path inside the repository.
func repoPath(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), ".."}, parts...)...)
}

// freePort returns a loopback TCP port nobody listens on now, and one it
// has not returned before in this run. It picks below the kernel's
// ephemeral range: a port from there (what a listener on :0 or an
// outgoing connection gets) could be taken by another test's client or
// helper between this check and the moment caddy binds it ("address
// already in use" once in CI).
func freePort(t testing.TB) int {
	givenPorts.Lock()
	defer givenPorts.Unlock()
	low, high := 20000, ephemeralLow()
	if high-low < 1000 {
		low = 1024
	}
	for range 1000 {
		port := low + rand.IntN(high-low)
		if givenPorts.seen[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken
		}
		l.Close()
		givenPorts.seen[port] = true
		return port
	}
	t.Fatal("no free loopback port below the ephemeral range in 1000 tries")
	return 0
}

// ephemeralLow is the lowest port the kernel hands out on its own.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil || low < 2048 {
		return 32768
	}
	return low
}

// givenPorts are the ports freePort has handed out in this run.
var givenPorts = struct {
	sync.Mutex
	seen map[int]bool
}{seen: map[int]bool{}}

// lockedBuffer collects caddy's log safely across goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// caddyProc is a caddy started by a test.
type caddyProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	admin   string // host:port of the admin API
	dir     string
	log     *lockedBuffer
	exited  chan struct{}
	seenPID map[int]bool // every worker pid observed, checked gone at the end

	lastConfig string // the Caddyfile given at launch (before substitution)
}

// caddyfileVars are substituted in test Caddyfiles.
func caddyfileVars(c *caddyProc) *strings.Replacer {
	return strings.NewReplacer(
		"{ADMIN}", c.admin,
		"{PYTHON}", pythonPath(),
		"{APPS}", repoPath("tests", "apps"),
		"{EXAMPLES}", repoPath("examples"),
		"{TMP}", c.dir,
	)
}

// launchCaddy starts caddy with caddyfile ({ADMIN}, {PYTHON}, {APPS},
// {EXAMPLES}, {TMP} substituted) and registers its stop and the orphan
// check with t.Cleanup. It does not wait for readiness.
func launchCaddy(t testing.TB, caddyfile string) *caddyProc {
	t.Helper()
	return launchCaddyWithData(t, caddyfile, "")
}

// launchCaddyWithData is launchCaddy with Caddy's data directory (its
// XDG_DATA_HOME) at data, so that two runs can share it.
func launchCaddyWithData(t testing.TB, caddyfile, data string) *caddyProc {
	t.Helper()
	return launchCaddyWithFiles(t, caddyfile, data, nil)
}

// launchCaddyWithFiles is launchCaddyWithData with files that caddy
// inherits as fds 3, 4, … (without close-on-exec, as from a shell's
// `exec 3<file` or socket activation).
func launchCaddyWithFiles(t testing.TB, caddyfile, data string, files []*os.File) *caddyProc {
	t.Helper()
	c := newCaddyProc(t, caddyfile, data)
	c.cmd.ExtraFiles = files
	c.start()
	return c
}

// newCaddyProc prepares what launchCaddyWithData starts, for a test that
// changes how caddy is started (c.cmd) before c.start().
func newCaddyProc(t testing.TB, caddyfile, data string) *caddyProc {
	t.Helper()
	dir := t.TempDir()
	if data == "" {
		data = dir + "/data"
	}
	c := &caddyProc{t: t, admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)), dir: dir, log: &lockedBuffer{}, exited: make(chan struct{}), seenPID: map[int]bool{}, lastConfig: caddyfile}
	config := "{\n\tadmin " + c.admin + "\n}\n" + caddyfileVars(c).Replace(caddyfile)
	if strings.HasPrefix(strings.TrimSpace(caddyfile), "{") { // the test brings its own global options
		config = caddyfileVars(c).Replace(caddyfile)
	}
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(caddyBinary(t), "run", "--config", path, "--adapter", "caddyfile")
	c.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+data, "XDG_CONFIG_HOME="+dir+"/config")
	return c
}

// launchCaddyIn runs `caddy run` in dir, as a user would: Caddy reads
// ./Caddyfile; its admin API is on a free port through CADDY_ADMIN and its
// data directory is data. env adds variables.
func launchCaddyIn(t testing.TB, dir, data string, env ...string) *caddyProc {
	t.Helper()
	home := t.TempDir()
	c := &caddyProc{t: t, admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)), dir: home, log: &lockedBuffer{}, exited: make(chan struct{}), seenPID: map[int]bool{}}
	c.cmd = exec.Command(caddyBinary(t), "run")
	c.cmd.Dir = dir
	c.cmd.Env = append(append(os.Environ(), "CADDY_ADMIN="+c.admin, "HOME="+home, "XDG_DATA_HOME="+data, "XDG_CONFIG_HOME="+home+"/config"), env...)
	c.start()
	return c
}

// underSeccomp has c.cmd started under tests/apps/seccompwrap.py's filter,
// refusing the system calls refuse names (name:errno pairs), as a systemd
// unit's filters do. Its callers skip where GOARCH is not amd64.
func (c *caddyProc) underSeccomp(refuse string) {
	wrapped := exec.Command(pythonPath(), append([]string{repoPath("tests", "apps", "seccompwrap.py"), c.cmd.Path}, c.cmd.Args[1:]...)...)
	wrapped.Env, wrapped.Dir, wrapped.ExtraFiles = append(c.cmd.Env, "SECCOMPWRAP_REFUSE="+refuse), c.cmd.Dir, c.cmd.ExtraFiles
	c.cmd = wrapped
}

// start starts c.cmd with its output in c.log, and registers the stop and
// the orphan check with t.Cleanup.
func (c *caddyProc) start() {
	c.t.Helper()
	c.cmd.Stdout = c.log
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	c.t.Cleanup(c.cleanup)
}

// startCaddy launches caddy and waits until every app's pool is running.
func startCaddy(t testing.TB, caddyfile string) *caddyProc {
	t.Helper()
	c := launchCaddy(t, caddyfile)
	c.waitRunning()
	return c
}

// waitRunning polls /hearth/apps until every app is running.
func (c *caddyProc) waitRunning() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			c.t.Fatalf("caddy exited during start-up:\n%s", c.log.String())
		default:
		}
		apps, err := c.apps()
		// every app's pool runs, and Caddy has started all its apps (the
		// HTTP servers too)
		if err == nil && len(apps) > 0 && allRunning(apps) && strings.Contains(c.log.String(), "serving initial configuration") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("caddy did not become ready within 60s; log:\n%s", c.log.String())
}

func allRunning(apps []appStatus) bool {
	for _, a := range apps {
		if a.State != "running" {
			return false
		}
	}
	return true
}

// appStatus mirrors GET /hearth/apps.
type appStatus struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	App     string `json:"app"`
	State   string `json:"state"`
	Threads int    `json:"threads"`
	Queue   int    `json:"queue"`
	// Pipeline is the app's pipeline setting; Pipelined counts the
	// requests ever pipelined behind another on a worker.
	Pipeline  string `json:"pipeline"`
	Pipelined int64  `json:"pipelined_requests"`
	Workers   []struct {
		Pid         int       `json:"pid"`
		State       string    `json:"state"`
		BusyThreads int       `json:"busy_threads"`
		Requests    int64     `json:"requests"`
		RSS         int64     `json:"rss_bytes"`
		StartedAt   time.Time `json:"started_at"`
	} `json:"workers"`
	// WebSockets and Streams (ASGI) are the long-lived exchanges open,
	// MaxWebSockets and MaxStreams their limits
	WebSockets          int  `json:"websockets"`
	MaxWebSockets       int  `json:"max_websockets"`
	MaxWebSocketsShared bool `json:"max_websockets_shared"`
	MaxStreamsShared    bool `json:"max_streams_shared"`
	Streams             int  `json:"streams"`
	MaxStreams          int  `json:"max_streams"`
	// MaxWebSocketsPerClient and MaxStreamsPerClient: max_open_per_client
	MaxWebSocketsPerClient int            `json:"max_websockets_per_client"`
	MaxStreamsPerClient    int            `json:"max_streams_per_client"`
	Restarts               map[string]int `json:"restarts"`
	ConsecutiveFailures    int            `json:"consecutive_failures"`
	BackoffUntil           *time.Time     `json:"backoff_until"`
	LastError              string         `json:"last_error"`
	ForkServerPid          int            `json:"fork_server_pid"`
	Guard                  string         `json:"guard"`
	Findings               []struct {
		ID       string `json:"id"`
		Blocking bool   `json:"blocking"`
		Problem  string `json:"problem"`
	} `json:"findings"`
}

// apps reads GET /hearth/apps and remembers every worker pid it shows.
func (c *caddyProc) apps() ([]appStatus, error) {
	resp, err := http.Get("http://" + c.admin + "/hearth/apps")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var body struct {
		Apps []appStatus `json:"apps"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	for _, a := range body.Apps {
		for _, w := range a.Workers {
			c.seenPID[w.Pid] = true
		}
		if a.ForkServerPid > 0 {
			c.seenPID[a.ForkServerPid] = true
		}
	}
	return body.Apps, nil
}

// mustApps is apps() failing the test on error.
func (c *caddyProc) mustApps() []appStatus {
	c.t.Helper()
	apps, err := c.apps()
	if err != nil {
		c.t.Fatalf("GET /hearth/apps: %v", err)
	}
	return apps
}

// workerPIDs lists the pids of the workers in service (not retiring) of
// every app (not of background services).
func (c *caddyProc) workerPIDs() []int {
	c.t.Helper()
	var pids []int
	for _, a := range c.mustApps() {
		if a.Kind == "service" {
			continue
		}
		for _, w := range a.Workers {
			if w.State != "retiring" {
				pids = append(pids, w.Pid)
			}
		}
	}
	return pids
}

// adminClient posts to the admin API without keeping connections: a load
// restarts the admin server, and a POST on a connection the old one is
// closing fails with EOF (Go retries only idempotent requests).
// freshConnClient makes each request on a connection of its own. A
// pooled connection may have been accepted by a server that a reload then
// shuts down: Go's server closes it as idle while the next request may be
// on its way, which then fails with EOF (upstream behaviour, not Hearth's;
// it failed TestBackupInsideServedDirRefused and
// TestReloadRefusedForAnAppAnotherCaddyRuns once each).
var freshConnClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

var adminClient = &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// load posts a new Caddyfile to the admin API, as `caddy reload` does.
func (c *caddyProc) load(caddyfile string) (int, string) {
	c.t.Helper()
	config := "{\n\tadmin " + c.admin + "\n}\n" + caddyfileVars(c).Replace(caddyfile)
	if strings.HasPrefix(strings.TrimSpace(caddyfile), "{") {
		config = caddyfileVars(c).Replace(caddyfile)
	}
	var resp *http.Response
	var err error
	// Caddy replaces its admin server at every load, a refused one too: a
	// connection the old server accepted as it stopped is closed unanswered
	// (seen once in CI, with tests in parallel). Nothing was loaded then:
	// the load is sent again.
	for try := 1; ; try++ {
		req, _ := http.NewRequest(http.MethodPost, "http://"+c.admin+"/load", strings.NewReader(config))
		req.Header.Set("Content-Type", "text/caddyfile")
		resp, err = adminClient.Do(req)
		if err == nil || try == 3 || !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			break
		}
		if strings.Contains(c.log.String(), "http: panic serving") {
			break // (a load that panicked closes its connection too: not sent again)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitExit waits for caddy to exit on its own and returns its exit code.
func (c *caddyProc) waitExit(timeout time.Duration) int {
	c.t.Helper()
	select {
	case <-c.exited:
		return c.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		c.t.Fatalf("caddy did not exit within %s", timeout)
		return -1
	}
}

// refused starts caddy with config and returns its log once it exits
// non-zero; the test fails if it starts.
func refused(t testing.TB, config string) string {
	t.Helper()
	c := launchCaddy(t, config)
	if code := c.waitExit(60 * time.Second); code == 0 {
		t.Fatalf("caddy accepted the config")
	}
	return c.log.String()
}

// stop ends caddy gracefully (SIGTERM), then by SIGKILL after 20s.
func (c *caddyProc) stop() { stopCaddy(c.t, c.cmd, c.exited) }

// stopCaddy ends the caddy of cmd (exited closes when it has) with
// SIGTERM, then SIGKILL after 20s.
func stopCaddy(t testing.TB, cmd *exec.Cmd, exited <-chan struct{}) {
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Errorf("caddy did not stop within 20s of SIGTERM; killing it")
		_ = cmd.Process.Kill()
		<-exited
	}
}

// cleanup stops caddy and fails the test if any worker it ever showed is
// still alive (and then kills it, by pid).
func (c *caddyProc) cleanup() {
	var below []int
	select {
	case <-c.exited:
	default:
		_, _ = c.apps() // remember the last workers
		below = descendants(c.cmd.Process.Pid)
	}
	c.stop()
	for pid := range c.seenPID {
		if !waitGone(pid, 10*time.Second) {
			c.t.Errorf("worker %d outlived caddy; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range below { // the keeper, and whatever else Caddy started
		if !waitGone(pid, 10*time.Second) {
			c.t.Errorf("process %d (%s) outlived caddy; killing it", pid, cmdline(pid))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	log := c.log.String()
	ours, upstream := dataRaces(log)
	if len(upstream) > 0 {
		c.t.Logf("the race detector reported %d data race(s) in Caddy's or CertMagic's own code, with no Hearth code in them (not a Hearth bug; report them upstream):\n%s", len(upstream), strings.Join(upstream, "\n"))
	}
	if len(ours) > 0 || strings.Contains(log, "panic:") || strings.Contains(log, "http: panic serving") {
		c.t.Errorf("caddy reported a data race in Hearth's code or a panic:\n%s", log)
	} else if c.t.Failed() {
		c.t.Logf("caddy log:\n%s", tail(log, 60))
	}
}

// dataRaces splits the race detector's reports in a log into those with
// a frame of Hearth's code and the others (races inside Caddy or its
// libraries, which Hearth cannot fix). One race with Hearth's code in it
// is Caddy's too: the TLS app hands the certificate cache its config
// (SetOptions) at the start of its Provision, so the cache's maintenance
// reads the automation policies while the config that holds them is still
// being provisioned — by Caddy's own AutomationPolicy.Provision and by
// apps that add policies in theirs, as Caddy's API has them do (the ddns
// app's DNS challenge).
func dataRaces(log string) (ours, upstream []string) {
	parts := strings.Split(log, "WARNING: DATA RACE")
	for _, part := range parts[1:] {
		report, _, _ := strings.Cut(part, "==================")
		tlsCacheDuringProvision := strings.Contains(report, "certmagic.(*Cache).getConfig") &&
			strings.Contains(report, "caddy/v2.provisionContext(") && strings.Contains(report, "caddytls.(*TLS).getAutomationPolicyForName")
		if strings.Contains(report, "github.com/hearth-dev/hearth") && !tlsCacheDuringProvision {
			ours = append(ours, report)
		} else {
			upstream = append(upstream, report)
		}
	}
	return ours, upstream
}

// descendants lists every process below pid (children first).
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fields, err := supervisor.ProcStat(p)
		if err == nil && len(fields) > 1 {
			pp, _ := strconv.Atoi(fields[1])
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// cmdline is a process's command line, for messages.
func cmdline(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " "))
}

// waitGone waits until pid no longer runs.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !supervisor.Alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func removeFile(t testing.TB, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// dryRunDDNS is a global ddns block that detects ip (a static source) for
// home.example.test and changes nothing (dry_run; its DNS server is a
// closed port).
func dryRunDDNS(ip string) string {
	return `	ddns {
		provider rfc2136 {
			key_name k
			key_alg hmac-sha256
			key a2V5a2V5a2V5a2V5
			server 127.0.0.1:9
		}
		domains {
			example.test home
		}
		ip_source static ` + ip + `
		dry_run
	}`
}
