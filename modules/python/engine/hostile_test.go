package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// onePool is a running pool of one worker whose channel's far end the
// test holds (it plays the worker); the worker's process is a sleeping
// stand-in, in a process group of its own, that the pool may kill.
func onePool(t *testing.T) (*Pool, net.Conn) {
	return onePoolOf(t, "wsgi")
}

// onePoolOf is onePool for an app of kind ("wsgi" or "asgi"), its channel
// read through a buffer as a real worker's is.
func onePoolOf(t *testing.T, kind string) (*Pool, net.Conn) {
	t.Helper()
	p := New(Options{Name: "hostile", Kind: kind, Pipeline: "off", Threads: 1, MaxQueue: 10, QueueTimeout: time.Minute}, zap.NewNop())
	p.state = supervisor.Running
	_, far := addFakeWorker(t, p)
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
			body, err := readBody(r, 1<<30, "", nil)
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

// TestClosePayload: the close frame Caddy sends for an app over an
// HTTP/2 WebSocket carries only a code a close frame may carry, and a
// reason that is UTF-8 and at most 123 bytes, whatever the app asked for.
func TestClosePayload(t *testing.T) {
	long := strings.Repeat("é", 70) // 140 bytes: the cut falls inside a character
	for _, tc := range []struct {
		code   int
		reason string
		want   []byte
	}{
		{1000, "bye", append([]byte{0x03, 0xe8}, "bye"...)},
		{4001, "", []byte{0x0f, 0xa1}},
		{1005, "x", nil},
		{1006, "", nil},
		{999, "x", nil},
		{1004, "x", nil},
		{1015, "x", nil},
		{2000, "x", nil},
		{5000, "x", nil},
		{65536 + 1000, "x", nil},
		{1000, "a\xffb", append([]byte{0x03, 0xe8}, "ab"...)},
		{1000, long, append([]byte{0x03, 0xe8}, long[:122]...)},
	} {
		got := closePayload(tc.code, tc.reason)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("closePayload(%d, %q) = %q, want %q", tc.code, tc.reason, got, tc.want)
		}
		if len(got) > 125 || len(got) > 2 && !utf8.Valid(got[2:]) {
			t.Errorf("closePayload(%d, %q): %d bytes, UTF-8 %v", tc.code, tc.reason, len(got), utf8.Valid(got[2:]))
		}
	}
}

// TestRefusalStatus: an app that refuses a WebSocket with a 2xx answer
// over HTTP/2 does not open it: the client gets 403 (over HTTP/1.1 only a
// 101 opens one, so the app's status stands).
func TestRefusalStatus(t *testing.T) {
	h2 := httptest.NewRequest("CONNECT", "/ws", nil)
	h2.ProtoMajor, h2.ProtoMinor = 2, 0
	h2.Header.Set(":protocol", "websocket")
	h1 := httptest.NewRequest("GET", "/ws", nil)
	for _, tc := range []struct {
		name         string
		r            *http.Request
		status, want int
	}{
		{"HTTP/2, 200", h2, 200, 403},
		{"HTTP/2, 204", h2, 204, 403},
		{"HTTP/2, 401", h2, 401, 401},
		{"HTTP/2, 302", h2, 302, 302},
		{"HTTP/1.1, 200", h1, 200, 200},
	} {
		if got := refusalStatus(tc.r, tc.status); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// answerAll plays a worker that answers every request on its channel
// with a small 200 once the request's frames are all in.
func answerAll(worker net.Conn) {
	frames := protocol.NewReader(worker)
	for {
		h, _, err := frames.Next()
		if err != nil {
			return
		}
		if (h.Type == protocol.RequestHead || h.Type == protocol.RequestBody) && h.End() {
			out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK"))
			out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, []byte("ok"))
			if _, err := worker.Write(out); err != nil {
				return
			}
		}
	}
}

// TestHandOverAfterTheDeadlinePassed: a request handed a channel whose
// last request's deadline has passed (a pool paused for longer than the
// timeout, as a restore does) is served: the hand-over writes under the
// new request's deadline, not the old one, and no healthy worker is taken
// for a hung one.
func TestHandOverAfterTheDeadlinePassed(t *testing.T) {
	p, worker := onePool(t)
	go answerAll(worker)
	serve := func() error {
		r := httptest.NewRequest("POST", "/", strings.NewReader("body"))
		body, err := readBody(r, 1<<20, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer body.Close()
		return p.Serve(httptest.NewRecorder(), r, &Request{Body: body, Timeout: 200 * time.Millisecond})
	}
	if err := serve(); err != nil {
		t.Fatalf("the first request: %v", err)
	}
	if err := p.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve() }()
	time.Sleep(400 * time.Millisecond) // the queued request waits past the last one's deadline
	p.Resume()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the request handed over after the pause: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request handed over after the pause did not end")
	}
}

// TestFailureAfterHeadLeavesNoAppHeader: when the app's response fails
// after its head reached Caddy but before anything was written to the
// client, Caddy's error goes out with the header as it was before the
// app's head: no cookie the app set, no Location, no Content-Length of a
// body that never came (the client would read the error truncated).
func TestFailureAfterHeadLeavesNoAppHeader(t *testing.T) {
	head := []byte("200 OK\x00Set-Cookie\x00session=s3cret\x00Location\x00/next\x00Content-Length\x00100\x00")
	for _, tc := range []struct {
		name   string
		kind   string
		body   int                               // the request's body, bytes (4 MiB: streamed from a file)
		answer func(worker net.Conn, sid uint32) // what the worker does after the request's head
		want   Failure
	}{
		{"ASGI: the head and the app's abort read together", "asgi", 0, func(worker net.Conn, sid uint32) {
			out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, sid, head)
			out = protocol.AppendFrame(out, protocol.Abort, 0, sid, []byte("RuntimeError: boom"))
			_, _ = worker.Write(out)
		}, AppAborted},
		{"WSGI: the worker dies after its head", "wsgi", 0, func(worker net.Conn, sid uint32) {
			_, _ = worker.Write(protocol.AppendFrame(nil, protocol.ResponseHead, 0, sid, head))
			worker.Close()
		}, WorkerBroken},
		{"a whole answer, then the worker dies before taking the request's body", "wsgi", 4 << 20, func(worker net.Conn, sid uint32) {
			out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, sid, head)
			out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, sid, bytes.Repeat([]byte("x"), 3000))
			_, _ = worker.Write(out)
			worker.Close()
		}, WorkerBroken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, worker := onePoolOf(t, tc.kind)
			go func() {
				h, _, err := protocol.NewReader(worker).Next()
				if err == nil {
					tc.answer(worker, h.Stream)
				}
			}()
			r := httptest.NewRequest("POST", "/", bytes.NewReader(make([]byte, tc.body)))
			body, err := readBody(r, 1<<30, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			rec := httptest.NewRecorder()
			rec.Header().Set("Server", "Caddy")
			done := make(chan error, 1)
			go func() { done <- p.Serve(rec, r, &Request{Body: body, Timeout: 10 * time.Second}) }()
			select {
			case err := <-done:
				if FailureOf(err) != tc.want {
					t.Errorf("Serve: %v, want failure %d", err, tc.want)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Serve still blocked after 15 s")
			}
			if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
				t.Errorf("something was written to the client: %d %q", rec.Code, rec.Body.String())
			}
			if want := (http.Header{"Server": {"Caddy"}}); fmt.Sprint(rec.Header()) != fmt.Sprint(want) {
				t.Errorf("header after the failure: %v, want %v", rec.Header(), want)
			}
		})
	}
}

// TestBrokenWebSocketRefusalLeavesNoAppHeader: a worker that refuses a
// WebSocket with an HTTP answer and breaks before its body gets Caddy's
// error out with the header as it was: not the app's cookie or Location
// (the refusal's head had already put them in the header).
func TestBrokenWebSocketRefusalLeavesNoAppHeader(t *testing.T) {
	p, worker := onePoolOf(t, "asgi")
	go func() {
		h, _, err := protocol.NewReader(worker).Next()
		if err == nil {
			_, _ = worker.Write(protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream,
				[]byte("403 Forbidden\x00Set-Cookie\x00session=s3cret\x00Location\x00/next\x00")))
			worker.Close()
		}
	}()
	r := httptest.NewRequest("GET", "/ws", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	rec := httptest.NewRecorder()
	rec.Header().Set("Server", "Caddy")
	done := make(chan error, 1)
	go func() { done <- p.ServeWebSocket(rec, r, &Request{Timeout: 10 * time.Second}) }()
	select {
	case err := <-done:
		if FailureOf(err) != WorkerBroken {
			t.Errorf("ServeWebSocket: %v, want WorkerBroken", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ServeWebSocket still blocked after 15 s")
	}
	if want := (http.Header{"Server": {"Caddy"}}); fmt.Sprint(rec.Header()) != fmt.Sprint(want) {
		t.Errorf("header after the failure: %v, want %v", rec.Header(), want)
	}
}

// TestASGIBadHeadCancelsAnAppThatDoesNotHear: an ASGI app whose streamed
// answer's head Caddy refuses (a header name that is no token, which the
// runtime lets through) is told its client left. One that does not hear it
// (it awaits an event, not receive()) has its task cancelled after
// closeGrace, and the worker goes on serving: before, the drain waited for
// the request's timeout, and then terminated the worker as hung, with
// every request and WebSocket it served.
func TestASGIBadHeadCancelsAnAppThatDoesNotHear(t *testing.T) {
	p, worker := onePoolOf(t, "asgi")
	cancels := make(chan uint8, 4)
	go func() {
		fr := protocol.NewReader(worker)
		h, _, err := fr.Next()
		if err != nil {
			return
		}
		sid := h.Stream
		_, _ = worker.Write(protocol.AppendFrame(nil, protocol.ResponseHead, 0, sid, []byte("200 OK\x00Bad Name\x00v\x00")))
		for {
			h, _, err := fr.Next()
			if err != nil {
				return
			}
			if h.Type == protocol.Cancel {
				cancels <- h.Flags
				if h.Flags&protocol.FlagTimedOut != 0 { // the task cancelled: its stream ends
					_, _ = worker.Write(protocol.AppendFrame(nil, protocol.ResponseBody, protocol.FlagEnd, sid, nil))
				}
			}
		}
	}()
	rec := httptest.NewRecorder()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		done <- p.Serve(rec, httptest.NewRequest("GET", "/events", nil), &Request{Timeout: time.Minute})
	}()
	select {
	case err := <-done:
		if FailureOf(err) != BadResponse {
			t.Errorf("Serve: %v, want BadResponse (the worker kept)", err)
		}
	case <-time.After(closeGrace + 20*time.Second):
		t.Fatalf("Serve still blocked %s after the bad head (the request's timeout is a minute)", time.Since(start).Round(time.Second))
	}
	if got := []uint8{<-cancels, <-cancels}; got[0] != 0 || got[1]&protocol.FlagTimedOut == 0 {
		t.Errorf("cancels sent with flags %v, want a plain one, then one that cancels the task", got)
	}
	if st := p.Status(); len(st.Workers) != 1 || st.Restarts["timeout"] != 0 || st.Restarts["crash"] != 0 {
		t.Errorf("after the bad head: %d workers, restarts %v; want the one worker kept", len(st.Workers), st.Restarts)
	}
}

// TestASGITimeoutCancelsTheRequest: an ASGI request past its timeout
// before its head costs that request, not its worker (which serves many
// at once): Caddy sends a Cancel flagged FlagTimedOut, drops what the
// worker still sends for the request up to its end, answers the timeout,
// and keeps the worker and its channel. Before, the worker was terminated
// with every request it served.
func TestASGITimeoutCancelsTheRequest(t *testing.T) {
	p, worker := onePoolOf(t, "asgi")
	cancel := make(chan [2]protocol.Header, 1)
	go func() {
		frames := protocol.NewReader(worker)
		h, _, err := frames.Next()
		if err != nil {
			return
		}
		c, _, err := frames.Next() // nothing until Caddy's cancel
		if err != nil {
			return
		}
		cancel <- [2]protocol.Header{h, c}
		out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("500 Internal Server Error\x00"))
		out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, []byte("the task was cancelled"))
		_, _ = worker.Write(out)
		// the next request on the channel, answered at once
		if h, _, err = frames.Next(); err != nil {
			return
		}
		out = protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00"))
		out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, []byte("next"))
		_, _ = worker.Write(out)
	}()
	r := httptest.NewRequest("GET", "/slow", nil)
	rec := httptest.NewRecorder()
	done := make(chan error, 1)
	go func() { done <- p.Serve(rec, r, &Request{Timeout: 300 * time.Millisecond}) }()
	select {
	case err := <-done:
		if FailureOf(err) != TimedOut {
			t.Errorf("Serve: %v, want the request's timeout", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve still blocked 15 s into a request with a 300 ms timeout")
	}
	select {
	case hc := <-cancel:
		if c := hc[1]; c.Type != protocol.Cancel || c.Flags != protocol.FlagTimedOut || c.Stream != hc[0].Stream {
			t.Errorf("the worker was sent %v after request %v, want a Cancel of its stream flagged FlagTimedOut", c, hc[0])
		}
	default:
		t.Error("the worker was sent no cancel")
	}
	if rec.Body.Len() != 0 {
		t.Errorf("the worker's answer after the cancel reached the client: %q", rec.Body.String())
	}
	st := p.Status()
	if st.Restarts["timeout"] != 0 || len(st.Workers) != 1 {
		t.Errorf("after the timeout: %d workers, restarts %v; want the one worker kept", len(st.Workers), st.Restarts)
	}
	// the channel is in step and has no deadline of the old request armed
	rec = httptest.NewRecorder()
	if err := p.Serve(rec, httptest.NewRequest("GET", "/next", nil), &Request{Timeout: 10 * time.Second}); err != nil || rec.Body.String() != "next" {
		t.Errorf("the next request on the channel: %v %d %q", err, rec.Code, rec.Body.String())
	}
}

// TestAnswerBeforeTheBodyIsRead: a worker that writes its whole answer,
// larger than a socket's buffer, before it reads the request's body (what
// the WSGI runtime does for an app that ignores the body: it drains it
// after the response) gets its answer read while the body is still being
// written, whatever the body's size. A body held in memory went in one
// write with the head, and the answer was read only after it: with a
// 250 KiB body the two sides waited for each other until the timeout.
func TestAnswerBeforeTheBodyIsRead(t *testing.T) {
	page := make([]byte, 300<<10)
	for _, size := range []int{0, 1, inlineBodyLimit, inlineBodyLimit + 1, 150 << 10, 250 << 10, memBodyLimit, memBodyLimit + 1, 2 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			p, far := onePool(t)
			drained := make(chan int, 1)
			go func() {
				fr := protocol.NewReader(bufio.NewReaderSize(far, 64<<10))
				h, _, err := fr.Next()
				if err != nil {
					drained <- -1
					return
				}
				out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00Content-Type\x00text/plain"))
				out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, page)
				if _, err := far.Write(out); err != nil { // all of it, as sendall
					drained <- -1
					return
				}
				got, end := 0, h.End()
				for !end { // then the body, as Input.drain
					h, payload, err := fr.Next()
					if err != nil {
						drained <- -1
						return
					}
					got, end = got+len(payload), h.End()
				}
				drained <- got
			}()
			r := httptest.NewRequest("GET", "/big-page", bytes.NewReader(make([]byte, size)))
			body, err := readBody(r, 100<<20, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			rec := httptest.NewRecorder()
			if err := p.Serve(rec, r, &Request{Body: body, Timeout: 5 * time.Second}); err != nil {
				t.Fatalf("Serve: %v (failure %v)", err, FailureOf(err))
			}
			if rec.Code != 200 || rec.Body.Len() != len(page) {
				t.Fatalf("status %d, %d bytes of the %d the worker sent", rec.Code, rec.Body.Len(), len(page))
			}
			if got := <-drained; got != size {
				t.Fatalf("the worker read %d bytes of the %d-byte body", got, size)
			}
		})
	}
}

// addFakeWorker adds to p a worker whose channel's far end the test holds
// (it plays the worker), its process a sleeping stand-in, as onePool's.
func addFakeWorker(t *testing.T, p *Pool) (*worker, net.Conn) {
	t.Helper()
	conn, far := channelPair(t)
	stand, _ := startGroup(t)
	w := &worker{proc: adoptChild(t, stand.Process.Pid)}
	w.channels = []*channel{{worker: w, conn: conn, frames: protocol.NewReader(bufio.NewReaderSize(conn, 64<<10))}}
	p.mu.Lock()
	p.addWorkerLocked(w)
	p.mu.Unlock()
	return w, far
}

// TestRetiredWorkerEndsAtStopTimeout: a worker retired (max_requests,
// max_memory, max_lifetime, a restart or reload, a scale-down) while a
// request on it never ends (a WebSocket, an event stream) is stopped once
// stop_timeout has passed, and no more retired workers wait than the pool
// may have workers. A client holding a WebSocket per worker and sending
// max_requests requests left one more Python process at each recycling,
// for good; a restart's old workers served their WebSockets with the old
// code for as long as the clients stayed.
func TestRetiredWorkerEndsAtStopTimeout(t *testing.T) {
	// a request that never ends on w: its far end reads it, never answers
	busy := func(p *Pool, far net.Conn) chan error {
		served := make(chan error, 1)
		go func() {
			served <- p.Serve(httptest.NewRecorder(), httptest.NewRequest("POST", "/events", nil), &Request{}) // not retried elsewhere
		}()
		if _, _, err := protocol.NewReader(far).Next(); err != nil {
			t.Fatal(err)
		}
		return served
	}
	retireFor := func(p *Pool, w *worker, reason string) {
		p.mu.Lock()
		p.retireLocked(w, reason, true)
		p.mu.Unlock()
	}
	retire := func(p *Pool, w *worker) { retireFor(p, w, "max_requests") }
	ended := func(w *worker, within time.Duration) bool {
		select {
		case <-w.proc.Done():
			return true
		case <-time.After(within):
			return false
		}
	}
	newPool := func(stopTimeout time.Duration) *Pool {
		p := New(Options{Name: "retiring", Kind: "wsgi", Pipeline: "off", Threads: 1, Workers: 1, MaxQueue: 10, QueueTimeout: time.Minute, StopTimeout: stopTimeout}, zap.NewNop())
		p.state = supervisor.Running
		return p
	}

	t.Run("stop_timeout", func(t *testing.T) {
		p := newPool(300 * time.Millisecond)
		w, far := addFakeWorker(t, p)
		served := busy(p, far)
		retire(p, w)
		if !ended(w, 10*time.Second) {
			t.Fatal("a retired worker with a request that never ends still runs 10 s after its 300 ms stop_timeout")
		}
		select {
		case err := <-served:
			if err == nil {
				t.Fatal("the cut request ended without an error")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the request on the stopped worker did not end")
		}
	})

	t.Run("a request with a deadline runs to it", func(t *testing.T) {
		// a report with `timeout 300s` on a worker max_requests recycled
		// is not cut at a 30 s stop_timeout
		p := newPool(300 * time.Millisecond)
		w, far := addFakeWorker(t, p)
		served := make(chan error, 1)
		go func() {
			served <- p.Serve(httptest.NewRecorder(), httptest.NewRequest("POST", "/report", nil), &Request{Timeout: time.Minute})
		}()
		fr := protocol.NewReader(far)
		h, _, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		retire(p, w)
		if ended(w, time.Second) {
			t.Fatal("a recycled worker was stopped at stop_timeout while its request had a deadline of its own")
		}
		out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00"))
		out = protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, []byte("report"))
		if _, err := far.Write(out); err != nil {
			t.Fatal(err)
		}
		if err := <-served; err != nil {
			t.Fatalf("the report: %v", err)
		}
		if !ended(w, 10*time.Second) {
			t.Fatal("the recycled worker did not stop once its request ended")
		}
	})

	t.Run("a request that loses its deadline past stop_timeout", func(t *testing.T) {
		// an ASGI response whose head comes after the stop_timeout (a
		// stream from then on) is looked at again, not left for good
		p := newPool(300 * time.Millisecond)
		w, far := addFakeWorker(t, p)
		go func() {
			_ = p.Serve(httptest.NewRecorder(), httptest.NewRequest("POST", "/slow-stream", nil), &Request{Timeout: time.Minute})
		}()
		if _, _, err := protocol.NewReader(far).Next(); err != nil {
			t.Fatal(err)
		}
		retire(p, w)
		time.Sleep(500 * time.Millisecond)  // past its stop_timeout
		w.channels[0].unbounded.Store(true) // (what a stream's head does)
		if !ended(w, 5*time.Second) {
			t.Fatal("a retired worker whose request lost its deadline past stop_timeout still runs")
		}
	})

	t.Run("a scale-down's workers have their stop_timeout", func(t *testing.T) {
		// scaled from 3 workers to 1: the pool's size is 1 by the time
		// the two it lets go retire, and the cap counted against it
		// stopped the first at once
		p := New(Options{Name: "retiring", Kind: "wsgi", Pipeline: "off", Threads: 1, Workers: 3, MaxQueue: 10, QueueTimeout: time.Minute, StopTimeout: time.Minute}, zap.NewNop())
		p.state = supervisor.Running
		first, far1 := addFakeWorker(t, p)
		busy(p, far1)
		second, far2 := addFakeWorker(t, p)
		busy(p, far2)
		p.mu.Lock()
		p.minWorkers, p.maxWorkers = 1, 1
		p.mu.Unlock()
		retireFor(p, first, "scale")
		retireFor(p, second, "scale")
		if ended(first, time.Second) || ended(second, 0) {
			t.Fatal("a worker a scale-down let go was stopped before its stop_timeout")
		}
	})

	for _, reason := range []string{"reload", "scale"} {
		t.Run("retired for "+reason, func(t *testing.T) {
			p := newPool(300 * time.Millisecond)
			w, far := addFakeWorker(t, p)
			busy(p, far)
			retireFor(p, w, reason)
			if !ended(w, 10*time.Second) {
				t.Fatalf("a worker retired for %s with a request that never ends still runs 10 s after its 300 ms stop_timeout", reason)
			}
		})
	}

	t.Run("at most as many retired as workers", func(t *testing.T) {
		p := newPool(time.Minute)
		first, far1 := addFakeWorker(t, p)
		busy(p, far1)
		retire(p, first)
		if ended(first, 300*time.Millisecond) {
			t.Fatal("a retired worker stopped long before its stop_timeout")
		}
		second, far2 := addFakeWorker(t, p)
		busy(p, far2)
		retire(p, second)
		if !ended(first, 10*time.Second) {
			t.Fatal("two retired workers with requests in flight wait in a pool of one worker: the older one should have stopped")
		}
		if ended(second, 300*time.Millisecond) {
			t.Fatal("the newer retired worker stopped too")
		}
	})
}

// failingWriter is a client that has left: every write fails.
type failingWriter struct{ *httptest.ResponseRecorder }

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("client gone") }

// TestBodyOutlivesItsHandler: a request body still being sent to the
// worker when its handler returns (the client left a streamed answer; the
// adapter then closes the body) reaches the worker whole. The spill file
// was closed under the body's goroutine: the worker got part of the body
// and waited for the rest until its timeout killed it.
func TestBodyOutlivesItsHandler(t *testing.T) {
	p, far := onePool(t)
	const size = 1 << 20 // spilled to a file
	bodyRead := make(chan struct{})
	got := make(chan int, 1)
	go func() {
		fr := protocol.NewReader(bufio.NewReaderSize(far, 64<<10))
		h, _, err := fr.Next()
		if err != nil {
			got <- -1
			return
		}
		// a streamed answer begins before the body is read
		out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00"))
		out = protocol.AppendFrame(out, protocol.ResponseBody, 0, h.Stream, []byte("first part"))
		if _, err := far.Write(out); err != nil {
			got <- -1
			return
		}
		<-bodyRead
		n := 0
		for {
			far.SetReadDeadline(time.Now().Add(5 * time.Second))
			bh, payload, err := fr.Next()
			if err != nil {
				got <- n
				return
			}
			n += len(payload)
			if bh.End() {
				break
			}
		}
		_, _ = far.Write(protocol.AppendFrame(nil, protocol.ResponseBody, protocol.FlagEnd, h.Stream, nil))
		got <- n
	}()
	r := httptest.NewRequest("POST", "/stream", bytes.NewReader(make([]byte, size)))
	body, err := readBody(r, 100<<20, "", nil)
	if err != nil || body.file == nil {
		t.Fatalf("ReadBody: %v (spilled: %v)", err, body != nil && body.file != nil)
	}
	func() {
		defer func() { _ = recover() }() // http.ErrAbortHandler: the answer was cut
		defer body.Close()               // as the adapter's defer
		_ = p.Serve(failingWriter{httptest.NewRecorder()}, r, &Request{Body: body, Timeout: 30 * time.Second})
	}()
	close(bodyRead)
	if n := <-got; n != size {
		t.Fatalf("the worker got %d bytes of the %d-byte body sent after its handler returned", n, size)
	}
}

// TestAppFailuresReachTheLogWithinBounds: the message of an app's Abort
// frame reaches the log cut to 4 KiB, at most ten lines a second for the
// app, the others counted: a worker may write a 1 MiB message (a hostile
// one is not bound by the runtime's 4 KiB) for each of the requests it
// makes to itself, which went to the log whole, one line each.
func TestAppFailuresReachTheLogWithinBounds(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	p := New(Options{Name: "hostile", Kind: "asgi", Pipeline: "off", Threads: 1, MaxQueue: 10, QueueTimeout: time.Minute}, zap.New(core))
	p.state = supervisor.Running
	_, worker := addFakeWorker(t, p)
	message := bytes.Repeat([]byte("\x1b[2Jboom "), (protocol.MaxPayload-16)/9)
	const requests = 30
	go func() {
		frames := protocol.NewReader(worker)
		for range requests {
			h, _, err := frames.Next()
			if err != nil {
				return
			}
			out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00"))
			out = protocol.AppendFrame(out, protocol.Abort, 0, h.Stream, message)
			if _, err := worker.Write(out); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	for range requests {
		if err := p.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), &Request{Timeout: 10 * time.Second}); FailureOf(err) != AppAborted {
			t.Fatalf("Serve: %v, want the app's abort", err)
		}
	}
	elapsed := time.Since(start)
	lines := logs.FilterMessageSnippet("app failed").All()
	if len(lines) == 0 || len(lines) > 1+int(elapsed/(100*time.Millisecond)) {
		t.Errorf("%d lines for %d failures in %s, want at least one and at most ten a second", len(lines), requests, elapsed)
	}
	for _, l := range lines {
		if got := len(l.ContextMap()["error"].(string)); got > 4<<10 {
			t.Errorf("a logged message of %d bytes, want at most 4 KiB", got)
		}
	}
}

// TestBodyMustMatchItsContentLength: an app whose body is not the length
// its Content-Length declares (a file that grew or shrank while it was
// read, a length set by hand, a hostile app) never has its response
// reach the client as if it were complete. Go's HTTP/1.1 server closed
// such connections itself, but its HTTP/2 server sent a longer body as
// it was after the app's length (a proxy in front could split it into
// two responses) and ended a shorter one as complete. A response that
// came whole is refused with 500 before anything is sent; a streamed one
// is cut off. A HEAD answered without a body gets no Content-Length of 0,
// and one length sent twice goes out once.
func TestBodyMustMatchItsContentLength(t *testing.T) {
	x := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
	for _, tc := range []struct {
		name   string
		method string
		length string   // the app's Content-Length header(s), "" for none
		body   [][]byte // the body frames (the last ends the response)
		status int      // what the client gets; 0: a response cut off
		got    string   // its Content-Length header(s), and body length
	}{
		{"one frame, longer than declared", "GET", "5", [][]byte{x(10)}, 500, ""},
		{"one frame, shorter than declared", "GET", "20", [][]byte{x(10)}, 500, ""},
		{"one frame, declared empty", "GET", "0", [][]byte{x(10)}, 500, ""},
		{"one large frame (held in memory), shorter than declared", "GET", "5000", [][]byte{x(4000)}, 500, ""},
		{"streamed, longer than declared", "GET", "150", [][]byte{x(100), x(100)}, 0, ""},
		{"streamed, declared empty", "GET", "0", [][]byte{x(100), x(100)}, 0, ""},
		{"streamed, shorter than declared", "GET", "300", [][]byte{x(100), x(100)}, 0, ""},
		{"streamed, as declared", "GET", "200", [][]byte{x(100), x(100)}, 200, "[200] 200"},
		{"one frame, as declared", "GET", "10", [][]byte{x(10)}, 200, "[10] 10"},
		{"one frame, no length", "GET", "", [][]byte{x(10)}, 200, "[10] 10"},
		{"the same length twice", "GET", "10,10", [][]byte{x(10)}, 200, "[10] 10"},
		{"HEAD, a length and no body", "HEAD", "100", [][]byte{nil}, 200, "[100] 0"},
		{"HEAD, no length and no body", "HEAD", "", [][]byte{nil}, 200, "[] 0"},
	} {
		head := "200 OK\x00"
		for _, v := range strings.Split(tc.length, ",") {
			if v != "" {
				head += "Content-Length\x00" + v + "\x00"
			}
		}
		for _, proto := range []string{"HTTP/1.1", "HTTP/2"} {
			t.Run(tc.name+" over "+proto, func(t *testing.T) {
				p, worker := onePool(t)
				go func() {
					frames := protocol.NewReader(worker)
					for {
						h, _, err := frames.Next()
						if err != nil {
							return
						}
						if h.Type != protocol.RequestHead || !h.End() {
							continue
						}
						out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte(head))
						for i, b := range tc.body {
							flags := uint8(0)
							if i == len(tc.body)-1 {
								flags = protocol.FlagEnd
							}
							out = protocol.AppendFrame(out, protocol.ResponseBody, flags, h.Stream, b)
						}
						if _, err := worker.Write(out); err != nil {
							return
						}
					}
				}()
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if err := p.Serve(w, r, &Request{Timeout: 10 * time.Second}); err != nil {
						w.WriteHeader(http.StatusInternalServerError) // (as the adapter answers a failure)
					}
				}))
				srv.EnableHTTP2 = proto == "HTTP/2"
				srv.StartTLS()
				defer srv.Close()
				req, _ := http.NewRequest(tc.method, srv.URL, nil)
				resp, err := srv.Client().Do(req)
				if err != nil {
					if tc.status != 0 {
						t.Fatal(err)
					}
					return // cut off before its head went out
				}
				defer resp.Body.Close()
				if want := map[string]int{"HTTP/1.1": 1, "HTTP/2": 2}[proto]; resp.ProtoMajor != want {
					t.Fatalf("the response came over %s", resp.Proto)
				}
				body, err := io.ReadAll(resp.Body)
				switch {
				case tc.status == 0:
					// over HTTP/2 the server resets the stream: Go's client
					// would notice a length that does not match by itself,
					// but not every client (or proxy) does
					if err == nil || proto == "HTTP/2" && !strings.Contains(err.Error(), "INTERNAL_ERROR") {
						t.Errorf("a response not cut off by the server: %d, Content-Length %v, %d bytes, %v", resp.StatusCode, resp.Header["Content-Length"], len(body), err)
					}
				case err != nil || resp.StatusCode != tc.status:
					t.Errorf("got %d (%v), want %d", resp.StatusCode, err, tc.status)
				case tc.got != "":
					if got := fmt.Sprintf("%v %d", resp.Header["Content-Length"], len(body)); got != tc.got {
						t.Errorf("Content-Length and body: %s, want %s", got, tc.got)
					}
				}
			})
		}
	}
	t.Run("the same length twice, as written", func(t *testing.T) { // (Go's client takes two as one)
		p, worker := onePool(t)
		go func() {
			h, _, err := protocol.NewReader(worker).Next()
			if err == nil {
				out := protocol.AppendFrame(nil, protocol.ResponseHead, 0, h.Stream, []byte("200 OK\x00Content-Length\x002\x00content-length\x00 2\x00"))
				_, _ = worker.Write(protocol.AppendFrame(out, protocol.ResponseBody, protocol.FlagEnd, h.Stream, []byte("ok")))
			}
		}()
		rec := httptest.NewRecorder()
		if err := p.Serve(rec, httptest.NewRequest("GET", "/", nil), &Request{Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if got := rec.Header()["Content-Length"]; len(got) != 1 {
			t.Errorf("Content-Length %q, want it once", got)
		}
	})
}

// TestScaleBoundsTheChannels: the admin API's scale may not take a pool
// past MaxChannels (1024 workers of 1024 threads each passed: a million
// socket pairs).
func TestScaleBoundsTheChannels(t *testing.T) {
	p := New(Options{Name: "wide", Threads: 1024, MaxQueue: 10, QueueTimeout: time.Minute}, zap.NewNop())
	p.state = supervisor.Running
	if err := p.Scale(1024); err == nil || !strings.Contains(err.Error(), "scale to at most 64") {
		t.Errorf("1024 workers of 1024 threads: %v", err)
	}
	if n := p.replicaCountLocked(); n != 0 {
		t.Errorf("%d replicas added before the refusal", n)
	}
}

// TestSharedRuntimeBesideAnUnusableOne: when the shared runtime's usual
// directory cannot be used (here Caddy's own, but writable by others:
// anything in it would run as the app), the runtime goes to a directory
// of Caddy's beside it, which later starts (a restarted Caddy, a command)
// use again rather than make one more each time; the log says why.
func TestSharedRuntimeBesideAnUnusableOne(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	named := filepath.Join(tmp, fmt.Sprintf("hearth-runtime-%d", os.Geteuid()))
	if err := os.Mkdir(named, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(named, 0o777)
	runtimeMu.Lock()
	defer runtimeMu.Unlock()
	defer func() { sharedRoot = "" }()
	core, logs := observer.New(zap.WarnLevel)
	first, err := sharedRuntime(zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first, named+"-") || logs.FilterMessageSnippet("usual directory cannot be used").Len() != 1 {
		t.Fatalf("the runtime went to %s; log %v", first, logs.All())
	}
	sharedRoot = "" // as in a new process
	again, err := sharedRuntime(zap.New(core))
	if err != nil || again != first {
		t.Errorf("a second start: %s %v, want %s again", again, err, first)
	}
	if dirs, _ := filepath.Glob(named + "-*"); len(dirs) != 1 {
		t.Errorf("directories beside the usual one: %v", dirs)
	}
	if entries, _ := os.ReadDir(named); len(entries) != 0 {
		t.Errorf("something was written into the unusable directory: %v", entries)
	}
}
