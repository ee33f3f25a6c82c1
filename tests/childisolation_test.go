package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// What every child Hearth starts (workers, a preload fork server and the
// workers it forks, before_start commands, the pre-launch check, process
// upstreams) gets from Caddy: a clean environment, a defined umask, and
// no file descriptor Caddy inherited. tests/apps/childprobe.py reports
// what it was given.

// childReport is what tests/apps/childprobe.py reports of its process.
type childReport struct {
	Pid   int               `json:"pid"`
	Env   map[string]string `json:"env"`
	Umask string            `json:"umask"`
	Fds   map[string]string `json:"fds"`
	// ChildFds: with ?child, those of a subprocess of the app
	ChildFds map[string]string `json:"child_fds"`
}

func childGet(t *testing.T, url string) childReport {
	t.Helper()
	resp, body := get(t, url)
	var r childReport
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &r) != nil {
		t.Fatalf("%s: %d %q", url, resp.StatusCode, body)
	}
	return r
}

func childRead(t *testing.T, path string) childReport {
	t.Helper()
	data, err := os.ReadFile(path)
	var r childReport
	if err != nil || json.Unmarshal(data, &r) != nil {
		t.Fatalf("the before_start report %s: %v %q", path, err, data)
	}
	return r
}

// childUmask is a process's umask, from /proc/<pid>/status.
func childUmask(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Umask in /proc/%d/status", pid)
	return ""
}

// childFds lists a process's open descriptors and what they point to.
func childFds(t *testing.T, pid int) map[string]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out[e.Name()] = target
		}
	}
	return out
}

// childApp finds an app (or process upstream) in GET /hearth/apps.
func childApp(t *testing.T, c *caddyProc, name string) appStatus {
	t.Helper()
	for _, a := range c.mustApps() {
		if a.Name == name {
			if len(a.Workers) == 0 {
				t.Fatalf("%s has no workers", name)
			}
			return a
		}
	}
	t.Fatalf("no app %s", name)
	return appStatus{}
}

// baseEnvName reports whether a variable belongs to a child's base
// environment.
func baseEnvName(k string) bool {
	switch k {
	case "PATH", "LANG", "TZ", "TMPDIR", "HOME", "USER", "LOGNAME":
		return true
	}
	return strings.HasPrefix(k, "LC_")
}

// checkCleanEnv fails unless env holds only the base and extra, and what
// it holds of Caddy's environment is as Caddy has it.
func checkCleanEnv(t *testing.T, who string, env map[string]string, home string, extra ...string) {
	t.Helper()
	var stray []string
	for k := range env {
		if !baseEnvName(k) && !slices.Contains(extra, k) {
			stray = append(stray, k)
		}
	}
	sort.Strings(stray)
	if len(stray) > 0 {
		t.Errorf("%s: variables outside the clean base: %v", who, stray)
	}
	if env["HOME"] != home {
		t.Errorf("%s: HOME=%q, want Caddy's %q", who, env["HOME"], home)
	}
	if want := os.Getenv("PATH"); env["PATH"] != want {
		t.Errorf("%s: PATH=%q, want Caddy's %q", who, env["PATH"], want)
	}
}

// TestWorkerIsolationEnvironment: a variable of Caddy's environment
// reaches no worker, before_start command or process upstream unless it
// is listed in env_inherit; they start from the documented base, and a
// variable Hearth sets wins over the same name in env.
func TestWorkerIsolationEnvironment(t *testing.T) {
	t.Setenv("HEARTH_TEST_SECRET", "caddy-only-secret")
	t.Setenv("APP_TEST_PASSED", "passed-on")
	ports := []int{freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)}
	c := startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi childprobe:application {
		name iso_clean
		dir {APPS}
		python {PYTHON}
		workers 1
		env FROM_ENV set-by-env
		env PYTHONUNBUFFERED ""
		before_start python childprobe.py write {TMP}/clean.json
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi childprobe:application {
		name iso_inherit
		dir {APPS}
		python {PYTHON}
		workers 1
		env_inherit APP_TEST_PASSED
		before_start python childprobe.py write {TMP}/inherit.json
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process {PYTHON} childprobe.py serve {
			name proc_clean
			dir {APPS}
		}
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process {PYTHON} childprobe.py serve {
			name proc_inherit
			dir {APPS}
			env_inherit APP_TEST_PASSED APP_TEST_ABSENT
		}
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process {PYTHON} childprobe.py serve {
			name proc_socket
			dir {APPS}
			socket
		}
	}
}`, ports[0], ports[1], ports[2], ports[3], ports[4]))
	url := func(i int) string { return fmt.Sprintf("http://127.0.0.1:%d/", ports[i]) }
	reports := []struct {
		who     string
		r       childReport
		extra   []string
		inherit bool
	}{
		{"the worker", childGet(t, url(0)), []string{"FROM_ENV", "PYTHONUNBUFFERED"}, false},
		{"before_start", childRead(t, filepath.Join(c.dir, "clean.json")), []string{"FROM_ENV", "PYTHONUNBUFFERED"}, false},
		{"the process upstream", childGet(t, url(2)), []string{"HOST", "PORT", "HEARTH_PORT"}, false},
		{"the worker with env_inherit", childGet(t, url(1)), []string{"APP_TEST_PASSED", "PYTHONUNBUFFERED"}, true},
		{"before_start with env_inherit", childRead(t, filepath.Join(c.dir, "inherit.json")), []string{"APP_TEST_PASSED", "PYTHONUNBUFFERED"}, true},
		{"the process upstream with env_inherit", childGet(t, url(3)), []string{"APP_TEST_PASSED", "HOST", "PORT", "HEARTH_PORT"}, true},
		{"the process upstream on a socket", childGet(t, url(4)), []string{"HEARTH_SOCKET"}, false},
	}
	for _, rep := range reports {
		env := rep.r.Env
		if _, ok := env["HEARTH_TEST_SECRET"]; ok {
			t.Errorf("%s sees HEARTH_TEST_SECRET from Caddy's environment", rep.who)
		}
		if v, ok := env["APP_TEST_PASSED"]; rep.inherit != ok || ok && v != "passed-on" {
			t.Errorf("%s: APP_TEST_PASSED=%q (set: %v), want it only with env_inherit", rep.who, v, ok)
		}
		checkCleanEnv(t, rep.who, env, c.dir, rep.extra...)
		if slices.Contains(rep.extra, "HOST") && env["HOST"] != "127.0.0.1" {
			t.Errorf("%s: HOST=%q, want 127.0.0.1 (what it binds when it honours HOST)", rep.who, env["HOST"])
		}
	}
	for _, rep := range reports[:2] { // env PYTHONUNBUFFERED "" loses to Hearth's
		if env := rep.r.Env; env["FROM_ENV"] != "set-by-env" || env["PYTHONUNBUFFERED"] != "1" {
			t.Errorf("%s: env and Hearth's own variables are missing: %v", rep.who, env)
		}
	}
}

// TestWorkerIsolationCheckEnvironment: the pre-launch check imports the
// app in the clean environment too: FLASK_DEBUG=1 in Caddy's environment
// is no finding, unless passed with env_inherit.
func TestWorkerIsolationCheckEnvironment(t *testing.T) {
	t.Setenv("FLASK_DEBUG", "1")
	config := func(options string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi childprobe:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		guard enforce
		%s
	}
}`, freePort(t), options)
	}
	c := startCaddy(t, config(""))
	for _, f := range c.mustApps()[0].Findings {
		if f.ID == "HG-ENV-01" {
			t.Errorf("the check saw Caddy's FLASK_DEBUG: %s", f.Problem)
		}
	}
	if log := refused(t, config("env_inherit FLASK_DEBUG")); !strings.Contains(log, "HG-ENV-01") || !strings.Contains(log, "FLASK_DEBUG") {
		t.Errorf("with env_inherit FLASK_DEBUG the check does not report it:\n%s", tail(log, 10))
	}
}

// TestWorkerIsolationUmask: workers (spawned, or forked from a preload
// fork server), before_start and process upstreams get the documented
// default umask 0027, or the `umask` option's; Caddy's own is untouched.
func TestWorkerIsolationUmask(t *testing.T) {
	t.Parallel()
	ports := []int{freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)}
	c := startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi childprobe:application {
		name umask_default
		dir {APPS}
		python {PYTHON}
		workers 1
		before_start python childprobe.py write {TMP}/default.json
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi childprobe:application {
		name umask_strict
		dir {APPS}
		python {PYTHON}
		workers 1
		preload
		umask 0077
		before_start python childprobe.py write {TMP}/strict.json
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process {PYTHON} childprobe.py serve {
			name umask_proc_default
			dir {APPS}
		}
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process {PYTHON} childprobe.py serve {
			name umask_proc_group
			dir {APPS}
			umask 0002
		}
	}
}`, ports[0], ports[1], ports[2], ports[3]))
	mine := childUmask(t, os.Getpid())
	if got := childUmask(t, c.cmd.Process.Pid); got != mine {
		t.Errorf("Caddy's own umask changed: %s, it was started with %s", got, mine)
	}
	strict := childApp(t, c, "umask_strict")
	if strict.ForkServerPid == 0 {
		t.Fatalf("umask_strict has no fork server")
	}
	for _, tc := range []struct {
		who  string
		pid  int
		want string
	}{
		{"the worker", childApp(t, c, "umask_default").Workers[0].Pid, "0027"},
		{"the worker forked from the fork server", strict.Workers[0].Pid, "0077"},
		{"the fork server", strict.ForkServerPid, "0077"},
		{"the process upstream", childApp(t, c, "umask_proc_default").Workers[0].Pid, "0027"},
		{"the process upstream with umask 0002", childApp(t, c, "umask_proc_group").Workers[0].Pid, "0002"},
	} {
		if got := childUmask(t, tc.pid); got != tc.want {
			t.Errorf("%s (pid %d) has umask %s, want %s", tc.who, tc.pid, got, tc.want)
		}
	}
	for name, want := range map[string]string{"default": "0027", "strict": "0077"} {
		if got := childRead(t, filepath.Join(c.dir, name+".json")).Umask; got != want {
			t.Errorf("before_start of umask_%s has umask %s, want %s", name, got, want)
		}
	}
	// and it applies to what they create
	for name, want := range map[string]os.FileMode{"default": 0o640, "strict": 0o600} {
		info, err := os.Stat(filepath.Join(c.dir, name+".json.created"))
		if err != nil || info.Mode().Perm() != want {
			t.Errorf("a file before_start of umask_%s created: %v %v, want mode %o", name, info.Mode(), err, want)
		}
	}
}

// TestWorkerIsolationFileDescriptors: a descriptor Caddy inherited
// without close-on-exec (a file, and a listening socket Caddy itself
// serves on through `bind fd/4`) reaches no child: a worker holds 0-2 and
// its channel, a preload worker and its fork server the same, before_start
// 0-2, a process upstream 0-2 and its own sockets, and a subprocess of
// the app no channel. Caddy keeps both and serves on the socket.
func TestWorkerIsolationFileDescriptors(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "inherited-marker")
	writeFile(t, marker, "caddy's, not the apps'\n")
	markerFile, err := os.Open(marker)
	if err != nil {
		t.Fatal(err)
	}
	defer markerFile.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	fdPort := ln.Addr().(*net.TCPAddr).Port
	ports := []int{freePort(t), freePort(t), freePort(t)}
	c := launchCaddyWithFiles(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind fd/4
	respond "served on an inherited socket"
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi childprobe:application {
		name fd_plain
		dir {APPS}
		python {PYTHON}
		workers 1
		before_start python childprobe.py write {TMP}/fds.json
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi childprobe:application {
		name fd_preload
		dir {APPS}
		python {PYTHON}
		workers 1
		preload
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process {PYTHON} childprobe.py serve {
			name fd_proc
			dir {APPS}
		}
	}
}`, fdPort, ports[0], ports[1], ports[2]), "", []*os.File{markerFile, lnFile})
	c.waitRunning()
	if resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", fdPort)); resp.StatusCode != 200 || body != "served on an inherited socket" {
		t.Errorf("Caddy's fd/4 listener: %d %q", resp.StatusCode, body)
	}
	caddyFds := childFds(t, c.cmd.Process.Pid)
	listener := caddyFds["4"]
	if caddyFds["3"] != marker || !strings.HasPrefix(listener, "socket:") {
		t.Fatalf("Caddy does not hold the inherited descriptors: 3=%q 4=%q", caddyFds["3"], listener)
	}
	// what each child holds beyond 0-2: only sockets, none Caddy's
	// listener, and exactly as many as Hearth gives it channels
	check := func(who string, fds map[string]string, sockets int) {
		t.Helper()
		got := 0
		for fd, target := range fds {
			n, _ := strconv.Atoi(fd)
			switch {
			case target == marker || target == listener:
				t.Errorf("%s holds Caddy's inherited fd: %s -> %s", who, fd, target)
			case n <= 2:
			case strings.HasPrefix(target, "socket:"):
				got++
			default:
				t.Errorf("%s holds fd %s -> %s", who, fd, target)
			}
		}
		for _, fd := range []string{"0", "1", "2"} {
			if _, ok := fds[fd]; !ok {
				t.Errorf("%s has no fd %s", who, fd)
			}
		}
		if sockets >= 0 && got != sockets {
			t.Errorf("%s holds %d sockets beyond 0-2, want %d: %v", who, got, sockets, fds)
		}
	}
	plain := childApp(t, c, "fd_plain").Workers[0].Pid
	plainFds := childFds(t, plain)
	check("the worker", plainFds, 1)
	if _, ok := plainFds["3"]; !ok || len(plainFds) != 4 {
		t.Errorf("the worker's descriptors are not 0-3: %v", plainFds)
	}
	preload := childApp(t, c, "fd_preload")
	check("the forked worker", childFds(t, preload.Workers[0].Pid), 1)
	// the fork server holds a pidfd of each worker it forked (it waits for
	// them before it leaves, once a restart replaced it), and nothing else
	serverFds := childFds(t, preload.ForkServerPid)
	pidfds := 0
	for fd, target := range serverFds {
		if target == "anon_inode:[pidfd]" {
			pidfds++
			delete(serverFds, fd)
		}
	}
	if pidfds > len(preload.Workers) {
		t.Errorf("the fork server holds %d pidfds for %d workers", pidfds, len(preload.Workers))
	}
	check("the fork server", serverFds, 1)
	check("before_start", childRead(t, filepath.Join(c.dir, "fds.json")).Fds, 0)
	check("the process upstream", childFds(t, childApp(t, c, "fd_proc").Workers[0].Pid), -1) // its listener and connections
	// the worker's own view agrees; a subprocess of the app that takes
	// every inheritable descriptor gets no channel (nor anything else)
	for i, who := range []string{"the worker", "the forked worker"} {
		r := childGet(t, fmt.Sprintf("http://127.0.0.1:%d/?child", ports[i]))
		if i == 0 && (r.Pid != plain || len(r.Fds) != 4) {
			t.Errorf("the worker reports %v", r.Fds)
		}
		check("a subprocess of "+who, r.ChildFds, 0)
	}
}

// TestWorkerIsolationAccountEnvironment: HOME, USER and LOGNAME are those
// of the account the app runs as, here the default account of apps
// (HEARTH_DEFAULT_USER), not Caddy's.
func TestWorkerIsolationAccountEnvironment(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching to another account needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	dir := readableAppDir(t, "childprobe.py")
	t.Setenv("HEARTH_DEFAULT_USER", "nobody")
	port := freePort(t)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi childprobe:application {
		dir %s
		python {PYTHON}
		workers 1
		guard enforce {
			allow HG-ADMIN-01
		}
	}
}`, port, dir))
	env := childGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port)).Env
	if env["USER"] != "nobody" || env["LOGNAME"] != "nobody" || env["HOME"] != nobody.HomeDir {
		t.Errorf("the app running as nobody has USER=%q LOGNAME=%q HOME=%q, want nobody's (home %s)", env["USER"], env["LOGNAME"], env["HOME"], nobody.HomeDir)
	}
}

// TestWorkerIsolationSession: Caddy started from a login's shell (`sudo
// caddy run`) shares that session's controlling terminal and session
// keyring; none of its children may. With the terminal, the app's code
// (running as the pool's `user`) could open /dev/tty and push a command
// into the shell's input with TIOCSTI, to be run as root when Caddy stops;
// with the keyring, it possesses the login's kernel keys (a Kerberos
// ticket, an encrypted home's passphrase) and can read them whatever its
// account. Nor may a child keep a real-time or raised CPU or I/O priority,
// or a personality without address randomization, that Caddy was started
// with (`chrt`, `nice`, `ionice`, `setarch -R`): the app's account could
// not have set them, and one busy loop at a real-time priority takes a
// CPU from everything else. Caddy runs here as the session leader of a
// pseudo-terminal, with a session keyring holding a key and those
// priorities (as far as this machine allows: the test checks what Caddy
// got); a worker, and a command of `caddy hearth exec` as the app's user,
// try all of it.
func TestWorkerIsolationSession(t *testing.T) {
	t.Parallel()
	master, slave := openPty(t)
	dir := readableAppDir(t, "sessionprobe.py")
	account := ""
	if os.Geteuid() == 0 {
		account = "user nobody" // the privilege boundary the attacks cross
	}
	port, otherPort := freePort(t), freePort(t)
	c := newCaddyProc(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi sessionprobe:application {
		name probe
		dir %[3]s
		python {PYTHON}
		workers 1
		before_start python sessionprobe.py report none
		%[4]s
		guard enforce {
			allow HG-ADMIN-01 # the harness's admin API is on TCP
		}
	}
}
http://127.0.0.1:%[2]d {
	bind 127.0.0.1
	wsgi sessionprobe:application {
		name other
		dir %[3]s
		python {PYTHON}
		workers 1
		%[4]s
		guard enforce {
			allow HG-ADMIN-01
		}
	}
}`, port, otherPort, dir, account), "")
	const keyName, secret = "hearth-test-login-key", "the-login's-secret"
	loginReport := filepath.Join(t.TempDir(), "login.json")
	withKeyring := func(cmd *exec.Cmd) *exec.Cmd { // cmd, started with the login's keyring
		wrapped := exec.Command(pythonPath(), append([]string{filepath.Join(dir, "sessionprobe.py"), "login", loginReport, keyName, secret, cmd.Path}, cmd.Args[1:]...)...)
		wrapped.Env, wrapped.Dir = cmd.Env, cmd.Dir
		return wrapped
	}
	c.cmd = withKeyring(c.cmd)
	c.cmd.Stdin = slave
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	c.start()
	c.waitRunning()

	if sessionTTY(t, c.cmd.Process.Pid) == 0 {
		t.Fatal("caddy has no controlling terminal: the test did not set up the attack")
	}
	const mark = "hearth-tiocsti-mark"
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/?push=%s&key=%s", port, mark, keyName))
	var r sessionReport
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("the probe's answer %q: %v", body, err)
	}
	// what the login wrapper could set here (a container's system call
	// filter may refuse some): each check below runs only for what caddy got
	caddy := caddyPriority(t, c.cmd.Process.Pid)
	t.Logf("caddy started with %+v", caddy)
	var login struct{ Keyring string }
	if data, err := os.ReadFile(loginReport); err != nil || json.Unmarshal(data, &login) != nil {
		t.Fatalf("the login wrapper's report: %v %q", err, data)
	}
	keyring := login.Keyring == "yes"
	if !keyring {
		t.Logf("no session keyring checks: %s", login.Keyring)
	}
	if caddy.OOMScoreAdj >= 0 {
		t.Logf("no oom_score_adj checks: the login wrapper could not lower caddy's (it needs CAP_SYS_RESOURCE)")
	}
	checkPriority(t, "a worker", caddy, r)
	checkSignals(t, "a worker", r)
	// a process that is not a worker has no runtime to unblock its signals
	checkSignals(t, "a before_start command", beforeStartReport(t, c))
	if r.Tty == "opened" || r.Pushed == "yes" {
		t.Errorf("a worker reached Caddy's terminal: /dev/tty %s, TIOCSTI %s", r.Tty, r.Pushed)
	}
	if keyring && r.Key != "ENOKEY" {
		t.Errorf("a worker looking for the login's key in its session keyring got %q, want ENOKEY", r.Key)
	}
	// one app's key is not another's
	_, body = get(t, fmt.Sprintf("http://127.0.0.1:%d/?add=hearth-test-app-key&key=hearth-test-app-key", otherPort))
	var r1, r2 sessionReport
	if err := json.Unmarshal([]byte(body), &r1); err != nil {
		t.Fatalf("the probe's answer %q: %v", body, err)
	}
	if keyring && r1.Key != "this app's key" {
		t.Fatalf("the other app could not keep a key of its own: %q", r1.Key)
	}
	_, body = get(t, fmt.Sprintf("http://127.0.0.1:%d/?push=&key=hearth-test-app-key", port))
	if err := json.Unmarshal([]byte(body), &r2); err != nil {
		t.Fatalf("the probe's answer %q: %v", body, err)
	}
	if keyring && r2.Key != "ENOKEY" {
		t.Errorf("a worker of one app looking for a key another app's worker put in its session keyring got %q, want ENOKEY", r2.Key)
	}
	below := descendants(c.cmd.Process.Pid)
	if len(below) < 2 {
		t.Fatalf("expected the keeper and a worker below caddy, found %v", below)
	}
	for _, pid := range below {
		if tty := sessionTTY(t, pid); tty != 0 {
			t.Errorf("process %d (%s) has caddy's terminal (%#x) as its controlling terminal", pid, cmdline(pid), tty)
		}
	}
	// what the terminal echoed: nothing typed by the app
	if err := master.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	echoed, _ := io.ReadAll(master)
	if strings.Contains(string(echoed), mark) {
		t.Errorf("the terminal received the app's keystrokes: %q", echoed)
	}

	// caddy hearth exec, run by the login as the app's user
	if account == "" {
		return // the same account on both sides: nothing to cross
	}
	cli := exec.Command(caddyBinary(t), "hearth", "exec", "--user", "nobody", "probe", "--", "python", "sessionprobe.py", "report", keyName)
	cli.Dir, cli.Env = c.dir, append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(c.dir, "data"))
	out, err := withKeyring(cli).CombinedOutput()
	var e sessionReport
	if err != nil || json.Unmarshal(out[bytes.LastIndexByte(bytes.TrimSpace(out), '\n')+1:], &e) != nil {
		t.Fatalf("caddy hearth exec: %v\n%s", err, out)
	}
	if e.UID == 0 || keyring && e.Key != "ENOKEY" {
		t.Errorf("caddy hearth exec as the app's user (uid %d) looking for the login's key got %q, want ENOKEY", e.UID, e.Key)
	}
	checkPriority(t, "caddy hearth exec as the app's user", caddy, e)
	checkSignals(t, "caddy hearth exec as the app's user", e)

	// nor what the login had open: a descriptor caddy inherited without
	// close-on-exec (a root shell's `exec 3<file`) does not reach the
	// command (supervisor's init marks them all, as for workers)
	rootOnly := filepath.Join(t.TempDir(), "root-only")
	if err := os.WriteFile(rootOnly, []byte("root's\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inherited, err := os.Open(rootOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer inherited.Close()
	cli = exec.Command(caddyBinary(t), "hearth", "exec", "--user", "nobody", "probe", "--", "python", "-c",
		"import os\nfor fd in os.listdir('/proc/self/fd'):\n    try: print('fd', fd, os.readlink('/proc/self/fd/' + fd))\n    except OSError: pass")
	cli.Dir, cli.Env = c.dir, append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(c.dir, "data"))
	cli.ExtraFiles = []*os.File{inherited}
	out, err = cli.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fd 0 ") || strings.Contains(string(out), rootOnly) {
		t.Errorf("caddy hearth exec as the app's user, run holding a root-only file open (fd 3): want the command's descriptors without it: %v\n%s", err, out)
	}

	// caddy hearth exec as the app's user, run from a terminal, is still
	// interactive: its command reads what is typed and writes to the screen
	execMaster, exited := execInTerminal(t, c.dir, "python", "-c", "print('reversed:', input('say: ')[::-1])")
	waitShown(t, execMaster, "say: ")
	if _, err := execMaster.Write([]byte("olleh\r")); err != nil {
		t.Fatal(err)
	}
	waitShown(t, execMaster, "reversed: hello")
	waitExec(t, exited)

	// what the command prints reaches the terminal with its colours, but
	// not what acts beyond the screen: OSC 52 writes the terminal's
	// clipboard (a command for root to paste), tmux passes on what DCS wraps
	execMaster, exited = execInTerminal(t, c.dir, "python", "-c", `print("\x1b]52;c;Y3VybCBldmlsfHNo\x07\x1b[31mred\x1b[0m \x1bPtmux;\x1b\x1b]52;c;QQ==\x07\x1b\\\u009d0;title\u009cshown")`)
	shown := waitShown(t, execMaster, "shown")
	waitExec(t, exited)
	if !bytes.Contains(shown, []byte("\x1b[31mred\x1b[0m ")) || bytes.Contains(shown, []byte("52;c")) || bytes.Contains(shown, []byte("\u009d")) || bytes.Contains(shown, []byte("tmux")) {
		t.Errorf("caddy hearth exec's terminal showed %q: want the colours, and neither the clipboard's sequence (OSC 52), DCS nor C1 controls", shown)
	}

	// a command that leaves the terminal reporting the mouse (what the
	// mouse does would be typed into root's shell), its text and cursor
	// hidden: the modes are set back once it has ended
	execMaster, exited = execInTerminal(t, c.dir, "python", "-c", `print("\x1b[?1000h\x1b[?1006h\x1b[8m\x1b[?25lmodes-left-set")`)
	after := waitShown(t, execMaster, "modes-left-set")
	waitExec(t, exited)
	buf := make([]byte, 4096)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		execMaster.SetReadDeadline(time.Now().Add(time.Second))
		n, err := execMaster.Read(buf)
		after = append(after, buf[:n]...)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			break // (EIO: every end of the terminal is closed)
		}
	}
	_, after, _ = bytes.Cut(after, []byte("modes-left-set"))
	for _, reset := range []string{"\x1b[?1000l", "\x1b[?1006l", "\x1b[0m", "\x1b[?25h"} {
		if !bytes.Contains(after, []byte(reset)) {
			t.Errorf("after a command that left modes set, the terminal was not sent %q: %q", reset, after)
		}
	}

	// a command that leaves a process behind: once it has ended, what is
	// typed next is the shell's
	lootDir := t.TempDir()
	os.Chmod(lootDir, 0o777)
	loot := filepath.Join(lootDir, "loot")
	execMaster, exited = execInTerminal(t, c.dir, "python", "sessionprobe.py", "linger", loot)
	waitShown(t, execMaster, "hello from the command")
	waitExec(t, exited)
	waitFor(t, 10*time.Second, "the process the command left behind", func() bool {
		data, _ := os.ReadFile(loot)
		return bytes.Contains(data, []byte("left behind"))
	})
	const typed = "the-root-password\n"
	if _, err := execMaster.Write([]byte(typed)); err != nil {
		t.Fatal(err)
	}
	var data []byte
	waitFor(t, 10*time.Second, "the process left behind to end its read", func() bool {
		data, _ = os.ReadFile(loot)
		return bytes.Contains(data, []byte("read: "))
	})
	if !bytes.Contains(data, []byte("read: b''")) && !bytes.Contains(data, []byte("read: b'(EIO)'")) {
		t.Errorf("a process the command left behind still had a terminal once it ended (want end-of-file or EIO):\n%s", data)
	}
	var lingering int
	if _, err := fmt.Sscanf(string(data), "left behind: pid %d", &lingering); err == nil && !waitGone(lingering, 5*time.Second) {
		_ = syscall.Kill(lingering, syscall.SIGKILL)
	}
}

// execInTerminal runs `caddy hearth exec --user nobody <app "probe"> -- args…` in dir (run as root),
// from a new terminal (as the session leader of a pseudo-terminal, as a
// shell's command is in its foreground): the terminal's master, and where
// the command's end is sent.
func execInTerminal(t *testing.T, dir string, args ...string) (*os.File, chan error) {
	t.Helper()
	master, slave := openPty(t)
	cli := exec.Command(caddyBinary(t), append([]string{"hearth", "exec", "--user", "nobody", "probe", "--"}, args...)...)
	cli.Dir, cli.Env = dir, append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	cli.Stdin, cli.Stdout, cli.Stderr = slave, slave, slave
	cli.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	exited := make(chan error, 1)
	go func() { exited <- cli.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cli.Process.Kill()
		}
	})
	return master, exited
}

// waitShown reads the terminal until it has shown text (30 s at most),
// and returns what it showed.
func waitShown(t *testing.T, master *os.File, text string) []byte {
	t.Helper()
	var shown []byte
	buf := make([]byte, 4096)
	for deadline := time.Now().Add(30 * time.Second); !bytes.Contains(shown, []byte(text)); {
		if time.Now().After(deadline) {
			t.Fatalf("the terminal did not show %q: %q", text, shown)
		}
		master.SetReadDeadline(time.Now().Add(time.Second))
		n, _ := master.Read(buf)
		shown = append(shown, buf[:n]...)
	}
	return shown
}

// waitExec waits for caddy hearth exec to end, successfully.
func waitExec(t *testing.T, exited chan error) {
	t.Helper()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("caddy hearth exec: %v", err)
		}
		exited <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("caddy hearth exec did not end with its command")
	}
}

// sessionReport is what tests/apps/sessionprobe.py reports.
type sessionReport struct {
	UID              int
	Tty, Pushed, Key string
	priority
	SigBlocked uint64 `json:"sig_blocked"` // bit n-1: signal n
	SigIgnored uint64 `json:"sig_ignored"`
}

// priority is a process's CPU and I/O priority and personality.
type priority struct {
	Nice        int
	Policy      int // SCHED_*
	IOClass     int `json:"io_class"` // IOPRIO_CLASS_*
	Personality uint32
	OOMScoreAdj int `json:"oom_score_adj"`
}

const (
	schedFIFO       = 1
	ioprioClassRT   = 1
	addrNoRandomize = 0x0040000
)

// caddyPriority reads a process's priority from /proc and ioprio_get.
func caddyPriority(t *testing.T, pid int) priority {
	t.Helper()
	fields, err := supervisor.ProcStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) < 41-3+1 {
		t.Fatalf("/proc/%d/stat: %q", pid, fields)
	}
	var p priority
	p.Nice, _ = strconv.Atoi(fields[19-3])
	p.Policy, _ = strconv.Atoi(fields[41-3])
	persona, err := os.ReadFile(fmt.Sprintf("/proc/%d/personality", pid))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(persona)), 16, 32)
	p.Personality = uint32(v)
	io, _, errno := syscall.Syscall(syscall.SYS_IOPRIO_GET, 1, uintptr(pid), 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	p.IOClass = int(io >> 13)
	oom, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	if err != nil {
		t.Fatal(err)
	}
	p.OOMScoreAdj, _ = strconv.Atoi(strings.TrimSpace(string(oom)))
	return p
}

// checkPriority fails unless what a child of caddy reports is none of the
// raised priorities caddy has.
func checkPriority(t *testing.T, who string, caddy priority, child sessionReport) {
	t.Helper()
	if child.IOClass < 0 {
		t.Errorf("%s could not read its I/O class", who)
	}
	if caddy.Nice < 0 && child.Nice < 0 {
		t.Errorf("%s kept caddy's nice value %d", who, child.Nice)
	}
	if caddy.Policy == schedFIFO && child.Policy == schedFIFO {
		t.Errorf("%s kept caddy's real-time scheduling policy", who)
	}
	if caddy.IOClass == ioprioClassRT && child.IOClass == ioprioClassRT {
		t.Errorf("%s kept caddy's real-time I/O class", who)
	}
	if child.Personality&addrNoRandomize != 0 {
		t.Errorf("%s runs without address randomization (personality %#x)", who, child.Personality)
	}
	if caddy.OOMScoreAdj < 0 && child.OOMScoreAdj < 0 {
		t.Errorf("%s kept caddy's oom_score_adj %d: the OOM killer would spare it", who, child.OOMScoreAdj)
	}
}

// checkSignals fails if a worker has a signal blocked or ignored that
// Caddy uses to stop it or have it dump its stacks (the login wrapper
// blocks them, and ignores SIGTERM, before it starts Caddy).
func checkSignals(t *testing.T, who string, child sessionReport) {
	t.Helper()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGHUP} {
		bit := uint64(1) << (sig - 1)
		if child.SigBlocked&bit != 0 {
			t.Errorf("%s has %v blocked, as it was where Caddy was started", who, sig)
		}
		if sig == syscall.SIGTERM && child.SigIgnored&bit != 0 {
			t.Errorf("%s ignores %v, as it was ignored where Caddy was started", who, sig)
		}
	}
}

// beforeStartReport is what `sessionprobe.py report`, run as the
// before_start command, printed: Caddy logs it.
func beforeStartReport(t *testing.T, c *caddyProc) sessionReport {
	t.Helper()
	for _, line := range strings.Split(c.log.String(), "\n") {
		var entry struct{ Msg, Output string }
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg != "before_start finished" {
			continue
		}
		var r sessionReport
		if err := json.Unmarshal([]byte(entry.Output), &r); err != nil {
			t.Fatalf("before_start's report %q: %v", entry.Output, err)
		}
		return r
	}
	t.Fatalf("no before_start report in Caddy's log:\n%s", c.log.String())
	return sessionReport{}
}

// readableAppDir copies apps of tests/apps into a new directory that
// every account can read (the app of a pool with another `user`).
func readableAppDir(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	for _, name := range names {
		src, err := os.ReadFile(repoPath("tests", "apps", name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name), string(src))
		os.Chmod(filepath.Join(dir, name), 0o644)
	}
	return dir
}

// openPty opens a pseudo-terminal: its master, and its slave for a child's
// standard input.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminal: %v", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx") // non-blocking: read deadlines work
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// sessionTTY is a process's controlling terminal (0: none), from
// /proc/<pid>/stat.
func sessionTTY(t *testing.T, pid int) int {
	t.Helper()
	fields, err := supervisor.ProcStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) < 5 {
		t.Fatalf("/proc/%d/stat: %q", pid, fields)
	}
	tty, _ := strconv.Atoi(fields[7-3])
	return tty
}

// TestConfigReaderLeavesTheSession: as root, `caddy hearth check --user`
// reads a config another account may have written with a child running
// as that account; that child, like every process Hearth starts as an
// app's account, leaves the login's session first: no blocked signals,
// raised priority or real-time policy of the login (nor its session
// keyring, which /proc does not show). It kept them all before, and the
// account's processes could take the login's keys from it. The config
// here is a FIFO (as a JSON config, read with cat), which holds the
// reader while the test looks at it.
func TestConfigReaderLeavesTheSession(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	t.Parallel()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	dir, err := os.MkdirTemp("", "hearth-reader-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	config := filepath.Join(dir, "config.json")
	if err := syscall.Mkfifo(config, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chown(config, uid, gid)
	cli := exec.Command(pythonPath(), repoPath("tests", "apps", "sessionprobe.py"), "login", filepath.Join(t.TempDir(), "login.json"),
		"hearth-test-reader-key", "the-login's-secret", caddyBinary(t), "hearth", "check", "--user", "nobody", "--config", config)
	var out lockedBuffer
	cli.Stdout, cli.Stderr = &out, &out
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cli.Wait(); close(exited) }()
	t.Cleanup(func() {
		cli.Process.Kill()
		<-exited
	})
	reader := 0
	waitFor(t, 20*time.Second, "the config's reader, a child of the command", func() bool {
		procs, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, p := range procs {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if fields, err := supervisor.ProcStat(pid); err == nil && len(fields) > 1 && fields[1] == strconv.Itoa(cli.Process.Pid) {
				if comm, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "comm")); strings.TrimSpace(string(comm)) == "cat" {
					reader = pid
					return true
				}
			}
		}
		return false
	})
	login := caddyPriority(t, cli.Process.Pid)
	got := caddyPriority(t, reader)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", reader))
	if err != nil {
		t.Fatal(err)
	}
	var child sessionReport
	child.priority = got
	child.IOClass = max(child.IOClass, 0) // (read from outside; checkPriority wants it known)
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
			child.SigBlocked, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			child.UID, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	if child.UID != uid {
		t.Fatalf("the reader runs as uid %d, want nobody's %d: the test did not set up what it checks", child.UID, uid)
	}
	t.Logf("the login gave caddy %+v", login)
	checkPriority(t, "the config's reader", login, child)
	checkSignals(t, "the config's reader", child)
	f, err := os.OpenFile(config, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("{}")
	f.Close()
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("caddy hearth check did not end once its config was read:\n%s", out.String())
	}
}
