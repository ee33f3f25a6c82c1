package process

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/netinfo"
	"github.com/hearth-dev/hearth/modules/safedir"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// Group is the set of instances of one process upstream (a hearth.Pool).
type Group struct {
	spec   *spec
	logger *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	loops  sync.WaitGroup // the replicas' Keep
	// stopping counts the instances being stopped out of service (replaced,
	// left): the group's stop waits for them
	stopping sync.WaitGroup

	startOnce sync.Once
	startErr  error
	stopOnce  sync.Once
	stopped   chan struct{} // closed once every instance has stopped

	mu        sync.Mutex
	state     supervisor.State
	instances []*instance // in service: one per replica, except while one is replaced
	// ended are instances takeOutWhenEnded took out whose end the
	// replica has not handled yet (Exited kills what they left and
	// removes their socket): the group's stop does it for them
	ended     map[*instance]bool
	replicas  []*supervisor.Replica[*instance]
	restarts  map[string]int
	lastError string

	ready atomic.Pointer[[]*reverseproxy.Upstream] // what reverse_proxy gets
}

// Done is closed once the instance's process has exited
// (supervisor.Occupant).
func (in *instance) Done() <-chan struct{} { return in.proc.Done() }

// StartedAt is when the instance's process started (supervisor.Occupant).
func (in *instance) StartedAt() time.Time { return in.proc.StartedAt() }

// stop ends the instance's process (stop_signal, then SIGKILL after
// stop_timeout) and removes its socket.
func (in *instance) stop(s *spec) {
	in.proc.Stop(s.StopSignal, s.StopTimeout)
	if in.network == "unix" {
		_ = os.Remove(in.addr)
	}
}

// instance is one running copy of the command.
type instance struct {
	proc     *supervisor.Process
	network  string // tcp or unix
	addr     string // host:port or socket path
	uid      int    // the account it runs as
	upstream *reverseproxy.Upstream
	counted  bool // its exit or replacement counted in restarts (guarded by the group's mu)
}

func newGroup(s *spec, logger *zap.Logger) *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{spec: s, logger: logger.With(zap.String("app", s.Name)), ctx: ctx, cancel: cancel,
		state: supervisor.Starting, restarts: map[string]int{"crash": 0, "reload": 0}, stopped: make(chan struct{})}
}

// Name is the group's name.
func (g *Group) Name() string { return g.spec.Name }

// Running reports whether the group serves the current config.
func (g *Group) Running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == supervisor.Running
}

// Start launches the instances and waits until all are ready.
func (g *Group) Start() error {
	g.startOnce.Do(func() { g.startErr = panics.Call(g.logger, "starting the process upstream", g.start) })
	return g.startErr
}

func (g *Group) start() error {
	errs := make([]error, g.spec.Workers)
	launched := make([]*instance, g.spec.Workers)
	var wg sync.WaitGroup
	for i := range launched {
		wg.Add(1)
		go func() {
			defer wg.Done()
			launched[i], errs[i] = g.launch()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		g.stopAll(launched)
		g.mu.Lock()
		g.state, g.lastError = supervisor.Failed, err.Error()
		g.mu.Unlock()
		return err
	}
	g.mu.Lock()
	if g.state != supervisor.Starting { // stopped while starting
		g.mu.Unlock()
		g.stopAll(launched)
		return fmt.Errorf("%s stopped while starting", g.spec.Name)
	}
	g.state = supervisor.Running
	g.instances = launched
	g.publishLocked()
	for _, in := range launched {
		go g.takeOutWhenEnded(in) // (as adopt does for those that follow)
		r := supervisor.NewReplica[*instance]()
		g.replicas = append(g.replicas, r)
		g.loops.Add(1)
		go func() {
			defer g.loops.Done()
			r.Keep(g.ctx, g.logger, g.hooks(), in)
		}()
	}
	g.mu.Unlock()
	g.logger.Info("process upstream ready", zap.Int("instances", len(g.instances)))
	return nil
}

// launch starts one instance on a free loopback port (or a fresh unix
// socket) and waits until it is ready.
func (g *Group) launch() (_ *instance, err error) {
	defer panics.Recover(g.logger, "starting a process", &err)
	var network, address string
	var defaults, env []string // before the instance's own environment, and after it
	var repl *strings.Replacer
	if g.spec.Socket {
		dir, err := socketDir()
		if err != nil {
			return nil, err
		}
		address = filepath.Join(dir, fmt.Sprintf("%s-%d-%d.sock", g.spec.Name, os.Getpid(), socketSeq.Add(1)))
		_ = os.Remove(address)
		network, env = "unix", []string{"HEARTH_SOCKET=" + address}
		repl = strings.NewReplacer("{socket}", address)
	} else {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		ps := strconv.Itoa(port)
		// HOST: what many servers (Node's among them) bind when told;
		// without it `listen(PORT)` takes every interface, and the LAN
		// would reach the app without Caddy (the instance's env may set
		// another: warnIfOpen reports a wildcard)
		network, address, env = "tcp", net.JoinHostPort("127.0.0.1", ps), []string{"PORT=" + ps, "HEARTH_PORT=" + ps}
		defaults = []string{"HOST=127.0.0.1"}
		// the Caddyfile turns the {port} shorthand into {http.request.port}
		repl = strings.NewReplacer("{port}", ps, "{http.request.port}", ps)
	}
	args := make([]string, len(g.spec.Args))
	for i, a := range g.spec.Args {
		args[i] = repl.Replace(a)
	}
	cmd := supervisor.Command{
		Path: g.spec.Path, Args: args, Dir: g.spec.Dir,
		Env:        append(append(defaults, g.spec.Env...), env...),
		Credential: g.spec.credential,
		Umask:      g.spec.Umask,
	}
	proc, err := supervisor.Start(cmd, g.logger)
	if err != nil {
		return nil, err
	}
	in := &instance{proc: proc, network: network, addr: address, uid: cmd.UID()}
	dial := address
	if network == "unix" {
		dial = "unix/" + address
	}
	in.upstream = &reverseproxy.Upstream{Dial: dial}
	if err := g.awaitReady(in); err != nil {
		proc.Stop(g.spec.StopSignal, g.spec.StopTimeout)
		return nil, err
	}
	if network == "tcp" {
		g.warnIfOpen(in)
	}
	return in, nil
}

// warnIfOpen logs when the instance listens on every interface: other
// machines reach it there without Caddy (no TLS, no guard, no auth).
func (g *Group) warnIfOpen(in *instance) {
	_, port, _ := net.SplitHostPort(in.addr)
	for _, l := range netinfo.Listeners() {
		if strconv.Itoa(l.Port) == port && l.Addr.IsUnspecified() && l.UID == in.uid {
			g.logger.Warn("the process listens on every interface, not only loopback: other machines can reach it without Caddy",
				zap.Int("pid", in.proc.Pid()), zap.String("listens_on", net.JoinHostPort(l.Addr.String(), port)),
				zap.String("fix", "bind 127.0.0.1 (its $HOST), e.g. `server.listen(process.env.PORT, process.env.HOST)` in Node"))
			return
		}
	}
}

// socketSeq numbers the sockets of this process.
var socketSeq atomic.Int64

// socketDir holds the instances' sockets: Caddy's user's (mode 0711),
// checked before every use, and refused if someone else made it (they
// could replace a socket and receive the requests).
func socketDir() (string, error) {
	dir, err := safedir.Ensure(filepath.Join(os.TempDir(), fmt.Sprintf("hearth-sockets-%d", os.Geteuid())), 0o711)
	if err != nil {
		return "", fmt.Errorf("the sockets' directory: %w", err)
	}
	return dir, nil
}

// awaitReady polls the instance until it accepts connections (or answers
// ready_path below 500), it exits, or start_timeout passes.
func (g *Group) awaitReady(in *instance) error {
	deadline := time.Now().Add(g.spec.StartTimeout)
	client := readyClient(in)
	taken := "" // who else listens on the port
	for {
		select {
		case <-in.proc.Done():
			if taken != "" {
				return fmt.Errorf("%s (pid %d) exited before it was ready (%s): %s", g.spec.Name, in.proc.Pid(), in.proc.ExitDescription(), taken)
			}
			return fmt.Errorf("%s (pid %d) exited before it was ready (%s); its output is in the log", g.spec.Name, in.proc.Pid(), in.proc.ExitDescription())
		case <-g.ctx.Done():
			return errors.New("stopped while starting")
		default:
		}
		// judged before and after the answer: another account's socket
		// bound in between would have answered, and holds the port still
		if taken = g.takenBy(in); taken != "" {
			// not ready: requests would go to whoever holds the port
		} else if g.answers(client, in) {
			if taken = g.takenBy(in); taken == "" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if taken != "" {
				return fmt.Errorf("%s (pid %d) was not ready on %s within start_timeout (%s): %s", g.spec.Name, in.proc.Pid(), in.addr, g.spec.StartTimeout, taken)
			}
			return fmt.Errorf("%s (pid %d) was not ready on %s within start_timeout (%s): it must listen on the port given in $PORT or {port}", g.spec.Name, in.proc.Pid(), in.addr, g.spec.StartTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// answers reports whether the instance answers its ready_path below 500,
// or without one, accepts a connection.
func (g *Group) answers(client *http.Client, in *instance) bool {
	if g.spec.ReadyPath != "" {
		resp, err := client.Get("http://" + hostOf(in) + g.spec.ReadyPath)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode < 500
	}
	conn, err := net.DialTimeout(in.network, in.addr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// takenBy says who else holds the instance's TCP port, or "": another
// account's socket there took the port between Caddy's choice and the
// instance's bind, and would receive the site's requests. A listener of
// the instance's own process group is its own whatever its account (a
// program that binds as root, then drops to its user); a program of the
// instance's account outside its group (setsid, sudo, a container's proxy)
// is taken for the instance's: Caddy cannot tell them apart from a
// squatter of the same account (give apps accounts of their own).
func (g *Group) takenBy(in *instance) string {
	if in.network != "tcp" {
		return "" // in a directory only Caddy's account may write
	}
	if listens, known := netinfo.GroupListens(in.proc.Pid(), in.addr); known && listens {
		return ""
	}
	if other := netinfo.ForeignListener(in.addr, in.uid); other != "" {
		return fmt.Sprintf("%s holds %s, the port Hearth gave it: another account took it first, and would have received the site's requests", other, in.addr)
	}
	return ""
}

// readyClient asks the instance for ready_path: on its unix socket if it
// has one, never through a proxy, a second at most each time, and a
// redirect is an answer (below 500), not followed: the instance's program
// could otherwise have Caddy request any URL it names, from Caddy's
// account and network.
func readyClient(in *instance) *http.Client {
	transport := &http.Transport{Proxy: nil, DisableKeepAlives: true, MaxResponseHeaderBytes: 64 << 10}
	if in.network == "unix" {
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", in.addr)
		}
	}
	return &http.Client{
		Timeout:       time.Second,
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func hostOf(in *instance) string {
	if in.network == "unix" {
		return "localhost"
	}
	return in.addr
}

// hooks are what the group does at each step of a replica's life.
func (g *Group) hooks() *supervisor.Hooks[*instance] {
	return &supervisor.Hooks[*instance]{
		Start: g.launch,
		Adopt: g.adopt,
		Exited: func(in *instance) string {
			g.handled(in)
			_ = syscall.Kill(-in.proc.Pid(), syscall.SIGKILL) // what it started (npm's node, sh -c's children) goes with it: they would keep its port and memory
			g.takeOut(in, "crash")
			g.logger.Error("process exited; replacing it", zap.Int("pid", in.proc.Pid()), zap.String("exit", in.proc.ExitDescription()))
			return "crash"
		},
		Leave: func(in *instance) {
			g.handled(in)
			g.takeOut(in, "")
			g.stopLater(in)
		},
		Failed: func(old *instance, reason string, err error, retryIn time.Duration) {
			g.setLastError(err)
			if old != nil {
				g.logger.Error("could not start a replacement; the old process keeps serving", zap.String("reason", reason), zap.Int("pid", old.proc.Pid()), zap.Error(err))
			} else {
				g.logger.Error("replacement failed to start", zap.Error(err), zap.Duration("retry_in", retryIn))
			}
		},
	}
}

// putInService adds next to the instances in service (taking old out, if
// set) unless the group is stopping.
func (g *Group) putInService(next, old *instance, reason string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state != supervisor.Running && g.state != supervisor.Draining {
		return false
	}
	g.instances = append(g.instances, next)
	if old != nil && !old.counted {
		// (counted once, even when takeOutWhenEnded took it out already)
		old.counted = true
		g.instances = slices.DeleteFunc(g.instances, func(x *instance) bool { return x == old })
		g.restarts[reason]++
	}
	g.publishLocked()
	return true
}

// takeOut takes in out of service, counting reason (if set) once: a step
// run again after a panic does not count it twice, nor does the exit of
// an instance takeOutWhenEnded took out already.
func (g *Group) takeOut(in *instance, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if reason != "" && !in.counted {
		in.counted = true
		g.restarts[reason]++
	}
	if slices.Contains(g.instances, in) {
		g.instances = slices.DeleteFunc(g.instances, func(x *instance) bool { return x == in })
	}
	g.publishLocked()
}

// stopAll stops the instances at once, each within stop_timeout: one
// after the other, processes that ignore the stop signal held a failed
// start (and Caddy's config lock with it) for stop_timeout each.
func (g *Group) stopAll(instances []*instance) {
	var wg sync.WaitGroup
	for _, in := range instances {
		if in != nil {
			wg.Go(func() { in.stop(g.spec) })
		}
	}
	wg.Wait()
}

// takeOutWhenEnded takes in out of service the moment its process ends,
// not once its output is drained (Exited, up to 2 s later when a
// descendant holds its pipes): its port is free from then on, and another
// account that binds it would receive the site's requests, passwords and
// cookies included.
func (g *Group) takeOutWhenEnded(in *instance) {
	select {
	case <-in.proc.Ended():
		g.mu.Lock()
		if g.ended == nil {
			g.ended = map[*instance]bool{}
		}
		g.ended[in] = true
		g.mu.Unlock()
		g.takeOut(in, "")
	case <-g.ctx.Done():
	}
}

// handled forgets in among the ended: its replica handles its end.
func (g *Group) handled(in *instance) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.ended, in)
}

func (g *Group) setLastError(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastError = err.Error()
}

// adopt puts next into service and, if old is set, stops old (after
// stop_signal, up to stop_timeout). It returns false (and stops next) if
// the group is stopping.
func (g *Group) adopt(_ *supervisor.Replica[*instance], next, old *instance, reason string) bool {
	if !g.putInService(next, old, reason) {
		next.stop(g.spec)
		return false
	}
	go g.takeOutWhenEnded(next)
	if old != nil {
		g.stopLater(old)
	}
	return true
}

// stopLater stops in, out of service, in the background; the group's stop
// waits for it.
func (g *Group) stopLater(in *instance) {
	g.stopping.Add(1)
	panics.Go(g.logger, "stopping a process", func() {
		defer g.stopping.Done()
		in.stop(g.spec)
	})
}

// Stopped is closed once every instance of the group has stopped: the
// instance lock is let go then, not while instances still drain.
func (g *Group) Stopped() <-chan struct{} { return g.stopped }

// publishLocked updates what GetUpstreams returns.
func (g *Group) publishLocked() {
	ups := make([]*reverseproxy.Upstream, 0, len(g.instances))
	for _, in := range g.instances {
		ups = append(ups, in.upstream)
	}
	g.ready.Store(&ups)
}

// Destruct stops the group once no config uses it: in the background on a
// reload (after the requests in flight to it, up to stop_timeout), at once
// when Caddy exits.
func (g *Group) Destruct() error {
	g.stopOnce.Do(func() {
		g.mu.Lock()
		g.state = supervisor.Draining
		g.mu.Unlock()
		if caddy.Exiting() {
			g.stop()
		} else {
			panics.Go(g.logger, "stopping the process upstream", g.stop)
		}
	})
	return nil
}

func (g *Group) stop() {
	defer close(g.stopped)
	deadline := time.Now().Add(g.spec.StopTimeout)
	for g.inFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	g.cancel()
	g.loops.Wait()
	g.mu.Lock()
	instances := slices.Clone(g.instances)
	ended := slices.Collect(maps.Keys(g.ended))
	g.ended = nil
	g.state = supervisor.Stopped
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range instances {
		wg.Add(1)
		panics.Go(g.logger, "stopping a process", func() {
			defer wg.Done()
			in.stop(g.spec)
		})
	}
	// ended, and taken out, before their replica handled it (their
	// output still draining): what they left is ended as Exited would
	for _, in := range ended {
		_ = syscall.Kill(-in.proc.Pid(), syscall.SIGKILL)
		if in.network == "unix" {
			_ = os.Remove(in.addr)
		}
	}
	wg.Wait()
	g.stopping.Wait()
	g.logger.Info("process upstream stopped")
}

// inFlight counts the requests reverse_proxy has in flight to the group.
func (g *Group) inFlight() int {
	n := 0
	if ups := g.ready.Load(); ups != nil {
		for _, u := range *ups {
			if u.Host != nil {
				n += u.Host.NumRequests()
			}
		}
	}
	return n
}

// Restart replaces every instance, one at a time, each new one ready
// before the old one stops.
func (g *Group) Restart() error {
	g.mu.Lock()
	state, replicas := g.state, slices.Clone(g.replicas)
	g.mu.Unlock()
	if state != supervisor.Running {
		return fmt.Errorf("%s is %s, %w", g.spec.Name, state, supervisor.ErrNotRunning)
	}
	running := func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.state == supervisor.Running
	}
	switch err := supervisor.RecycleEach(g.ctx, replicas, "reload", running); {
	case errors.Is(err, supervisor.ErrNotRunning): // a reload took the group out meanwhile: for the admin API, 409
		return fmt.Errorf("%s stopped during its restart, %w", g.spec.Name, err)
	case err != nil:
		return fmt.Errorf("restarting %s: %w", g.spec.Name, err)
	}
	return nil
}

// Scale is not supported for process upstreams yet.
func (g *Group) Scale(int) error {
	return fmt.Errorf("%s is a process upstream: change `workers` in its config to scale it", g.spec.Name)
}

// instanceStatus is one instance in GET /hearth/apps.
type instanceStatus struct {
	Pid       int       `json:"pid"`
	Address   string    `json:"address"`
	StartedAt time.Time `json:"started_at"`
}

// groupStatus is a process upstream in GET /hearth/apps.
type groupStatus struct {
	Name      string           `json:"name"`
	Kind      string           `json:"kind"`
	Command   []string         `json:"command"`
	State     string           `json:"state"`
	Workers   []instanceStatus `json:"workers"`
	Restarts  map[string]int   `json:"restarts"`
	LastError string           `json:"last_error,omitempty"`
}

// Status reports the group for the admin API.
func (g *Group) Status() any {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := groupStatus{Name: g.spec.Name, Kind: "process", Command: append([]string{g.spec.Path}, g.spec.Args...),
		State: string(g.state), Workers: []instanceStatus{}, Restarts: maps.Clone(g.restarts), LastError: g.lastError}
	for _, in := range g.instances {
		st.Workers = append(st.Workers, instanceStatus{Pid: in.proc.Pid(), Address: in.addr, StartedAt: in.proc.StartedAt()})
	}
	return st
}

// freePort returns a loopback TCP port nobody listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
