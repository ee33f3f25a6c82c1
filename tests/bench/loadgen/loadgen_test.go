//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// config parses flags for a run against url, as the command line would.
func config(t *testing.T, url string, args ...string) Config {
	t.Helper()
	cfg, _, err := parseArgs(append([]string{"-url", url}, args...), io.Discard)
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	return cfg
}

func mustRun(t *testing.T, cfg Config) Result {
	t.Helper()
	start := time.Now()
	res, err := run(cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("%s: %+v", time.Since(start).Round(time.Millisecond), res)
	return res
}

func hello(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "6")
	io.WriteString(w, "hello\n")
}

// checkAccounting checks what holds for any finished run: every measured
// request sent ends as a success or an error, and the quantiles are ordered.
func checkAccounting(t *testing.T, res Result) {
	t.Helper()
	if res.Sent != res.Completed+res.Errors {
		t.Errorf("sent %d != completed %d + errors %d", res.Sent, res.Completed, res.Errors)
	}
	k := res.ErrorKinds
	if k.Status+k.Connection+k.Protocol+k.Timeout != res.Errors || k.Timeout != res.Timeouts {
		t.Errorf("error kinds %+v do not add up to errors %d / timeouts %d", k, res.Errors, res.Timeouts)
	}
	l := res.Latency
	if res.Completed > 0 && !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max && l.Mean <= l.Max) {
		t.Errorf("latency quantiles out of order: %+v", l)
	}
}

func pwait2Works() bool {
	l, err := newLoop(&Config{Rate: 1, Duration: 1, Connections: 1, Request: []byte("x"), timer: timerPwait2})
	if err != nil {
		return false
	}
	l.close()
	return true
}

// 1. The rate is kept, with both ways of timing the sends. 5. The CPU time
// is reported (here it includes the in-process test server's).
func TestRateAccuracy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	for _, tc := range []struct {
		name     string
		timer    timerMode
		duration time.Duration
		warmup   time.Duration
	}{
		{"epoll_pwait2", timerPwait2, time.Second, 0},
		{"timerfd", timerTimerfd, time.Second, 0},
		{"warmup", timerAuto, 700 * time.Millisecond, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.timer == timerPwait2 && !pwait2Works() {
				t.Skip("no epoll_pwait2 here")
			}
			const rate = 2000
			cfg := config(t, srv.URL, "-rate", fmt.Sprint(rate), "-duration", tc.duration.String(),
				"-warmup", tc.warmup.String(), "-connections", "16", "-drain", "2s")
			cfg.timer = tc.timer
			res := mustRun(t, cfg)
			checkAccounting(t, res)
			// The schedule is exact: every request due in the duration is
			// either sent or counted unsent. How many went out in time
			// depends on the machine (this runs beside other test packages),
			// so that only has to be most of them.
			want := rate * tc.duration.Seconds()
			if got := float64(res.Sent + res.Unsent); math.Abs(got-want) > 0.01*want+1 {
				t.Errorf("sent %d + unsent %d, want %.0f due", res.Sent, res.Unsent, want)
			}
			if got := float64(res.Completed); got < 0.9*want || got > 1.01*want {
				t.Errorf("completed %d, want %.0f (at least 90%%)", res.Completed, want)
			}
			if res.Errors != 0 {
				t.Errorf("errors %d; want none", res.Errors)
			}
			if l := res.Latency; !(l.P50 < l.P99 && l.P99 <= l.Max) {
				t.Errorf("want p50 < p99 <= max: %+v", l)
			}
			if tc.timer != timerAuto && res.Timer != tc.name {
				t.Errorf("timer %q, want %q", res.Timer, tc.name)
			}
			checkCPU(t, res)
		})
	}
}

func checkCPU(t *testing.T, res Result) {
	t.Helper()
	if !(res.CPUSeconds > 0 && res.CPUFraction > 0) {
		t.Errorf("cpu_seconds %v, cpu_fraction %v: want > 0", res.CPUSeconds, res.CPUFraction)
	}
	if max := float64(runtime.NumCPU()) + 0.2; res.CPUFraction > max {
		t.Errorf("cpu_fraction %v over the %d CPUs there are", res.CPUFraction, runtime.NumCPU())
	}
	// cpu_fraction is cpu_seconds over the measured wall time (~duration).
	if f := res.CPUSeconds / res.DurationS; math.Abs(f-res.CPUFraction) > 0.2*res.CPUFraction+0.01 {
		t.Errorf("cpu_fraction %v does not match cpu_seconds %v over %vs", res.CPUFraction, res.CPUSeconds, res.DurationS)
	}
}

// 5. The generator's own CPU time: here, with the server in another
// goroutine of the same process, it is bounded by what the process used.
func TestCPUAccounting(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	before := cpuTime()
	res := mustRun(t, config(t, srv.URL, "-rate", "1000", "-duration", "500ms", "-connections", "8"))
	total := float64(cpuTime()-before) / 1e9
	checkAccounting(t, res)
	checkCPU(t, res)
	if res.CPUSeconds > total+0.01 {
		t.Errorf("cpu_seconds %v is more than the process used in the run (%v)", res.CPUSeconds, total)
	}
}

// 2. Coordinated omission: a server that takes 20 ms per response can do 50
// requests/s on one connection; at 100/s requests queue up and their
// latency, counted from when they were due, grows to about half a second. A
// generator that counted from the actual send would see ~20 ms throughout.
func TestCoordinatedOmission(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		hello(w, r)
	}))
	defer srv.Close()
	res := mustRun(t, config(t, srv.URL, "-rate", "100", "-duration", "1s", "-connections", "1", "-drain", "2s"))
	checkAccounting(t, res)
	if res.Errors != 0 {
		t.Errorf("errors %d, want 0", res.Errors)
	}
	if res.Completed < 30 || res.Completed > 60 {
		t.Errorf("completed %d, want about 50 (the server's capacity)", res.Completed)
	}
	if res.Latency.P99 < 200e3 {
		t.Errorf("p99 %.1f ms, want > 200 ms: latency must count from the due time", res.Latency.P99/1e3)
	}
	if res.Latency.P50 < 100e3 {
		t.Errorf("p50 %.1f ms, want > 100 ms", res.Latency.P50/1e3)
	}
	if res.Unsent < 30 || res.LateSends < 30 {
		t.Errorf("unsent %d, late_sends %d: want about 50 each", res.Unsent, res.LateSends)
	}
	if res.Sent+res.Unsent != 100 {
		t.Errorf("sent %d + unsent %d != 100 requests due", res.Sent, res.Unsent)
	}
}

// Between sends 20 ms apart the loop sleeps through responses and reads them
// before the next send; their latency still comes out as the server's (the
// kernel's receive time), not as up to 20 ms.
func TestLazyReadsKeepLatency(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	res := mustRun(t, config(t, srv.URL, "-rate", "50", "-duration", "1s", "-connections", "4"))
	checkAccounting(t, res)
	if res.Completed != 50 || res.Errors != 0 {
		t.Errorf("completed %d errors %d, want 50 and 0", res.Completed, res.Errors)
	}
	if res.lazyWaits < 40 {
		t.Errorf("only %d lazy waits: responses were not left for the next send", res.lazyWaits)
	}
	if res.Latency.P50 > 10000 || res.Latency.P90 > 15000 {
		t.Errorf("latency p50 %.0f µs p90 %.0f µs: want the server's (well under the 20 ms between sends)",
			res.Latency.P50, res.Latency.P90)
	}
}

// rawServer answers every request on every connection with respond (n counts
// the requests on the connection); respond returns false to close.
func rawServer(t *testing.T, respond func(c net.Conn, n int) bool) string {
	t.Helper()
	url, _ := rawServerListener(t, respond)
	return url
}

func rawServerListener(t *testing.T, respond func(c net.Conn, n int) bool) (string, net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					for { // the request: lines up to an empty one
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if line == "\r\n" {
							break
						}
					}
					if !respond(c, n) {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/", ln
}

// canned answers with fixed bytes and keeps the connection (or closes it).
func canned(resp string, keep bool) func(net.Conn, int) bool {
	return func(c net.Conn, _ int) bool {
		c.Write([]byte(resp))
		return keep
	}
}

// bytewise writes the response one byte per segment.
func bytewise(resp string) func(net.Conn, int) bool {
	return func(c net.Conn, _ int) bool {
		for i := 0; i < len(resp); i++ {
			if _, err := c.Write([]byte{resp[i]}); err != nil {
				return false
			}
		}
		return true
	}
}

// 3. Responses framed every way a server may frame them; bad statuses and
// broken responses are errors; closed connections are replaced.
func TestResponses(t *testing.T) {
	bigBody := strings.Repeat("x", 300<<10)
	handler := func(f func(w http.ResponseWriter)) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f(w) }))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	const chunkedExt = "HTTP/1.1 200 OK\r\nTRANSFER-encoding: Chunked\r\n\r\n" +
		"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n"
	for _, tc := range []struct {
		name       string
		url        func() string
		args       []string
		wantErrors func(r Result) int64 // default: none
		wantKind   func(r Result) int64 // the error kind that must equal errors
		reconnects bool
	}{
		{name: "content-length", url: func() string { return handler(func(w http.ResponseWriter) { hello(w, nil) }) }},
		{name: "chunked+trailer", url: func() string {
			return handler(func(w http.ResponseWriter) {
				w.Header().Set("Trailer", "X-Sum")
				io.WriteString(w, "hel")
				w.(http.Flusher).Flush() // no Content-Length: chunked
				io.WriteString(w, "lo\n")
				w.Header().Set("X-Sum", "42")
			})
		}},
		{name: "large body", url: func() string {
			return handler(func(w http.ResponseWriter) { io.WriteString(w, bigBody) })
		}},
		{name: "large chunked body", url: func() string {
			return handler(func(w http.ResponseWriter) {
				for i := 0; i < 4; i++ {
					io.WriteString(w, bigBody[:50<<10])
					w.(http.Flusher).Flush()
				}
			})
		}},
		{name: "status 500", url: func() string {
			return handler(func(w http.ResponseWriter) { http.Error(w, "boom", 500) })
		}, wantErrors: sentAll, wantKind: func(r Result) int64 { return r.ErrorKinds.Status }},
		{name: "expected 404", args: []string{"-status", "404"}, url: func() string {
			return handler(func(w http.ResponseWriter) { http.Error(w, "nope", 404) })
		}},
		{name: "connection close", reconnects: true, url: func() string {
			return handler(func(w http.ResponseWriter) { w.Header().Set("Connection", "close"); hello(w, nil) })
		}},
		{name: "header over 64KiB", url: func() string {
			return handler(func(w http.ResponseWriter) { w.Header().Set("X-Big", strings.Repeat("y", 70<<10)); hello(w, nil) })
		}, wantErrors: sentAll, wantKind: func(r Result) int64 { return r.ErrorKinds.Protocol }, reconnects: true},
		{name: "body to EOF (HTTP/1.0)", reconnects: true, url: func() string {
			return rawServer(t, canned("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", false))
		}},
		{name: "chunk extensions, mixed case, byte by byte", url: func() string {
			return rawServer(t, bytewise(chunkedExt))
		}},
		{name: "content-length byte by byte", url: func() string {
			return rawServer(t, bytewise("HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\n\r\nhello"))
		}},
		{name: "server closes idle connections", reconnects: true, url: func() string {
			return rawServer(t, canned("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false))
		}},
		{name: "100 continue first", url: func() string {
			return rawServer(t, canned("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true))
		}},
		{name: "204 no body", args: []string{"-status", "204"}, url: func() string {
			return rawServer(t, canned("HTTP/1.1 204 No Content\r\n\r\n", true))
		}},
		{name: "malformed status line", url: func() string {
			return rawServer(t, canned("HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", true))
		}, wantErrors: sentAll, wantKind: func(r Result) int64 { return r.ErrorKinds.Protocol }, reconnects: true},
		{name: "closed mid-body", url: func() string {
			return rawServer(t, canned("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", false))
		}, wantErrors: sentAll, wantKind: func(r Result) int64 { return r.ErrorKinds.Connection }, reconnects: true},
		{name: "closed without response", url: func() string {
			return rawServer(t, func(net.Conn, int) bool { return false })
		}, wantErrors: sentAll, wantKind: func(r Result) int64 { return r.ErrorKinds.Connection }, reconnects: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-rate", "200", "-duration", "300ms", "-connections", "4", "-drain", "2s"}, tc.args...)
			res := mustRun(t, config(t, tc.url(), args...))
			checkAccounting(t, res)
			// every one of the 60 requests due is sent or counted unsent (its
			// connections all busy: on a loaded machine, a large body's
			// reads hold them); how many go out in time is the machine's
			if res.Sent+res.Unsent != 60 || res.Sent == 0 {
				t.Errorf("sent %d and unsent %d, want the 60 due, and some sent", res.Sent, res.Unsent)
			}
			var want int64
			if tc.wantErrors != nil {
				want = tc.wantErrors(res)
			}
			if res.Errors != want {
				t.Errorf("errors %d, want %d (%+v)", res.Errors, want, res.ErrorKinds)
			}
			if tc.wantKind != nil && tc.wantKind(res) != res.Errors {
				t.Errorf("error kinds %+v: want all %d of one kind", res.ErrorKinds, res.Errors)
			}
			if res.Completed != res.Sent-want {
				t.Errorf("completed %d, want %d", res.Completed, res.Sent-want)
			}
			if tc.reconnects && res.Reconnects < res.Sent/2 {
				t.Errorf("reconnects %d, want about one per request (%d)", res.Reconnects, res.Sent)
			}
			if !tc.reconnects && res.Reconnects != 0 {
				t.Errorf("reconnects %d on keep-alive connections", res.Reconnects)
			}
			if res.ConnectFailures != 0 {
				t.Errorf("connect failures %d", res.ConnectFailures)
			}
		})
	}
}

func sentAll(r Result) int64 { return r.Sent }

func TestIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(hello)}}
	srv.Start()
	defer srv.Close()
	res := mustRun(t, config(t, srv.URL, "-rate", "200", "-duration", "200ms", "-connections", "2"))
	checkAccounting(t, res)
	if res.Completed != 40 || res.Errors != 0 {
		t.Errorf("completed %d errors %d, want 40 and 0", res.Completed, res.Errors)
	}
}

// Requests still unanswered after the drain are timeouts (and errors);
// requests that never got a connection are unsent.
func TestDrainTimeouts(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	start := time.Now()
	res := mustRun(t, config(t, srv.URL, "-rate", "50", "-duration", "200ms", "-connections", "2", "-drain", "300ms"))
	checkAccounting(t, res)
	if res.Sent != 2 || res.Timeouts != 2 || res.Errors != 2 || res.Completed != 0 {
		t.Errorf("sent %d timeouts %d errors %d completed %d; want 2, 2, 2, 0", res.Sent, res.Timeouts, res.Errors, res.Completed)
	}
	if res.Unsent != 8 {
		t.Errorf("unsent %d, want 8 of the 10 due", res.Unsent)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("run took %s; the drain should end it after ~500ms", d)
	}
}

// The exit status and output of the command.
func TestExitStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closedURL := "http://" + ln.Addr().String() + "/"
	ln.Close()

	// A server that closes its listener after the first request: the
	// reconnect after its "Connection: close" fails.
	lnc := make(chan net.Listener, 1)
	oneShot, ln2 := rawServerListener(t, func(c net.Conn, n int) bool {
		select {
		case l := <-lnc:
			l.Close()
		default:
		}
		c.Write([]byte("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
		return false
	})
	lnc <- ln2

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		jsonOut  bool
		errMatch string
	}{
		{"json", []string{"-url", srv.URL, "-rate", "100", "-duration", "200ms", "-json"}, 0, true, ""},
		{"summary", []string{"-url", srv.URL, "-rate", "100", "-duration", "200ms"}, 0, false, ""},
		{"unreachable", []string{"-url", closedURL, "-rate", "100", "-duration", "200ms"}, 1, false, "cannot connect"},
		{"reconnect fails", []string{"-url", oneShot, "-rate", "100", "-duration", "300ms", "-connections", "1", "-json"}, 1, true, "reconnect"},
		{"no rate", []string{"-url", srv.URL}, 2, false, "-rate"},
		{"bad flag", []string{"-url", srv.URL, "-rate", "1", "-nope"}, 2, false, "-nope"},
		{"help", []string{"-h"}, 0, false, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := realMain(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, stderr.String())
			}
			if tc.errMatch != "" && !strings.Contains(stderr.String(), tc.errMatch) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tc.errMatch)
			}
			if tc.jsonOut {
				var m map[string]any
				if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
					t.Fatalf("output is not JSON: %v: %s", err, stdout.String())
				}
				for _, k := range []string{"target_rate", "achieved_rate", "duration_s", "sent", "completed",
					"errors", "timeouts", "unsent", "late_sends", "latency_us", "cpu_seconds", "cpu_fraction", "connections"} {
					if _, ok := m[k]; !ok {
						t.Errorf("JSON has no %q: %s", k, stdout.String())
					}
				}
				lat, _ := m["latency_us"].(map[string]any)
				for _, k := range []string{"p50", "p90", "p99", "p999", "max", "mean"} {
					if _, ok := lat[k]; !ok {
						t.Errorf("latency_us has no %q", k)
					}
				}
			} else if tc.code == 0 && tc.name == "summary" && !strings.Contains(stdout.String(), "p99.9") {
				t.Errorf("summary without latencies: %s", stdout.String())
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
		check   func(c Config) string
	}{
		{[]string{"-url", "http://127.0.0.1:8080/a/b?c=d", "-rate", "10"}, "", func(c Config) string {
			want := "GET /a/b?c=d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: loadgen\r\n\r\n"
			if string(c.Request) != want {
				return fmt.Sprintf("request %q, want %q", c.Request, want)
			}
			if c.Target.String() != "127.0.0.1:8080" || c.Connections != 64 || c.Duration != 10*time.Second ||
				c.Drain != 5*time.Second || c.Warmup != 0 || c.Status != 200 {
				return fmt.Sprintf("defaults: %+v", c)
			}
			return ""
		}},
		{[]string{"-url", "http://[::1]:9/", "-rate", "1.5", "-header", "X-A: 1", "-header", "Host: example", "-header", "User-Agent: me"}, "", func(c Config) string {
			want := "GET / HTTP/1.1\r\nHost: example\r\nX-A: 1\r\nUser-Agent: me\r\n\r\n"
			if string(c.Request) != want || c.Target.String() != "[::1]:9" || c.Rate != 1.5 {
				return fmt.Sprintf("request %q target %s rate %v", c.Request, c.Target, c.Rate)
			}
			return ""
		}},
		{[]string{"-url", "http://localhost", "-rate", "1"}, "", func(c Config) string {
			if c.Target.String() != "127.0.0.1:80" || !bytes.Contains(c.Request, []byte("Host: localhost\r\n")) {
				return fmt.Sprintf("target %s request %q", c.Target, c.Request)
			}
			return ""
		}},
		{[]string{"-rate", "1"}, "-url is required", nil},
		{[]string{"-url", "https://127.0.0.1/", "-rate", "1"}, "only http://", nil},
		{[]string{"-url", "http://example.com/", "-rate", "1"}, "address literal or localhost", nil},
		{[]string{"-url", "http://127.0.0.1:99999/", "-rate", "1"}, "bad port", nil},
		{[]string{"-url", "http://u:p@127.0.0.1/", "-rate", "1"}, "user info", nil},
		{[]string{"-url", "http://127.0.0.1/"}, "-rate is required", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "0"}, "-rate is required", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "-5"}, "-rate is required", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "NaN"}, "-rate", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "abc"}, "invalid value", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "-duration", "0s"}, "-duration", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "-warmup", "-1s"}, "-warmup", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "-drain", "-1s"}, "-drain", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "-connections", "0"}, "-connections", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "-status", "42"}, "-status", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "-header", "NoColon"}, "Name: value", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "-header", "Bad Name: x"}, "Name: value", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "-header", "Content-Length: 5"}, "no body", nil},
		{[]string{"-url", "http://127.0.0.1/", "-rate", "1", "extra"}, "unexpected argument", nil},
	} {
		cfg, _, err := parseArgs(tc.args, io.Discard)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want one mentioning %q", tc.args, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.check != nil:
			if msg := tc.check(cfg); msg != "" {
				t.Errorf("%q: %s", tc.args, msg)
			}
		}
	}
}

// The parser against responses cut at every point, and fed byte by byte.
func TestParser(t *testing.T) {
	for _, tc := range []struct {
		name   string
		resp   string
		want   parseResult
		status int
		close  bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", prDone, 200, false},
		{"no reason phrase", "HTTP/1.1 404\r\ncontent-length: 0\r\n\r\n", prDone, 404, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n10;x=y\r\n0123456789abcdef\r\n0\r\n\r\n", prDone, 200, false},
		{"chunked trailers", "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nA: b\r\nC: d\r\n\r\n", prDone, 201, false},
		{"chunked wins over length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", prDone, 200, false},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n", prDone, 200, true},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", prDone, 200, true},
		{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", prDone, 200, false},
		{"interim", "HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", prDone, 200, false},
		{"304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", prDone, 304, false},
		{"to EOF", "HTTP/1.1 200 OK\r\n\r\nabc", prMore, 200, true},
		{"bad version", "HTTP/2.0 200 OK\r\n\r\n", prBadProto, 0, false},
		{"bad status", "HTTP/1.1 20 OK\r\n\r\n", prBadProto, 0, false},
		{"bad header", "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", prBadProto, 0, false},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", prBadProto, 0, false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", prBadProto, 0, false},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", prBadProto, 0, false},
		{"bad chunk end", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", prBadProto, 0, false},
		{"header too big", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 200) + "\r\n\r\n", prTooBig, 0, false},
		{"chunk line too big", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("e", 200), prTooBig, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// cut into two pieces at every point, then byte by byte
			for cut := 0; cut <= len(tc.resp); cut++ {
				checkParse(t, tc.resp, []string{tc.resp[:cut], tc.resp[cut:]}, tc.want, tc.status, tc.close)
			}
			var bytewise []string
			for i := range tc.resp {
				bytewise = append(bytewise, tc.resp[i:i+1])
			}
			checkParse(t, tc.resp, bytewise, tc.want, tc.status, tc.close)
		})
	}
}

func checkParse(t *testing.T, resp string, pieces []string, want parseResult, status int, close bool) {
	t.Helper()
	p := respParser{buf: make([]byte, 128)} // small: the "too big" cases overflow it
	got := prMore
feed:
	for _, piece := range pieces {
		for len(piece) > 0 {
			room := p.space()
			if len(room) == 0 {
				t.Fatalf("%q: buffer full without a verdict", resp)
			}
			n := copy(room, piece)
			piece = piece[n:]
			p.w += n
			if got = p.parse(); got != prMore {
				break feed
			}
		}
	}
	if got != want {
		t.Fatalf("%q in %d pieces: got %d, want %d", resp, len(pieces), got, want)
	}
	if want == prDone || want == prMore && status != 0 {
		if p.status != status || p.closeAfter != close {
			t.Fatalf("%q: status %d close %v, want %d %v", resp, p.status, p.closeAfter, status, close)
		}
		if want == prDone && p.r != p.w {
			t.Fatalf("%q: %d bytes left over", resp, p.w-p.r)
		}
	}
}

// Nothing on the per-request path allocates.
func TestNoAllocs(t *testing.T) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	p := respParser{buf: make([]byte, 1024)}
	var h histogram
	allocs := testing.AllocsPerRun(1000, func() {
		p.resetResponse()
		room := p.space()
		p.w += copy(room, resp)
		if p.parse() != prDone {
			t.Fatal("parse")
		}
		h.record(123456)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per response", allocs)
	}

	// and the system calls of a request: send, epoll wait, receive
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	l, err := newLoop(&Config{Rate: 1, Duration: 1, Connections: 1, Request: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	l.ctlEv = syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: 0}
	if e := epollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fds[1], &l.ctlEv); e != 0 {
		t.Fatal(e)
	}
	req, buf := []byte("GET / HTTP/1.1\r\n\r\n"), make([]byte, 64)
	allocs = testing.AllocsPerRun(1000, func() {
		if n, e := sendNB(fds[0], req); e != 0 || n != len(req) {
			t.Fatal("send", e)
		}
		if n, e := l.waitFor(int64(time.Millisecond), 0); e != 0 || n != 1 {
			t.Fatal("wait", n, e)
		}
		if n, _, e := l.rx.recv(fds[1], buf); e != 0 || n != len(req) {
			t.Fatal("recv", e)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per send/wait/receive", allocs)
	}
}

// 4. Histogram quantiles are within 1% of the exact ones.
func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, tc := range []struct {
		name string
		gen  func() int64
	}{
		// log-uniform from 1 µs to 100 s
		{"log-uniform", func() int64 { return int64(math.Exp(math.Log(1e3) + rng.Float64()*(math.Log(1e11)-math.Log(1e3)))) }},
		{"normal 200µs", func() int64 { return int64(math.Max(1e3, 200e3+30e3*rng.NormFloat64())) }},
		{"exponential 1ms", func() int64 { return int64(1e3 + rng.ExpFloat64()*1e6) }},
		{"small ints", func() int64 { return rng.Int63n(300) }},
		{"bimodal", func() int64 {
			if rng.Intn(100) == 0 {
				return 5e9 + rng.Int63n(1e9)
			}
			return 50e3 + rng.Int63n(10e3)
		}},
	} {
		for _, n := range []int{1, 7, 1000, 100000} {
			var h histogram
			vals := make([]int64, n)
			for i := range vals {
				vals[i] = tc.gen()
				h.record(vals[i])
			}
			sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
			for _, q := range []float64{0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 1} {
				exact := vals[int(math.Ceil(q*float64(n)))-1]
				if q == 0.001 && n < 1000 {
					exact = vals[0]
				}
				got := h.quantile(q)
				if d := math.Abs(float64(got - exact)); d > 0.01*float64(exact) {
					t.Errorf("%s n=%d q=%v: got %d, exact %d (%.2f%% off)", tc.name, n, q, got, exact, 100*d/float64(exact))
				}
			}
			var sum float64
			for _, v := range vals {
				sum += float64(v)
			}
			if m := sum / float64(n); math.Abs(h.mean()-m) > 1e-6*m+1e-9 {
				t.Errorf("%s n=%d: mean %v, want %v", tc.name, n, h.mean(), m)
			}
			if h.max != vals[n-1] || h.min != vals[0] {
				t.Errorf("%s n=%d: min/max %d/%d, want %d/%d", tc.name, n, h.min, h.max, vals[0], vals[n-1])
			}
		}
	}
	// every bucket boundary maps back into its bucket
	for i := 0; i < histBuckets; i++ {
		lo, hi := histBounds(i)
		if histIndex(lo) != i || histIndex(hi) != i || (i > 0 && lo != func() int64 { _, h := histBounds(i - 1); return h + 1 }()) {
			t.Fatalf("bucket %d [%d, %d] is not contiguous", i, lo, hi)
		}
		if lo >= histLinear && float64(hi-lo+1)/float64(lo) > 1.0/128 {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/128", i, lo, hi)
		}
	}
}
