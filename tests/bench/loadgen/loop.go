//go:build linux

package main

// The event loop: one OS thread, one epoll set, non-blocking sockets.
//
// Request i is due at start + i/rate. On every wake-up the loop sends every
// due request it has a free connection for; a due request without one waits
// in line (the line is implicit: requests are sent in index order, so it is
// just the indices from sendIdx up to the last due one). Each request's
// latency counts from its due time, not from when it went out, so a server
// that falls behind shows it in the latencies (no coordinated omission), and
// ends when the kernel received the last byte of the response (SO_TIMESTAMPNS),
// not when the loop got around to reading it.
//
// Between wake-ups the loop sleeps until the next request is due (see wait
// for how it times that). Waking up costs CPU (a lot of it in a VM), so while
// there are free connections and every response so far came with its kernel
// receive time, the loop does not wake up for responses: it reads them all on
// the wake-up for the next send. Otherwise it sleeps in epoll, waking up for
// whatever a connection has to say.

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"syscall"
	"time"
)

// Config is one run's settings (see parseArgs for the flags behind them).
type Config struct {
	Target      netip.AddrPort
	Request     []byte // sent as is for every request
	Rate        float64
	Duration    time.Duration
	Warmup      time.Duration
	Drain       time.Duration
	Connections int
	Status      int // the expected status; any other counts as an error

	// Knobs for tests and tuning (not flags).
	timer          timerMode
	timerSlack     time.Duration // the loop thread's timer slack; < 0 leaves it alone
	spin           time.Duration // a wait this short polls instead of sleeping
	connectTimeout time.Duration // for the connections opened up front
}

type timerMode uint8

const (
	timerAuto    timerMode = iota // epoll_pwait2 where the kernel has it, else timerfd
	timerPwait2                   // epoll_pwait2's nanosecond timeout
	timerTimerfd                  // a timerfd in the epoll set, epoll_wait without timeout
)

const (
	defaultTimerSlack     = 20 * time.Microsecond
	defaultSpin           = 20 * time.Microsecond
	minSleep              = int64(time.Microsecond)
	maxEarly              = int64(200 * time.Microsecond)
	defaultConnectTimeout = 5 * time.Second
	lateThreshold         = int64(time.Millisecond) // a send this late counts in late_sends
	readBufSize           = 64 << 10                // per connection; caps the response header block
	maxDialAttempts       = 3                       // consecutive failed connects before a connection is given up
	yieldEvery            = int64(8 * time.Millisecond)
)

// Result is what a run measured; its JSON form is the tool's output.
type Result struct {
	TargetRate   float64 `json:"target_rate"`
	AchievedRate float64 `json:"achieved_rate"`
	DurationS    float64 `json:"duration_s"`
	WarmupS      float64 `json:"warmup_s"`
	Sent         int64   `json:"sent"`
	Completed    int64   `json:"completed"`
	Errors       int64   `json:"errors"`
	Timeouts     int64   `json:"timeouts"`
	Unsent       int64   `json:"unsent"`
	LateSends    int64   `json:"late_sends"`
	Latency      Latency `json:"latency_us"`
	SendLag      Latency `json:"send_lag_us"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	CPUFraction  float64 `json:"cpu_fraction"`
	Connections  int     `json:"connections"`
	// ErrorKinds splits Errors by cause.
	ErrorKinds      ErrorKinds `json:"error_kinds"`
	Reconnects      int64      `json:"reconnects"`
	ConnectFailures int64      `json:"connect_failures"`
	Timer           string     `json:"timer"`

	connectErr error // the last failed connect, when ConnectFailures > 0
	lazyWaits  int64 // sleeps that left responses for later (for tests)
}

// Latency holds quantiles of a histogram in microseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// ErrorKinds counts failed requests by cause; they add up to Errors.
type ErrorKinds struct {
	Status     int64 `json:"status"`     // a response with an unexpected status
	Connection int64 `json:"connection"` // the connection failed or closed with the request in flight
	Protocol   int64 `json:"protocol"`   // a malformed response, or a header block over 64 KiB
	Timeout    int64 `json:"timeout"`    // no response by the end of the drain
}

type connState uint8

const (
	csConnecting connState = iota
	csIdle                 // connected, free for a request
	csBusy                 // a request in flight
	csClosed               // closed: about to reconnect, or for good once the sending has ended
	csDead                 // could not reconnect: given up
)

type conn struct {
	respParser
	idx     int32
	gen     uint32 // bumped on every new socket: events for an old one are ignored
	fd      int
	state   connState
	inIdle  bool // in the idle ring (possibly stale: state tells)
	wantOut bool // EPOLLOUT registered (a request only partly written)
	partial bool // part of a response has come in
	ever    bool // has been connected before (a new connect is a reconnect)
	fails   int  // consecutive failed connects
	wOff    int  // bytes of the request written

	intended int64 // due time of the request in flight
	sentAt   int64 // when it was sent
	rxAt     int64 // when the last bytes of its response arrived (0: unknown)
	measured bool  // the request in flight belongs to the measured period
}

const (
	timerTag   = -1            // epoll data of the timerfd
	armedFired = math.MinInt64 // the timerfd fired (or is in an unknown state)
)

type loop struct {
	cfg    *Config
	req    []byte
	sa     syscall.Sockaddr
	family int

	epfd   int
	tfd    int // -1 with epoll_pwait2
	pwait2 bool
	events []syscall.EpollEvent
	rx     receiver
	ctlEv  syscall.EpollEvent
	ts     syscall.Timespec
	its    itimerspec
	armed  int64 // deadline the timerfd is set for; -1 disarmed
	spin   int64 // waits up to this long (ns) poll instead of sleeping
	early  int64 // sleeps end this much (ns) before their deadline

	t0       time.Time
	wallOff  int64 // CLOCK_REALTIME minus our clock, ns: for kernel timestamps
	conns    []conn
	ring     []int32 // idle connections, oldest first
	ringHead int
	ringLen  int
	alive    int // connections not given up
	pending  int // connections still connecting
	// Connections that need their events promptly: those writing a request
	// in parts, or reading a response that came in parts.
	urgent int
	tsOK   bool // the last response had a kernel receive time

	startup  bool
	startErr error

	period                   float64 // ns between requests
	start                    int64   // due time of request 0 (ns since t0)
	sendIdx                  int64   // next request to send
	firstMeasured, endIdx    int64   // measured requests are [firstMeasured, endIdx)
	measureStart, stopAt     int64
	drainAt                  int64
	measuring, stopped       bool
	inflight                 int64 // measured requests in flight
	cpu0, cpu1, wall0, wall1 int64

	lazyWaits             int64
	sent, completed, late int64
	errs                  ErrorKinds
	unsent                int64
	reconnects            int64
	connectFailures       int64
	connectErr            error
	lat, lag              histogram
}

// run opens the connections, runs the schedule and returns what it measured.
// The error is for a target that could not be reached at all (or a broken
// environment); problems during the run are counted in the Result.
func run(cfg Config) (Result, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	l, err := newLoop(&cfg)
	if err != nil {
		return Result{}, err
	}
	defer l.close()
	if cfg.timerSlack >= 0 {
		if old, e := timerSlack(); e == 0 {
			slack := int64(cfg.timerSlack)
			if slack == 0 {
				slack = 1 // 0 would mean "the default"
			}
			if setTimerSlack(slack) == 0 {
				defer setTimerSlack(old)
			}
		}
	}
	if err := l.connectAll(); err != nil {
		return Result{}, err
	}
	if err := l.schedule(); err != nil {
		return Result{}, err
	}
	return l.result(), nil
}

func newLoop(cfg *Config) (*loop, error) {
	if cfg.Rate <= 0 || cfg.Connections < 1 || cfg.Duration <= 0 || len(cfg.Request) == 0 {
		return nil, errors.New("invalid configuration")
	}
	l := &loop{cfg: cfg, req: cfg.Request, epfd: -1, tfd: -1, armed: -1}
	addr := cfg.Target.Addr().Unmap()
	if addr.Is4() {
		l.family = syscall.AF_INET
		l.sa = &syscall.SockaddrInet4{Port: int(cfg.Target.Port()), Addr: addr.As4()}
	} else {
		l.family = syscall.AF_INET6
		l.sa = &syscall.SockaddrInet6{Port: int(cfg.Target.Port()), Addr: addr.As16()}
	}
	var err error
	if l.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	l.events = make([]syscall.EpollEvent, cfg.Connections+1)
	if cfg.timer != timerTimerfd {
		_, e := epollPwait2(l.epfd, l.events, &l.ts) // zero timeout: a probe
		switch {
		case e == 0:
			l.pwait2 = true
		case cfg.timer == timerPwait2:
			l.close()
			return nil, fmt.Errorf("epoll_pwait2: %w", e)
		}
	}
	if !l.pwait2 {
		if l.tfd, err = timerfdCreate(); err != nil {
			l.close()
			return nil, fmt.Errorf("timerfd_create: %w", err)
		}
		l.ctlEv = syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: timerTag}
		if e := epollCtl(l.epfd, syscall.EPOLL_CTL_ADD, l.tfd, &l.ctlEv); e != 0 {
			l.close()
			return nil, fmt.Errorf("epoll_ctl: %w", e)
		}
	}
	l.conns = make([]conn, cfg.Connections)
	bufs := make([]byte, cfg.Connections*readBufSize)
	for i := range l.conns {
		c := &l.conns[i]
		c.idx = int32(i)
		c.fd = -1
		c.buf = bufs[i*readBufSize : (i+1)*readBufSize : (i+1)*readBufSize]
	}
	l.ring = make([]int32, cfg.Connections)
	l.alive = cfg.Connections
	l.period = 1e9 / cfg.Rate
	l.spin = int64(cfg.spin)
	l.t0 = time.Now()
	return l, nil
}

func (l *loop) close() {
	for i := range l.conns {
		if c := &l.conns[i]; c.fd >= 0 {
			syscall.Close(c.fd)
			c.fd = -1
		}
	}
	if l.tfd >= 0 {
		syscall.Close(l.tfd)
		l.tfd = -1
	}
	if l.epfd >= 0 {
		syscall.Close(l.epfd)
		l.epfd = -1
	}
}

func (l *loop) now() int64 { return int64(time.Since(l.t0)) }

func (l *loop) intended(i int64) int64 { return l.start + int64(float64(i)*l.period) }

// indexAt returns the first request due at or after t.
func (l *loop) indexAt(t int64) int64 {
	i := int64(math.Ceil(float64(t-l.start) / l.period))
	if i < 0 {
		i = 0
	}
	for i > 0 && l.intended(i-1) >= t {
		i--
	}
	for l.intended(i) < t {
		i++
	}
	return i
}

// connectAll opens every connection and waits until all are up.
func (l *loop) connectAll() error {
	l.startup = true
	for i := range l.conns {
		if err := l.dial(&l.conns[i]); err != nil {
			return fmt.Errorf("cannot connect to %s: %w", l.cfg.Target, err)
		}
	}
	timeout := l.cfg.connectTimeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	deadline := l.now() + int64(timeout)
	for l.pending > 0 && l.startErr == nil {
		now := l.now()
		if now >= deadline {
			return fmt.Errorf("cannot connect to %s: %d of %d connections not up after %s",
				l.cfg.Target, l.pending, len(l.conns), timeout)
		}
		if err := l.poll(now, deadline, false); err != nil {
			return err
		}
	}
	if l.startErr != nil {
		return fmt.Errorf("cannot connect to %s: %w", l.cfg.Target, l.startErr)
	}
	l.startup = false
	l.reconnects, l.connectFailures = 0, 0
	return nil
}

// schedule runs the schedule, then the drain.
func (l *loop) schedule() error {
	now := l.now()
	l.start = now
	l.measureStart = l.start + int64(l.cfg.Warmup)
	l.stopAt = l.measureStart + int64(l.cfg.Duration)
	l.firstMeasured = l.indexAt(l.measureStart)
	l.endIdx = l.indexAt(l.stopAt)
	lastYield := now
	for {
		now = l.now()
		if now-lastYield >= yieldEvery {
			// Go's sysmon takes a goroutine that has not been through the
			// scheduler for 10 ms for a hog, and then takes its P away in
			// the middle of an epoll wait (and wakes up every 20 µs itself,
			// for a while). A yield now and then avoids that; sleeps end in
			// time for it.
			runtime.Gosched()
			lastYield = l.now()
			now = lastYield
		}
		if !l.measuring && now >= l.measureStart {
			l.measuring = true
			l.cpu0, l.wall0 = cpuTime(), l.now()
		}
		if !l.stopped && (now >= l.stopAt || l.alive == 0) {
			l.stop(now)
		}
		var deadline int64
		if l.stopped {
			if l.inflight == 0 || now >= l.drainAt {
				break
			}
			deadline = l.drainAt
		} else {
			now = l.sendDue(now)
			deadline = l.stopAt
			if !l.measuring && l.measureStart < deadline {
				deadline = l.measureStart
			}
			if l.ringLen > 0 && l.sendIdx < l.endIdx {
				if t := l.intended(l.sendIdx); t < deadline {
					deadline = t
				}
			}
		}
		if y := lastYield + yieldEvery; y < deadline {
			deadline = y
		}
		// Responses can wait for the next send to be read (they carry the
		// kernel's receive time) unless a connection is needed or busy
		// with a large request or response.
		lazy := !l.stopped && l.tsOK && l.urgent == 0 && l.pending == 0 && l.ringLen > 0
		if err := l.poll(now, deadline, lazy); err != nil {
			return err
		}
	}
	l.errs.Timeout = l.inflight
	for i := range l.conns {
		if c := &l.conns[i]; c.fd >= 0 {
			syscall.Close(c.fd)
			c.fd = -1
		}
	}
	return nil
}

// stop ends the sending: what was due and not sent is unsent.
func (l *loop) stop(now int64) {
	l.stopped = true
	if l.measuring {
		l.cpu1, l.wall1 = cpuTime(), l.now()
	}
	from := l.sendIdx
	if from < l.firstMeasured {
		from = l.firstMeasured
	}
	l.unsent = l.endIdx - from
	l.drainAt = now + int64(l.cfg.Drain)
}

// sendDue sends every due request there is a free connection for and
// returns the time after the last send.
func (l *loop) sendDue(now int64) int64 {
	for l.ringLen > 0 && l.sendIdx < l.endIdx {
		t := l.intended(l.sendIdx)
		if t > now {
			break
		}
		c := l.popIdle()
		if c == nil {
			break
		}
		l.send(c, l.sendIdx, t, now)
		l.sendIdx++
		now = l.now()
	}
	return now
}

// poll waits for events until deadline and handles them.
func (l *loop) poll(now, deadline int64, lazy bool) error {
	n, e := l.wait(now, deadline, lazy)
	if e != 0 {
		if e == syscall.EINTR {
			return nil
		}
		return fmt.Errorf("epoll wait: %w", e)
	}
	if n == 0 {
		return nil
	}
	t := time.Now()
	now = int64(t.Sub(l.t0))
	l.wallOff = t.UnixNano() - now
	for i := 0; i < n; i++ {
		l.handle(&l.events[i], now)
	}
	return nil
}

// wait sleeps until the deadline (ns since t0) or, unless lazy, an event,
// and returns the events there are.
//
// A wait shorter than the spin threshold polls instead of sleeping: a sleep
// and wake-up cost more CPU than that, and wake up late. Longer waits sleep,
// but ask to be woken a little early, by l.early: a low estimate of how late
// the kernel's timer wake-ups have been coming (the timer slack, the wake-up
// of an idle CPU, which is slow in a VM). So sends go out close to their due
// time without polling for it.
//
// A lazy wait sleeps through events and collects them at the end: one
// wake-up per send instead of one per send and one per response.
func (l *loop) wait(now, deadline int64, lazy bool) (int, syscall.Errno) {
	d := deadline - now
	if d <= 0 {
		return l.waitFor(0, deadline)
	}
	if d <= l.spin {
		for {
			n, e := l.waitFor(0, deadline)
			if n > 0 || e != 0 || l.now() >= deadline {
				return n, e
			}
		}
	}
	sleep := d - l.early
	if sleep < minSleep {
		sleep = minSleep
	}
	var n int
	var e syscall.Errno
	if lazy {
		l.lazyWaits++
		setTimespec(&l.ts, sleep)
		e = nanosleep(&l.ts)
	} else {
		n, e = l.waitFor(sleep, now+sleep)
	}
	if e == 0 && (n == 0 || n == 1 && !l.pwait2 && l.events[0].Fd == timerTag) {
		// A timer wake-up: how late was it?
		late := l.now() - (now + sleep)
		if late < l.early {
			l.early -= (l.early - late) / 2
		} else {
			l.early += (late - l.early) / 16
		}
		if l.early > maxEarly {
			l.early = maxEarly
		}
	}
	if lazy && (e == 0 || e == syscall.EINTR) {
		return l.waitFor(0, deadline)
	}
	return n, e
}

// waitFor waits for events for at most d ns (d == 0: only polls).
func (l *loop) waitFor(d, deadline int64) (int, syscall.Errno) {
	if l.pwait2 {
		setTimespec(&l.ts, d)
		return epollPwait2(l.epfd, l.events, &l.ts)
	}
	if d == 0 {
		return epollWait(l.epfd, l.events, 0)
	}
	if deadline != l.armed {
		setTimespec(&l.its.value, d)
		if e := timerfdSet(l.tfd, &l.its); e != 0 {
			return 0, e
		}
		l.armed = deadline
	}
	return epollWait(l.epfd, l.events, -1)
}

func (l *loop) handle(ev *syscall.EpollEvent, now int64) {
	if ev.Fd == timerTag {
		l.armed = armedFired // the next wait re-arms it, which also clears it
		return
	}
	c := &l.conns[ev.Fd]
	if uint32(ev.Pad) != c.gen || c.fd < 0 {
		return // an event of a socket since closed
	}
	switch c.state {
	case csConnecting:
		l.onConnect(c)
	case csIdle, csBusy:
		if ev.Events&syscall.EPOLLOUT != 0 && c.wantOut {
			gen := c.gen
			l.write(c)
			if c.gen != gen || c.fd < 0 {
				return
			}
		}
		if ev.Events&(syscall.EPOLLIN|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			l.onReadable(c, now)
		}
	}
}

func (l *loop) send(c *conn, idx, due, now int64) {
	c.state = csBusy
	c.intended = due
	c.sentAt = now
	c.rxAt = 0
	c.measured = idx >= l.firstMeasured
	c.wOff = 0
	c.resetResponse()
	if c.measured {
		l.sent++
		l.inflight++
		lag := now - due
		l.lag.record(lag)
		if lag > lateThreshold {
			l.late++
		}
	}
	l.write(c)
}

func (l *loop) write(c *conn) {
	for c.wOff < len(l.req) {
		n, e := sendNB(c.fd, l.req[c.wOff:])
		if e != 0 {
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				if !c.wantOut {
					c.wantOut = true
					l.urgent++
					l.ctl(c, syscall.EPOLL_CTL_MOD, syscall.EPOLLIN|syscall.EPOLLOUT)
				}
				return
			}
			l.lose(c, &l.errs.Connection)
			return
		}
		c.wOff += n
	}
	if c.wantOut {
		c.wantOut = false
		l.urgent--
		l.ctl(c, syscall.EPOLL_CTL_MOD, syscall.EPOLLIN)
	}
}

func (l *loop) onReadable(c *conn, now int64) {
	room := c.space()
	if len(room) == 0 { // cannot happen: parse reports a full buffer
		l.lose(c, &l.errs.Protocol)
		return
	}
	n, ts, e := l.rx.recv(c.fd, room)
	if e != 0 {
		if e == syscall.EAGAIN || e == syscall.EINTR {
			return
		}
		l.lose(c, &l.errs.Connection)
		return
	}
	if n == 0 { // EOF
		if c.state == csBusy && c.ps == psBodyEOF {
			l.finish(c, now)
			return
		}
		l.lose(c, &l.errs.Connection)
		return
	}
	c.w += n
	if ts != 0 {
		c.rxAt = ts - l.wallOff
	} else {
		c.rxAt = 0
	}
	if c.state != csBusy { // bytes nobody asked for: start afresh
		l.lose(c, nil)
		return
	}
	switch c.parse() {
	case prMore:
		if !c.partial {
			c.partial = true
			l.urgent++
		}
	case prDone:
		l.finish(c, now)
	default:
		l.lose(c, &l.errs.Protocol)
	}
}

// finish accounts for a complete response and frees the connection.
func (l *loop) finish(c *conn, now int64) {
	if c.partial {
		c.partial = false
		l.urgent--
	}
	l.tsOK = c.rxAt != 0
	if c.measured {
		l.inflight--
		if c.status == l.cfg.Status {
			at := c.rxAt
			if at < c.sentAt || at > now { // no timestamp (or the wall clock was set)
				at = now
			}
			l.completed++
			l.lat.record(at - c.intended)
		} else {
			l.errs.Status++
		}
	}
	if c.closeAfter || c.r != c.w || c.wOff < len(l.req) {
		l.closeConn(c)
		l.reopen(c)
		return
	}
	c.state = csIdle
	c.r, c.w = 0, 0
	l.pushIdle(c)
}

// lose closes a connection that failed or ended; a measured request in
// flight on it counts as an error of the given kind.
func (l *loop) lose(c *conn, kind *int64) {
	if c.state == csBusy && c.measured {
		l.inflight--
		if kind == nil {
			kind = &l.errs.Connection
		}
		*kind++
	}
	l.closeConn(c)
	l.reopen(c)
}

func (l *loop) closeConn(c *conn) {
	if c.fd >= 0 {
		syscall.Close(c.fd)
		c.fd = -1
	}
	c.state = csClosed
	l.calm(c)
}

// calm clears a connection's reasons to need its events promptly.
func (l *loop) calm(c *conn) {
	if c.wantOut {
		c.wantOut = false
		l.urgent--
	}
	if c.partial {
		c.partial = false
		l.urgent--
	}
}

// reopen replaces a closed connection, unless the sending is over.
func (l *loop) reopen(c *conn) {
	if l.stopped {
		return
	}
	for {
		err := l.dial(c)
		if err == nil {
			return
		}
		if l.connectFailed(c, err) {
			return
		}
	}
}

// connectFailed counts a failed connect; it reports whether the connection
// has been given up (or the start-up failed).
func (l *loop) connectFailed(c *conn, err error) bool {
	if l.startup {
		if l.startErr == nil {
			l.startErr = err
		}
		return true
	}
	l.connectFailures++
	l.connectErr = err
	c.fails++
	if c.fails >= maxDialAttempts {
		c.state = csDead
		l.alive--
		return true
	}
	return false
}

// dial opens a non-blocking socket and starts connecting it.
func (l *loop) dial(c *conn) error {
	fd, err := syscall.Socket(l.family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if err != nil {
		return err
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		syscall.Close(fd)
		return err
	}
	// Responses are timed by the kernel's receive time, not by when the
	// loop gets around to reading them. (Without it, by the latter.)
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	var events uint32 = syscall.EPOLLIN
	state := csIdle
	switch err := syscall.Connect(fd, l.sa); err {
	case nil:
	case syscall.EINPROGRESS:
		events, state = syscall.EPOLLOUT, csConnecting
	default:
		syscall.Close(fd)
		return err
	}
	c.gen++
	c.fd = fd
	c.state = state
	l.calm(c)
	c.r, c.w = 0, 0
	c.resetResponse()
	if e := l.ctl(c, syscall.EPOLL_CTL_ADD, events); e != 0 {
		syscall.Close(fd)
		c.fd = -1
		c.state = csClosed
		return e
	}
	if state == csConnecting {
		l.pending++
	} else {
		l.connected(c)
	}
	return nil
}

func (l *loop) onConnect(c *conn) {
	l.pending--
	v, err := syscall.GetsockoptInt(c.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
	if err == nil && v != 0 {
		err = syscall.Errno(v)
	}
	if err == nil {
		if e := l.ctl(c, syscall.EPOLL_CTL_MOD, syscall.EPOLLIN); e != 0 {
			err = e
		}
	}
	if err != nil {
		l.closeConn(c)
		if !l.connectFailed(c, err) {
			l.reopen(c)
		}
		return
	}
	l.connected(c)
}

func (l *loop) connected(c *conn) {
	c.state = csIdle
	c.fails = 0
	if c.ever {
		l.reconnects++
	}
	c.ever = true
	l.pushIdle(c)
}

func (l *loop) ctl(c *conn, op int, events uint32) syscall.Errno {
	l.ctlEv = syscall.EpollEvent{Events: events, Fd: c.idx, Pad: int32(c.gen)}
	return epollCtl(l.epfd, op, c.fd, &l.ctlEv)
}

// pushIdle puts a connection at the back of the idle ring. A connection is in
// the ring at most once: one that left the idle state while in it keeps its
// place, and popIdle skips it if it is not idle again by then.
func (l *loop) pushIdle(c *conn) {
	if c.inIdle {
		return
	}
	c.inIdle = true
	l.ring[(l.ringHead+l.ringLen)%len(l.ring)] = c.idx
	l.ringLen++
}

// popIdle takes the connection idle the longest (so the load spreads over
// all connections), or nil.
func (l *loop) popIdle() *conn {
	for l.ringLen > 0 {
		c := &l.conns[l.ring[l.ringHead]]
		l.ringHead = (l.ringHead + 1) % len(l.ring)
		l.ringLen--
		c.inIdle = false
		if c.state == csIdle {
			return c
		}
	}
	return nil
}

func (l *loop) result() Result {
	r := Result{
		TargetRate:      l.cfg.Rate,
		DurationS:       l.cfg.Duration.Seconds(),
		WarmupS:         l.cfg.Warmup.Seconds(),
		Sent:            l.sent,
		Completed:       l.completed,
		Timeouts:        l.errs.Timeout,
		Unsent:          l.unsent,
		LateSends:       l.late,
		Latency:         latencyOf(&l.lat),
		SendLag:         latencyOf(&l.lag),
		Connections:     len(l.conns),
		ErrorKinds:      l.errs,
		Reconnects:      l.reconnects,
		ConnectFailures: l.connectFailures,
		Timer:           "timerfd",
		connectErr:      l.connectErr,
		lazyWaits:       l.lazyWaits,
	}
	if l.pwait2 {
		r.Timer = "epoll_pwait2"
	}
	r.Errors = l.errs.Status + l.errs.Connection + l.errs.Protocol + l.errs.Timeout
	r.AchievedRate = round(float64(l.completed)/r.DurationS, 2)
	if l.measuring && l.stopped {
		cpu := float64(l.cpu1-l.cpu0) / 1e9
		r.CPUSeconds = round(cpu, 4)
		if wall := float64(l.wall1-l.wall0) / 1e9; wall > 0 {
			r.CPUFraction = round(cpu/wall, 4)
		}
	}
	return r
}

func latencyOf(h *histogram) Latency {
	us := func(ns float64) float64 { return round(ns/1e3, 1) }
	return Latency{
		P50:  us(float64(h.quantile(0.50))),
		P90:  us(float64(h.quantile(0.90))),
		P99:  us(float64(h.quantile(0.99))),
		P999: us(float64(h.quantile(0.999))),
		Max:  us(float64(h.max)),
		Mean: us(h.mean()),
	}
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
