package engine

import (
	"bytes"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// onePool is a running pool of one worker whose channel's far end the
// test holds (it plays the worker); the worker's process is a sleeping
// stand-in, in a process group of its own, that the pool may kill.
func onePool(t *testing.T) (*Pool, net.Conn) {
	t.Helper()
	conn, far := channelPair(t)
	stand, _ := startGroup(t)
	proc := adoptChild(t, stand.Process.Pid)
	p := New(Options{Name: "hostile", Kind: "wsgi", Pipeline: "off", Threads: 1, MaxQueue: 10, QueueTimeout: time.Minute}, zap.NewNop())
	p.state = supervisor.Running
	w := &worker{proc: proc}
	w.channels = []*channel{{worker: w, conn: conn, frames: protocol.NewReader(conn)}}
	p.mu.Lock()
	p.addWorkerLocked(w)
	p.mu.Unlock()
	return p, far
}

// TestWorkerThatStopsReadingTimesOut: a worker that stops reading the
// request body Caddy writes to it (its socket's buffer full) times out
// like one that does not answer: the request ends with its timeout, the
// worker is terminated, nothing waits forever. Before, only reads had a
// deadline: the write, or the goroutine sending a spilled body, blocked
// for good and held the request, its client and the channel.
func TestWorkerThatStopsReadingTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		answer bool
	}{
		{"a body held in memory, never read", memBodyLimit, false},
		{"a body spilled to a file, a whole response sent after its head", 4 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, worker := onePool(t)
			if tc.answer {
				go func() {
					h, _, err := protocol.NewReader(worker).Next()
					if err != nil {
						return
					}
					out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00"))
					out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, []byte("hi"))
					_, _ = worker.Write(out) // and reads nothing more
				}()
			}
			r := httptest.NewRequest("POST", "/", bytes.NewReader(make([]byte, tc.size)))
			body, err := ReadBody(r, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			done := make(chan error, 1)
			go func() { done <- p.Serve(httptest.NewRecorder(), r, &Request{Body: body, Timeout: time.Second}) }()
			select {
			case err := <-done:
				if FailureOf(err) != TimedOut {
					t.Errorf("Serve: %v, want the request's timeout", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Serve still blocked 15 s into a request with a 1 s timeout")
			}
		})
	}
}
