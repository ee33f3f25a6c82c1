package service

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

func TestConfigCheck(t *testing.T) {
	ok := Config{Name: "celery", Command: []string{"celery", "worker"}}
	for _, tc := range []struct {
		edit func(*Config)
		want string // "" for accepted
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.Name = "" }, "needs a name"},
		{func(c *Config) { c.Name = "a b" }, "may hold only"},
		{func(c *Config) { c.Name = "-x" }, "may hold only"},
		{func(c *Config) { c.Command = nil }, "has no command"},
		{func(c *Config) { c.Command = []string{" "} }, "has no command"},
		{func(c *Config) { c.Workers = MaxWorkers + 1 }, "workers must be"},
		{func(c *Config) { c.Workers = -1 }, "workers must be"},
		{func(c *Config) { c.StopSignal = "SIGKILL" }, "stop_signal"},
		{func(c *Config) { c.StopSignal = "sigint" }, ""},
		{func(c *Config) { c.Ready = &Ready{TCP: "6379"} }, "not a host:port"},
		{func(c *Config) { c.Ready = &Ready{TCP: "127.0.0.1:6379", Command: []string{"x"}} }, "either tcp or command"},
		{func(c *Config) { c.App = "mysite"; c.Dir = "/srv" }, "dir is the app's"},
		{func(c *Config) { c.App = "mysite"; c.AllowRoot = true }, "allow_root is the app's"},
		{func(c *Config) { c.EnvInherit = []string{"1BAD"} }, "not a variable name"},
		{func(c *Config) { c.Umask = "0999" }, "umask"},
	} {
		c := ok
		tc.edit(&c)
		err := c.Check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v refused: %v", c, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one saying %q", c, err, tc.want)
		}
	}
}

// TestResolveInApp: in an app's environment, a bare python is the app's
// interpreter, in the command and the ready command, and the app's
// directory, environment, account and umask apply.
func TestResolveInApp(t *testing.T) {
	app := supervisor.Command{Path: "/srv/venv/bin/python", Dir: "/srv/mysite", Env: []string{"SECRET_KEY=k"}, Umask: 0o077}
	c := Config{Name: "celery", App: "mysite", Command: []string{"python", "-m", "celery"}, Ready: &Ready{Command: []string{"python3", "-c", "1"}}}
	s, err := c.Resolve(&app)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path != app.Path || s.Ready.Command[0] != app.Path || s.Dir != app.Dir || s.Env[0] != "SECRET_KEY=k" || s.Umask != 0o077 ||
		s.Workers != 1 || s.StopSignal != syscall.SIGTERM || s.StartTimeout != DefaultStartTimeout || s.StopTimeout != DefaultStopTimeout {
		t.Errorf("resolved %+v", s)
	}
}

func pids(g *Group) []int {
	st := g.Status().(Status)
	var out []int
	for _, w := range st.Workers {
		out = append(out, w.Pid)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestGroupKeepsItsProcesses: real processes; one killed is replaced (a
// crash), a restart replaces each (stop first), a stop ends them all.
func TestGroupKeepsItsProcesses(t *testing.T) {
	s, err := (&Config{Name: "sleepers", Command: []string{"/bin/sh", "-c", "sleep 60 & wait"}, Workers: 2, StopTimeout: 2e9}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := New(s, zap.NewNop())
	defer g.Stop()
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	first := pids(g)
	if len(first) != 2 || !g.Running() {
		t.Fatalf("started %v", first)
	}
	_ = syscall.Kill(first[0], syscall.SIGKILL)
	waitFor(t, "the killed process replaced", func() bool {
		p := pids(g)
		return len(p) == 2 && p[0] != first[0] && p[1] != first[0]
	})
	if st := g.Status().(Status); st.Restarts["crash"] != 1 {
		t.Errorf("restarts %v, want one crash", st.Restarts)
	}
	before := pids(g)
	if err := g.Restart(); err != nil {
		t.Fatal(err)
	}
	after := pids(g)
	for _, p := range before {
		if len(after) != 2 || after[0] == p || after[1] == p {
			t.Errorf("restart kept %d: %v → %v", p, before, after)
		}
	}
	if st := g.Status().(Status); st.Restarts["reload"] != 2 || st.Restarts["crash"] != 1 {
		t.Errorf("restarts %v, want two reloads and one crash", st.Restarts)
	}
	g.Stop()
	for _, p := range after {
		if syscall.Kill(p, 0) == nil && !zombie(p) {
			t.Errorf("process %d outlived the group's stop", p)
		}
	}
}

func zombie(pid int) bool { return !supervisor.Alive(pid) }

// TestReadyTCPIsTheNewProcesss: with ready tcp, a port another process
// listens on does not make the service up: its own process must listen
// there. Here the test holds the port, the service's server cannot bind,
// and the start fails saying it exited.
func TestReadyTCPIsTheNewProcesss(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	server := []string{"/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", port}
	s, err := (&Config{Name: "web", Command: server, Ready: &Ready{TCP: addr}, StartTimeout: 20e9}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := New(s, zap.NewNop())
	defer g.Stop()
	if err := g.Start(); err == nil || !strings.Contains(err.Error(), "exited before it was up") {
		t.Fatalf("a service whose port another process holds started: %v", err)
	}
	l.Close()
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	addr = free.Addr().String()
	free.Close()
	_, port, _ = net.SplitHostPort(addr)
	s2, _ := (&Config{Name: "web2", Command: []string{"/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", port}, Ready: &Ready{TCP: addr}, StartTimeout: 20e9}).Resolve(nil)
	g2 := New(s2, zap.NewNop())
	defer g2.Stop()
	if err := g2.Start(); err != nil {
		t.Fatalf("the service on a free port: %v", err)
	}
	if !g2.Holds(addr) {
		t.Errorf("the running service does not hold %s", addr)
	}
}

// A service process that exits with status 0 right after its start has
// most likely put itself in the background: the log says to run it in the
// foreground (its background copy outlives Hearth's supervision).
func TestServiceThatDaemonizes(t *testing.T) {
	s, err := (&Config{Name: "daemon", Command: []string{"/bin/sh", "-c", "sleep 0.2"}, StopTimeout: 2e9}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.ErrorLevel)
	g := New(s, zap.New(core))
	defer g.Stop()
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the exit logged", func() bool { return logs.FilterMessage("service process exited; replacing it").Len() > 0 })
	entry := logs.FilterMessage("service process exited; replacing it").All()[0]
	if fix, _ := entry.ContextMap()["fix"].(string); !strings.Contains(fix, "must run in the foreground") {
		t.Errorf("an exit with status 0 right after the start: %v", entry.ContextMap())
	}
}

// TestReviveAfterDestructStartsNothing: a service a restore stopped
// (Stop) and a reload then took out (Destruct) is not started again by
// the restore's Revive: it would run with no config to stop it. One
// stopped only is started again.
func TestReviveAfterDestructStartsNothing(t *testing.T) {
	s, err := (&Config{Name: "sleeper", Command: []string{"/bin/sleep", "60"}, StopTimeout: 2e9}).Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := New(s, zap.NewNop())
	defer g.Stop()
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	g.Stop()
	if err := g.Revive(); err != nil || len(pids(g)) != 1 {
		t.Fatalf("a stopped service revived: %v, processes %v", err, pids(g))
	}
	g.Stop()
	if err := g.Destruct(); err != nil {
		t.Fatal(err)
	}
	if err := g.Revive(); err != nil {
		t.Fatal(err)
	}
	if p := pids(g); len(p) != 0 || g.Running() {
		t.Errorf("a service no config has was started again: %v", p)
	}
}
