//go:build linux

// Command loadgen is an open-loop HTTP/1.1 load generator: it sends requests
// at a fixed rate, whether or not the server keeps up, and reports latency
// counted from when each request was due (so a stalled server is not hidden
// by a client that waits for it), along with its own CPU use. It is built to
// share a small machine with the server under test: one thread, epoll, raw
// non-blocking sockets, no allocation per request.
//
//	loadgen -url http://127.0.0.1:8080/ -rate 20000 -duration 10s -warmup 2s -json
//
// The result (-json: one JSON object on stdout) covers the requests due in
// the measured period: sent; completed (responses with the expected status,
// the only ones in latency_us); errors (every other outcome of a sent
// request: another status, a broken connection or response, or no response
// by the end of the drain, which are also counted as timeouts; error_kinds
// splits them); unsent (due but never sent: no connection came free before
// the end); late_sends (sent over 1 ms after their due time). achieved_rate
// is completed per second of the measured period. latency_us holds p50, p90,
// p99, p999, max and mean in µs, from each request's due time to the
// kernel's receive time of the last byte of its response; send_lag_us the
// same quantiles of due time to actual send. cpu_seconds is the process's
// user+system CPU time during the measured period, cpu_fraction that over
// the period's wall time (1 = one core).
//
// Exit status: 0 when the run finished (errors are in the result), 1 when the
// target could not be reached (at the start, or when reconnecting failed
// during the run; the result is still printed then), 2 for bad flags.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, asJSON, err := parseArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	res, err := run(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	if asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		writeSummary(stdout, res)
	}
	if res.ConnectFailures > 0 {
		fmt.Fprintf(stderr, "loadgen: %d reconnect(s) to %s failed (last: %v)\n",
			res.ConnectFailures, cfg.Target, res.connectErr)
		return 1
	}
	return 0
}

type headerList []string

func (h *headerList) String() string { return strings.Join(*h, ", ") }

func (h *headerList) Set(v string) error {
	*h = append(*h, v)
	return nil
}

// parseArgs turns the command line into a Config. Errors say what is wrong;
// flag.ErrHelp is returned for -h.
func parseArgs(args []string, stderr io.Writer) (Config, bool, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse errors are returned, usage is printed for -h only
	var (
		rawURL   = fs.String("url", "", "target `URL`: http://HOST[:PORT]/path, HOST an IPv4 or IPv6 literal or localhost")
		rate     = fs.Float64("rate", 0, "requests per second (required, > 0)")
		duration = fs.Duration("duration", 10*time.Second, "length of the measured period")
		warmup   = fs.Duration("warmup", 0, "period at the same rate before the measured one, results discarded")
		drain    = fs.Duration("drain", 5*time.Second, "how long to wait for responses after the measured period; unanswered requests are timeouts")
		conns    = fs.Int("connections", 64, "number of keep-alive connections (one request in flight on each)")
		status   = fs.Int("status", 200, "expected response status; any other counts as an error")
		asJSON   = fs.Bool("json", false, "print the result as JSON")
		headers  headerList
	)
	fs.Var(&headers, "header", "extra request header 'Name: value' (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: loadgen -url http://127.0.0.1:PORT/path -rate N [flags]\n\n"+
			"Open-loop HTTP/1.1 load generator: sends N requests/s on a fixed schedule and reports\n"+
			"latency from each request's due time, and its own CPU use.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return Config{}, false, err
		}
		return Config{}, false, fmt.Errorf("%v (loadgen -h lists the flags)", err)
	}
	if fs.NArg() > 0 {
		return Config{}, false, fmt.Errorf("unexpected argument %q (all settings are flags)", fs.Arg(0))
	}
	cfg := Config{
		Rate:        *rate,
		Duration:    *duration,
		Warmup:      *warmup,
		Drain:       *drain,
		Connections: *conns,
		Status:      *status,
		timerSlack:  defaultTimerSlack,
		spin:        defaultSpin,
	}
	switch {
	case *rawURL == "":
		return cfg, false, errors.New("-url is required")
	case math.IsNaN(*rate) || *rate <= 0:
		return cfg, false, errors.New("-rate is required and must be > 0 (requests per second)")
	case *rate > 1e7 || math.IsInf(*rate, 0):
		return cfg, false, errors.New("-rate must be at most 10000000")
	case *duration <= 0:
		return cfg, false, errors.New("-duration must be > 0")
	case *warmup < 0:
		return cfg, false, errors.New("-warmup must be >= 0")
	case *drain < 0:
		return cfg, false, errors.New("-drain must be >= 0")
	case *conns < 1 || *conns > 10000:
		return cfg, false, errors.New("-connections must be between 1 and 10000")
	case *status < 100 || *status > 599:
		return cfg, false, errors.New("-status must be an HTTP status code (100-599)")
	}
	target, host, uri, err := parseTarget(*rawURL)
	if err != nil {
		return cfg, false, err
	}
	cfg.Target = target
	if cfg.Request, err = buildRequest(host, uri, headers); err != nil {
		return cfg, false, err
	}
	return cfg, *asJSON, nil
}

// parseTarget checks the URL and returns the address to connect to, the Host
// header and the request target.
func parseTarget(raw string) (netip.AddrPort, string, string, error) {
	var zero netip.AddrPort
	u, err := url.Parse(raw)
	if err != nil {
		return zero, "", "", fmt.Errorf("-url: %v", err)
	}
	if u.Scheme != "http" {
		return zero, "", "", fmt.Errorf("-url %q: only http:// URLs are supported", raw)
	}
	if u.Opaque != "" || u.Host == "" {
		return zero, "", "", fmt.Errorf("-url %q: want http://HOST[:PORT]/path", raw)
	}
	if u.User != nil {
		return zero, "", "", fmt.Errorf("-url %q: user info is not supported", raw)
	}
	var addr netip.Addr
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	} else if addr, err = netip.ParseAddr(host); err != nil || addr.Zone() != "" {
		return zero, "", "", fmt.Errorf("-url %q: the host must be an IPv4 or IPv6 address literal or localhost (no name lookups)", raw)
	}
	port := 80
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return zero, "", "", fmt.Errorf("-url %q: bad port %q", raw, p)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return zero, "", "", fmt.Errorf("-url %q: empty port", raw)
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), u.Host, u.RequestURI(), nil
}

// buildRequest makes the bytes of the GET request sent on every send.
func buildRequest(host, uri string, headers []string) ([]byte, error) {
	var extra strings.Builder
	hasUA := false
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		value = strings.TrimSpace(value)
		if !ok || !isToken(name) {
			return nil, fmt.Errorf("-header %q: want 'Name: value'", h)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return nil, fmt.Errorf("-header %q: the value may not contain CR, LF or NUL", h)
		}
		switch strings.ToLower(name) {
		case "host":
			host = value
			continue
		case "content-length", "transfer-encoding":
			return nil, fmt.Errorf("-header %q: requests have no body", h)
		case "user-agent":
			hasUA = true
		}
		extra.WriteString(name + ": " + value + "\r\n")
	}
	var b strings.Builder
	b.WriteString("GET " + uri + " HTTP/1.1\r\nHost: " + host + "\r\n")
	if !hasUA {
		b.WriteString("User-Agent: loadgen\r\n")
	}
	b.WriteString(extra.String())
	b.WriteString("\r\n")
	return []byte(b.String()), nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func writeSummary(w io.Writer, r Result) {
	fmt.Fprintf(w, "target      %.1f req/s for %gs (warm-up %gs), %d connections, timer %s\n",
		r.TargetRate, r.DurationS, r.WarmupS, r.Connections, r.Timer)
	fmt.Fprintf(w, "achieved    %.1f req/s: %d sent, %d completed, %d errors (%d timeouts), %d unsent, %d late sends (>1 ms)\n",
		r.AchievedRate, r.Sent, r.Completed, r.Errors, r.Timeouts, r.Unsent, r.LateSends)
	if r.Errors > 0 {
		k := r.ErrorKinds
		fmt.Fprintf(w, "errors      %d bad status, %d connection, %d protocol, %d timeout\n",
			k.Status, k.Connection, k.Protocol, k.Timeout)
	}
	if r.Reconnects > 0 || r.ConnectFailures > 0 {
		fmt.Fprintf(w, "connections %d reconnects, %d failed connects\n", r.Reconnects, r.ConnectFailures)
	}
	l := r.Latency
	fmt.Fprintf(w, "latency     p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s  (from each request's due time)\n",
		fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max), fmtUS(l.Mean))
	s := r.SendLag
	fmt.Fprintf(w, "send lag    p50 %s  p99 %s  max %s  (due time to send)\n", fmtUS(s.P50), fmtUS(s.P99), fmtUS(s.Max))
	fmt.Fprintf(w, "own CPU     %.3f s, %.1f%% of one core\n", r.CPUSeconds, 100*r.CPUFraction)
}

func fmtUS(us float64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%.1fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.3fs", us/1e6)
	}
}
