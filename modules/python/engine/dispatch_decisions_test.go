package engine

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// The dispatcher's decisions, on tiny fakes: workers and channels without
// processes or sockets (the decisions never touch them).

// fakeWorkers makes workers named by spec entries "<busy>[r]" (r: being
// recycled), each with one idle channel, listed in idle order.
func fakeWorkers(specs ...string) ([]*worker, []*channel) {
	var workers []*worker
	var idle []*channel
	for _, spec := range specs {
		w := &worker{}
		if strings.HasSuffix(spec, "r") {
			w.state = workerRecycling
			spec = strings.TrimSuffix(spec, "r")
		}
		fmt.Sscan(spec, &w.busy)
		c := &channel{worker: w}
		w.channels = []*channel{c}
		workers = append(workers, w)
		idle = append(idle, c)
	}
	return workers, idle
}

func TestTakeIdle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		threads int
		idle    []string // idle channels' workers, oldest first
		want    int      // index in idle of the channel taken; -1: none
	}{
		{"none idle", 1, nil, -1},
		{"one thread: the most recently used", 1, []string{"0", "0", "0"}, 2},
		{"one thread: not one being recycled while another is free", 1, []string{"0", "0", "0r"}, 1},
		{"one thread: one being recycled when nothing else is free", 1, []string{"0r"}, 0},
		{"threads: the least busy worker", 4, []string{"2", "0", "1"}, 1},
		{"threads: ties go to the most recently used", 4, []string{"1", "1", "1"}, 2},
		{"threads: a busier worker rather than one being recycled", 4, []string{"3", "0r", "2"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, idle := fakeWorkers(tc.idle...)
			p := &Pool{opts: Options{Threads: tc.threads}, idle: slices.Clone(idle)}
			got := p.takeIdleLocked("/x")
			if tc.want < 0 {
				if got != nil {
					t.Fatalf("took a channel from an empty idle list")
				}
				return
			}
			if got != idle[tc.want] {
				t.Fatalf("took channel %d, want %d", slices.Index(idle, got), tc.want)
			}
			if slices.Contains(p.idle, got) || len(p.idle) != len(idle)-1 {
				t.Errorf("the channel taken is still idle, or another left: %d idle", len(p.idle))
			}
			if got.path != "/x" || p.busyChannels != 1 {
				t.Errorf("the channel taken is not occupied: path %q, busy channels %d", got.path, p.busyChannels)
			}
		})
	}
}

// queued makes waiters with frames of the given sizes (0: no frames, i.e.
// a body that is streamed, which cannot be pipelined).
func queued(sizes ...int) []*waiter {
	var ws []*waiter
	for i, size := range sizes {
		w := &waiter{ch: make(chan grant, 1), path: fmt.Sprintf("/w%d", i)}
		if size > 0 {
			w.frames = make([]byte, size)
		}
		ws = append(ws, w)
	}
	return ws
}

func TestPipelineDecisions(t *testing.T) {
	const mean = 250 * time.Microsecond // a depth of 8 (TestPipelineDepth)
	hundred := func(n int) []int { return slices.Repeat([]int{100}, n) }
	for _, tc := range []struct {
		name      string
		state     workerState
		workers   int   // workers in service, of one channel each, this one's included
		elsewhere int   // requests pipelined on the other channels
		already   []int // sizes of requests already pipelined on the channel
		waiting   []int // sizes of the waiting requests, oldest first
		wantMove  int   // how many waiters move onto the channel
	}{
		{"small waiting requests move, up to the depth", workerServing, 1, 0, nil, hundred(10), 8},
		{"fewer than the depth: all of them", workerServing, 1, 0, nil, hundred(3), 3},
		{"in order, stopping at one that cannot be pipelined", workerServing, 1, 0, nil, []int{100, 0, 100}, 1},
		{"a large request is never pipelined", workerServing, 1, 0, nil, []int{pipelineMaxFrames + 1, 100}, 0},
		{"at most pipelineMaxBytes on one channel", workerServing, 1, 0, nil, []int{pipelineMaxFrames, pipelineMaxFrames, pipelineMaxFrames, pipelineMaxFrames, pipelineMaxFrames}, 4},
		{"topped up when two places are free", workerServing, 1, 0, hundred(6), hundred(3), 2},
		{"not topped up for one place", workerServing, 1, 0, hundred(7), hundred(2), 0},
		{"never on a worker being recycled", workerRecycling, 1, 0, nil, hundred(2), 0},
		{"never on a retired worker", workerRetired, 1, 0, nil, hundred(2), 0},
		{"a burst is shared: this channel's share of it", workerServing, 2, 0, nil, hundred(6), 3},
		{"the rest of a burst: the share of what waits and what is pipelined", workerServing, 2, 3, nil, hundred(2), 2},
		{"one waiting, two workers: it goes to the first channel free", workerServing, 2, 0, nil, hundred(1), 0},
		{"two waiting, two workers: one each", workerServing, 2, 0, nil, hundred(2), 1},
		{"three workers share a burst", workerServing, 3, 0, nil, hundred(7), 2},
		{"topped up to its share", workerServing, 2, 2, hundred(3), hundred(5), 2},
		{"not past its share", workerServing, 2, 0, hundred(3), hundred(4), 0},
		{"an overload: the depth decides", workerServing, 2, 8, nil, hundred(40), 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &worker{state: tc.state}
			c := &channel{worker: w}
			for _, r := range queued(tc.already...) {
				c.queued.waiters = append(c.queued.waiters, r)
				c.queued.bytes += len(r.frames)
			}
			waiting := queued(tc.waiting...)
			p := &Pool{opts: Options{Kind: "wsgi", Pipeline: "auto"}, meanDuration: mean, waiters: slices.Clone(waiting),
				workers: make([]*worker, tc.workers), pipelined: len(tc.already) + tc.elsewhere}
			moved := p.pipelineLocked(c)
			if !slices.Equal(moved, waiting[:tc.wantMove]) {
				t.Fatalf("moved %d waiters, want the first %d", len(moved), tc.wantMove)
			}
			if !slices.Equal(p.waiters, waiting[tc.wantMove:]) {
				t.Errorf("%d left waiting, want %d, in order", len(p.waiters), len(waiting)-tc.wantMove)
			}
			if p.pipelined != len(tc.already)+tc.elsewhere+tc.wantMove || c.queued.len() != len(tc.already)+tc.wantMove {
				t.Errorf("counted %d pipelined, %d queued on the channel", p.pipelined, c.queued.len())
			}
		})
	}
}

// TestPipelineShareCountsChannels: the share is per channel of the workers
// in service (a worker of 2 threads takes two shares), and a worker that
// left service (retiring, so out of p.workers) takes none.
func TestPipelineShareCountsChannels(t *testing.T) {
	for _, tc := range []struct {
		name             string
		workers, threads int
		waiting, piped   int
		want             int
	}{
		{"one worker of one thread: everything", 1, 1, 9, 3, 12},
		{"two workers of 2 threads: a quarter", 2, 2, 9, 3, 3},
		{"rounded down", 2, 2, 3, 0, 0},
		{"the other worker retiring: the two shares of one worker of 2 threads", 1, 2, 9, 3, 6},
		{"no worker in service: no division by zero", 0, 1, 4, 0, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Pool{opts: Options{Kind: "wsgi", Pipeline: "auto", Threads: tc.threads}, workers: make([]*worker, tc.workers),
				waiters: queued(slices.Repeat([]int{100}, tc.waiting)...), pipelined: tc.piped}
			if got := p.pipelineShareLocked(); got != tc.want {
				t.Errorf("share %d, want %d", got, tc.want)
			}
		})
	}
}

func TestGive(t *testing.T) {
	for _, tc := range []struct {
		state   supervisor.State
		waiting int
		toFirst bool // the channel goes to the longest-waiting request; else it idles
	}{
		{supervisor.Running, 2, true},
		{supervisor.Draining, 1, true},
		{supervisor.Running, 0, false},
		{supervisor.Stopped, 2, false},
	} {
		_, idle := fakeWorkers("0")
		waiting := queued(make([]int, tc.waiting)...)
		p := &Pool{opts: Options{Threads: 1}, state: tc.state, waiters: slices.Clone(waiting)}
		got := p.giveLocked(idle[0])
		if tc.toFirst {
			if got != waiting[0] || len(p.waiters) != tc.waiting-1 || len(p.idle) != 0 || idle[0].path != waiting[0].path {
				t.Errorf("%s, %d waiting: gave to %v, %d left waiting, %d idle", tc.state, tc.waiting, got, len(p.waiters), len(p.idle))
			}
		} else if got != nil || len(p.idle) != 1 || len(p.waiters) != tc.waiting {
			t.Errorf("%s, %d waiting: gave to %v, want the channel idle and the queue untouched", tc.state, tc.waiting, got)
		}
	}
}

// TestHandOverGrant: a waiting request learns from its grant whether its
// frames are already with the worker, and whether writing them failed;
// a request that gets no channel learns why, as an error.
func TestHandOverGrant(t *testing.T) {
	conn, peer, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &channel{worker: &worker{}, conn: conn}
	p := &Pool{opts: Options{Threads: 1}}

	ready := queued(10)[0] // its frames were complete when it queued
	p.handOff(c, ready, nil)
	if g := <-ready.ch; g.channel != c || !g.sent || g.sendErr != nil {
		t.Errorf("a request with its frames: %+v, want them sent", g)
	}
	got := make([]byte, 10)
	if n, _ := peer.Read(got); n != 10 {
		t.Errorf("the worker got %d bytes of its frames, want 10", n)
	}

	streamed := queued(0)[0] // a streamed body: the waiter sends itself
	p.handOff(c, streamed, nil)
	if g := <-streamed.ch; g.channel != c || g.sent {
		t.Errorf("a request without its frames: %+v, want them not sent", g)
	}

	peer.Close()
	broken := queued(10)[0]
	for range 50 { // the first write to a closed peer may still succeed
		p.handOff(c, broken, nil)
		if g := <-broken.ch; g.sendErr != nil {
			break
		} else if !g.sent {
			t.Fatalf("a request with its frames: %+v", g)
		}
	}
	p.handOff(c, broken, nil)
	if g := <-broken.ch; g.sendErr == nil {
		t.Errorf("writing to a closed worker channel: %+v, want the write's error", g)
	}

	late := queued(10)[0]
	late.deadline = time.Now().Add(-time.Second)
	p.waiters = []*waiter{late}
	p.expireWaiters()
	if g := <-late.ch; g.channel != nil || g.err != errQueueTimeout {
		t.Errorf("a request past queue_timeout: %+v", g)
	}
	p.waiters = []*waiter{late}
	p.failWaitersLocked()
	if g := <-late.ch; g.channel != nil || g.err != errPoolStopped {
		t.Errorf("a request of a stopping pool: %+v", g)
	}
}

// TestClientOf: requests count for max_queue_per_client by the client's
// address as Caddy determined it, else their connection's peer; an IPv6
// client by its /64 (one host is handed a whole /64, and could otherwise
// take a share per address), an IPv4-mapped one as IPv4.
func TestClientOf(t *testing.T) {
	for _, c := range []struct{ ip, remote, want string }{
		{"203.0.113.7", "127.0.0.1:5000", "203.0.113.7/32"},
		{"", "198.51.100.2:443", "198.51.100.2/32"},
		{"2001:db8:1:2:3:4:5:6", "", "2001:db8:1:2::/64"},
		{"", "[2001:db8:1:2:ffff::1]:80", "2001:db8:1:2::/64"},
		{"::ffff:192.0.2.1", "", "192.0.2.1/32"},
		{"fe80::1%eth0", "", "fe80::/64"},
		{"not an address", "198.51.100.2:443", "198.51.100.2/32"},
		{"", "@", "invalid Prefix"},
	} {
		if got := clientOf(c.ip, c.remote).String(); got != c.want {
			t.Errorf("clientOf(%q, %q) = %s, want %s", c.ip, c.remote, got, c.want)
		}
	}
	if clientOf("2001:db8:1:2::1", "") != clientOf("2001:db8:1:2::2", "") || clientOf("2001:db8:1:3::1", "") == clientOf("2001:db8:1:2::1", "") {
		t.Error("IPv6 clients are not counted by their /64")
	}
}

// TestQueueSharePerClient: with every channel busy, one client may have
// max_queue_per_client requests waiting and no more, counted until each
// leaves the queue however it leaves it (here: its client gone), while
// other clients still queue; requests without an address (a Unix
// socket's peers, who cannot be told apart) have no bound of their own.
func TestQueueSharePerClient(t *testing.T) {
	p, _ := oneChannelPool(t, Options{Name: "share", Kind: "wsgi", Pipeline: "off", Threads: 1, MaxQueue: 10, MaxQueuePerClient: 2, QueueTimeout: time.Minute})
	p.mu.Lock()
	p.takeIdleLocked("/busy") // the one channel, busy
	p.mu.Unlock()

	var cancels []context.CancelFunc
	done := make(chan error, 10)
	queue := func(from origin) context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		go func() {
			_, err := p.acquire(ctx, from, "/", true, nil, false, 0)
			done <- err
		}()
		return cancel
	}
	queued := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			p.mu.Lock()
			n := len(p.waiters)
			p.mu.Unlock()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d requests queued, want %d", n, want)
			}
		}
	}
	one, another := origin{"192.0.2.1", "127.0.0.1:4000"}, origin{"", "192.0.2.2:5000"}
	first := queue(one)
	queue(one)
	queued(2)
	short, stop := context.WithTimeout(context.Background(), 5*time.Second) // (not queue_timeout's minute if it queues)
	defer stop()
	if _, err := p.acquire(short, one, "/", true, nil, false, 0); err != errClientQueueFull {
		t.Fatalf("a third request of one client: %v, want errClientQueueFull", err)
	}
	for range 3 {
		queue(origin{"", "@"})
	}
	queue(another)
	queued(6)
	first() // a client gone: its place goes back
	if err := <-done; err != context.Canceled {
		t.Fatalf("the request whose client left: %v", err)
	}
	queue(one)
	queued(6)
	for _, cancel := range cancels {
		cancel()
	}
	for range 6 {
		<-done
	}
	p.mu.Lock()
	left := len(p.waiting)
	p.mu.Unlock()
	if left != 0 {
		t.Errorf("%d clients still counted with the queue empty", left)
	}

	// a request taken off the queue (handed a channel, or pipelined behind
	// another) as its client leaves is served after all: it counts until
	// it has its grant (were the count given back at the leaving, a client
	// could pass its share by leaving; on a slow machine the goroutine may
	// not have seen its leaving when the count is read, and this proves
	// less, but cannot fail for that)
	late := origin{"192.0.2.3", ""}
	queue(late)
	queued(1)
	p.mu.Lock()
	taken := p.waiters[0]
	p.waiters = p.waiters[1:]
	p.mu.Unlock()
	cancels[len(cancels)-1]()
	time.Sleep(200 * time.Millisecond)
	p.mu.Lock()
	counted := p.waiting[clientOf(late.ip, late.remote)].requests
	p.mu.Unlock()
	if counted != 1 {
		t.Errorf("a request handed over as its client left counts %d times, want once until its grant", counted)
	}
	taken.ch <- grant{err: errQueueTimeout}
	if err := <-done; err != errQueueTimeout {
		t.Fatalf("the request handed over: %v", err)
	}
	p.mu.Lock()
	left = len(p.waiting)
	p.mu.Unlock()
	if left != 0 {
		t.Errorf("%d clients still counted once it had its grant", left)
	}
}

// FuzzClientOf: any address Caddy or a connection may give (an
// X-Forwarded-For entry Caddy took, a peer's host:port) names one client,
// never panics: the /32 of an IPv4 address (IPv4-mapped ones included),
// the /64 of an IPv6 one, zones dropped; no client for no address.
func FuzzClientOf(f *testing.F) {
	for _, seed := range [][2]string{{"203.0.113.7", ""}, {"", "[2001:db8::1%eth0]:80"}, {"::ffff:10.0.0.1", "x"}, {"", "@"}, {"1.2.3.4:5", "1.2.3.4"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, ip, remote string) {
		prefix := clientOf(ip, remote)
		host, err := netip.ParseAddr(ip)
		if err != nil {
			ap, err := netip.ParseAddrPort(remote)
			if err != nil {
				if prefix.IsValid() {
					t.Fatalf("clientOf(%q, %q) = %s, for no address", ip, remote, prefix)
				}
				return
			}
			host = ap.Addr()
		}
		host = host.Unmap().WithZone("")
		bits := 64
		if host.Is4() {
			bits = 32
		}
		if prefix.Bits() != bits || !prefix.Contains(host) || prefix.Masked() != prefix {
			t.Fatalf("clientOf(%q, %q) = %s, want the /%d of %s", ip, remote, prefix, bits, host)
		}
	})
}
