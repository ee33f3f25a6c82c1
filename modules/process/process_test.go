package process

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// TestResolveEnv: an instance's environment may not carry a PORT or a
// HEARTH_ name of the user's, which would shadow the ones Hearth sets, nor
// anything a process cannot be started with.
func TestResolveEnv(t *testing.T) {
	t.Setenv("PORT", "8000")
	dir := t.TempDir()
	portFile := filepath.Join(dir, "port.env")
	if err := os.WriteFile(portFile, []byte("PORT=8000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const portErr = ": Hearth sets PORT to each instance's own port"
	for _, tc := range []struct {
		name string
		u    Upstreams
		err  string
	}{
		{"a plain command", Upstreams{}, ""},
		{"PORT in env", Upstreams{Env: map[string]string{"PORT": "8000"}}, "env PORT" + portErr},
		{"PORT in env_file", Upstreams{EnvFile: portFile}, "env_file " + portFile + portErr},
		{"PORT from Caddy's environment", Upstreams{EnvInherit: []string{"PORT"}}, "env_inherit PORT" + portErr},
		{"PORT with socket, where Hearth sets none", Upstreams{Socket: true, Env: map[string]string{"PORT": "8000"}}, ""},
		{"a NUL in an argument", Upstreams{Command: []string{"/bin/true", "a\x00b"}}, "the command: argument 1 holds a NUL byte"},
		{"a NUL in env", Upstreams{Env: map[string]string{"A": "a\x00b"}}, "env: A: the value holds a NUL byte"},
		{"a name that is a path", Upstreams{Name: "../../x"}, `process name "../../x" may hold only letters`},
		{"a HEARTH_ name", Upstreams{Socket: true, Env: map[string]string{"HEARTH_SOCKET": "/tmp/x"}}, "env: HEARTH_SOCKET: names starting with HEARTH_ are Hearth's own"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.u
			if u.Command == nil {
				u.Command = []string{"/bin/true"}
			}
			u.Dir, u.User, u.AllowRoot = dir, "", true
			_, err := u.resolve()
			if tc.err == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// TestSocketAsAnotherAccount: `socket` with an instance of another account
// is refused when the config loads, saying what to do: that account could
// never create its socket in Caddy's directory (the instance failed to
// start, with only its own error in the log).
func TestSocketAsAnotherAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("another account needs root")
	}
	u := Upstreams{Command: []string{"/bin/true"}, Dir: t.TempDir(), User: "nobody", Socket: true}
	if _, err := u.resolve(); err == nil || !strings.Contains(err.Error(), "socket: the instances run as nobody") || !strings.Contains(err.Error(), "remove `socket`") {
		t.Errorf("socket as nobody: %v", err)
	}
	u.Socket = false
	if _, err := u.resolve(); err != nil {
		t.Errorf("a port as nobody: %v", err)
	}
}

// A refused process upstream is named by its program (and name), never
// with its arguments: they may carry a password (`--requirepass`), and
// the log reaches more readers than the config.
func TestRefusalShowsNoArguments(t *testing.T) {
	u := &Upstreams{Name: "cache", Command: []string{"/usr/bin/redis-server", "--requirepass", "hunter2"}, Env: map[string]string{"PORT": "1"}}
	err := u.Provision(caddy.Context{})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "cache (/usr/bin/redis-server)") {
		t.Errorf("refusal: %v", err)
	}
}

// A group is stopped once, however often Caddy destructs it, and says
// when it has stopped (the instance lock waits for that).
func TestGroupStopsOnce(t *testing.T) {
	g := newGroup(&spec{Name: "api"}, zap.NewNop())
	for range 2 {
		if err := g.Destruct(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-g.Stopped():
	case <-time.After(5 * time.Second):
		t.Fatal("Stopped is not closed after Destruct")
	}
}

// TestReadyPathRedirectIsNotFollowed: an instance that answers its
// ready_path with a redirect is ready (an answer below 500), and the
// redirect is not followed: the program could otherwise have Caddy request
// any URL it names (another app on loopback, Caddy's admin API).
func TestReadyPathRedirectIsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer target.Close()
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/load/config", http.StatusFound)
	}))
	defer server.Close()
	g := newGroup(&spec{Name: "redirecting", ReadyPath: "/ready"}, zap.NewNop())
	in := &instance{network: "tcp", addr: strings.TrimPrefix(server.URL, "http://")}
	if !g.answers(readyClient(in), in) {
		t.Error("an instance answering 302 is not ready")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect was followed: %d requests reached where it pointed", n)
	}
}

// TestInstanceOutOfServiceWhenItsProcessEnds: an instance is taken out of
// service as soon as its process ends, not once its output is drained (up
// to 2 s later, when a descendant holds its pipes): its port is free from
// the end on, and an account that binds it then would receive the site's
// requests. Its exit still counts once as a crash.
func TestInstanceOutOfServiceWhenItsProcessEnds(t *testing.T) {
	g := newGroup(&spec{Name: "api"}, zap.NewNop())
	defer g.cancel()
	g.state = supervisor.Running
	// its output is held by a process of a session of its own, which
	// nothing kills with the instance: the drain lasts its full 2 s
	holder := filepath.Join(t.TempDir(), "holder")
	proc, err := supervisor.Start(supervisor.Command{Path: "/bin/sh", Args: []string{"-c", "setsid sh -c 'echo $$ > " + holder + "; exec sleep 60' & exec sleep 61"}, Env: []string{"PATH=/usr/bin:/bin"}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-proc.Pid(), syscall.SIGKILL)
		if data, err := os.ReadFile(holder); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(holder); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("the holder did not start")
		}
	}
	in := &instance{proc: proc, network: "tcp", addr: "127.0.0.1:1"}
	if !g.adopt(nil, in, nil, "") {
		t.Fatal("not adopted")
	}
	inService := func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return slices.Contains(g.instances, in)
	}
	if !inService() {
		t.Fatal("not in service once adopted")
	}
	_ = syscall.Kill(proc.Pid(), syscall.SIGKILL) // the shell; its sleep holds the output
	<-proc.Ended()
	for inService() {
		select {
		case <-proc.Done():
			t.Fatal("still in service when its output was drained, 2 s after its process ended")
		case <-time.After(5 * time.Millisecond):
		}
	}
	g.hooks().Exited(in)
	g.hooks().Exited(in) // a step run again after a panic
	if n := g.restarts["crash"]; n != 1 {
		t.Errorf("%d crashes counted, want 1", n)
	}
}

// TestFirstInstancesOutOfServiceWhenTheirProcessEnds: the instances a
// group starts with are taken out of service the moment their process
// ends, as those that replace them are (TestInstanceOutOfServiceWhenItsProcessEnds):
// they stayed until their output was drained, up to 2 s later, with
// their port free for another account to bind.
func TestFirstInstancesOutOfServiceWhenTheirProcessEnds(t *testing.T) {
	// its output held by a process of a session of its own
	g, in, _ := serverLeavingAChild(t, "setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' &")
	inService := func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return slices.Contains(g.instances, in)
	}
	_ = syscall.Kill(in.proc.Pid(), syscall.SIGKILL) // the server; the holder keeps its output open
	<-in.proc.Ended()
	for inService() {
		select {
		case <-in.proc.Done():
			t.Fatal("still in service when its output was drained, 2 s after its process ended")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestStopEndsWhatAnEndedInstanceLeft: an instance taken out of service as
// its process ended, whose end its replica has not handled yet (its
// output still draining, held by what it left in its group), is ended by
// the group's stop as its replica would have: what it left was not, and
// outlived the group.
func TestStopEndsWhatAnEndedInstanceLeft(t *testing.T) {
	// its output held by a process of its own group
	g, in, leftPid := serverLeavingAChild(t, "sleep 60 & echo $! > {pidfile};")
	_ = syscall.Kill(in.proc.Pid(), syscall.SIGKILL) // the server; its sleep keeps the output open
	<-in.proc.Ended()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) { // taken out
		g.mu.Lock()
		out := !slices.Contains(g.instances, in)
		g.mu.Unlock()
		if out {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not taken out of service")
		}
	}
	if err := g.Destruct(); err != nil {
		t.Fatal(err)
	}
	<-g.Stopped()
	for deadline := time.Now().Add(5 * time.Second); supervisor.Alive(leftPid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d, left by an ended instance, outlived its group's stop", leftPid)
		}
	}
}

// serverLeavingAChild starts a group of one instance, an HTTP server run
// by a shell that first runs leave, which starts a process that outlives
// the server and writes its pid to {pidfile}; it returns the group, its
// instance and that process, which the test's end kills (and the group).
func serverLeavingAChild(t *testing.T, leave string) (*Group, *instance, int) {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	pidfile := filepath.Join(t.TempDir(), "left")
	g := newGroup(&spec{Name: "api", Path: "/bin/sh", Workers: 1, StartTimeout: 30 * time.Second, StopSignal: syscall.SIGTERM, StopTimeout: time.Second,
		Args: []string{"-c", strings.ReplaceAll(leave, "{pidfile}", pidfile) + " exec " + python + " -m http.server $PORT --bind 127.0.0.1"}}, zap.NewNop())
	left := 0
	t.Cleanup(func() {
		_ = g.Destruct()
		if left > 1 {
			_ = syscall.Kill(left, syscall.SIGKILL)
		}
	})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); left == 0; time.Sleep(10 * time.Millisecond) {
		if data, err := os.ReadFile(pidfile); err == nil {
			left, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the process did not start what it leaves")
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g, g.instances[0], left
}

// TestResolveRefusesWhatCannotRun: a `dir` that is not there is named
// when the config loads (the start failed later as "fork/exec <program>:
// no such file or directory"), and a negative timeout is refused, not
// silently taken as the default.
func TestResolveRefusesWhatCannotRun(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	for _, tc := range []struct {
		u    Upstreams
		want string
	}{
		{Upstreams{Command: []string{"/bin/true"}, Dir: missing}, "dir " + missing + " does not exist"},
		{Upstreams{Command: []string{"/bin/true"}, StartTimeout: caddy.Duration(-time.Second)}, "start_timeout and stop_timeout must be positive"},
		{Upstreams{Command: []string{"/bin/true"}, StopTimeout: caddy.Duration(-time.Second)}, "start_timeout and stop_timeout must be positive"},
	} {
		if _, err := tc.u.resolve(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.u, err, tc.want)
		}
	}
}
