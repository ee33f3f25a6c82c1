package hearthio

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hearth-dev/hearth/modules/internal/memory"
	"github.com/hearth-dev/hearth/modules/internal/rawio"
	"github.com/hearth-dev/hearth/modules/internal/rawio/rawiotest"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		input, err string
	}{
		{"hearth_io", ""},
		{"hearth_io fast", `hearth_io takes no arguments, got "fast"`},
		{"hearth_io {\n\tbuffer 4k\n}", `unknown hearth_io option "buffer": the options are max_connections_per_client, count_loopback and max_connections`},
		{"hearth_io {\n\tmax_connections 5000\n}", ""},
		{"hearth_io {\n\tmax_connections auto\n}", ""},
		{"hearth_io {\n\tmax_connections none\n}", `max_connections must be a whole number from 1 to 1048576, got "none"`},
		{"hearth_io {\n\tmax_connections_per_client auto\n}", `max_connections_per_client must be a whole number from 1 to 1048576, got "auto"`},
		{"hearth_io {\n\tcount_loopback\n}", ""},
		{"hearth_io {\n\tcount_loopback yes\n}", `count_loopback takes no value, got "yes"`},
		{"hearth_io {\n\tmax_connections_per_client 64\n}", ""},
		{"hearth_io {\n\tmax_connections_per_client\n}", "wrong argument count"},
		{"hearth_io {\n\tmax_connections_per_client 0\n}", `max_connections_per_client must be a whole number from 1 to 1048576, got "0"`},
		{"hearth_io {\n\tmax_connections_per_client many\n}", `got "many"`},
		{"hearth_io {\n\tmax_connections_per_client 9999999\n}", `got "9999999"`},
		{"hearth_io {\n\tmax_connections_per_client 8 16\n}", "wrong argument count"},
	} {
		w := new(Wrapper)
		err := w.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.input, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one saying %q", tc.input, err, tc.err)
		}
		if tc.err == "" && (strings.Contains(tc.input, "64") != (w.MaxConnectionsPerClient == 64) || strings.Contains(tc.input, "count_loopback") != w.CountLoopback ||
			strings.Contains(tc.input, "5000") != (w.MaxConnections == 5000)) {
			t.Errorf("%q: max_connections_per_client %d, count_loopback %v, max_connections %d", tc.input, w.MaxConnectionsPerClient, w.CountLoopback, w.MaxConnections)
		}
	}
}

// serve runs net/http on l wrapped by hearth_io, recording the type of
// each connection it was given.
func serve(t *testing.T, l net.Listener, h http.Handler) (conns chan net.Conn) {
	t.Helper()
	conns = make(chan net.Conn, 100)
	srv := &http.Server{
		Handler: h,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			conns <- c
			return ctx
		},
	}
	wrapped := (&Wrapper{logger: zap.NewNop()}).WrapListener(l)
	go srv.Serve(wrapped)
	t.Cleanup(func() { srv.Close() })
	return conns
}

// Everything net/http does with a client's connection works through the
// wrapped one: keep-alive, bodies larger than a socket's buffer both
// ways, a file sent whole (sendfile, through the TCP connection's own
// ReadFrom), a hijacked connection, a client that leaves mid-answer.
func TestNetHTTPServesThroughWrappedConnections(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	file := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(file, big, 0o600); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo-length", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write(big) })
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) })
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		rw.Flush()
		line, _ := rw.ReadString('\n')
		c.Write([]byte("echo: " + line))
	})
	conns := serve(t, l, mux)
	base := "http://" + l.Addr().String()
	client := &http.Client{Timeout: 20 * time.Second}

	for range 3 { // keep-alive: one connection, three requests
		resp, err := client.Post(base+"/echo-length", "application/octet-stream", bytes.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != fmt.Sprintf("%d <nil>", len(big)) {
			t.Fatalf("the server read the 8 MiB body as %q", body)
		}
	}
	for _, path := range []string{"/big", "/file"} {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(body, big) {
			t.Fatalf("%s: %d bytes came, not the 8 MiB answer", path, len(body))
		}
	}
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /hijack HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("hijack: %v %v", resp, err)
	}
	fmt.Fprintf(c, "hello\n")
	if line, _ := br.ReadString('\n'); line != "echo: hello\n" {
		t.Fatalf("the hijacked connection answered %q", line)
	}
	// a client that leaves while its answer is written
	gone, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(gone, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	gone.SetDeadline(time.Now().Add(10 * time.Second))
	gone.Read(make([]byte, 100))
	gone.Close()

	// and the server still serves
	resp, err = client.Get(base + "/echo-length")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	n := 0
	for more := true; more; {
		select {
		case c := <-conns:
			n++
			if r, ok := c.(*conn); !ok {
				t.Errorf("net/http was given a %T, not the wrapped connection", c)
			} else if _, raw := r.socket.(*rawio.TCPConn); !raw {
				t.Errorf("the connection is read and written through a %T, not rawio", r.socket)
			}
		default:
			more = false
		}
	}
	if n < 3 {
		t.Fatalf("net/http saw %d connections, want at least 3", n)
	}
}

// A wrapped connection's reads and writes, TCP and Unix, enter no
// system-call state (they go through rawio), where the same calls on the
// connection unwrapped do.
func TestWrappedConnectionsEnterNoSystemCallState(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		addr := "127.0.0.1:0"
		if network == "unix" {
			addr = filepath.Join(t.TempDir(), "s")
		}
		l, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		wrapped := (&Wrapper{}).WrapListener(l)
		defer wrapped.Close()
		go func() { // the client echoes
			c, err := net.Dial(network, l.Addr().String())
			if err != nil {
				return
			}
			defer c.Close()
			io.Copy(c, c)
		}()
		c, err := wrapped.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		plain := c.(interface{ NetConn() net.Conn })
		exchange := func(c net.Conn) func() {
			return func() {
				buf := make([]byte, 4)
				for range 100 {
					if _, err := c.Write([]byte("ping")); err != nil {
						t.Error(err)
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}
		n := rawiotest.SystemCalls(t, exchange(c), exchange(plain.NetConn()))
		if n[1] < 100 {
			t.Fatalf("%s: the tracer saw %d system calls of the plain connection's 200 writes and reads: it cannot tell", network, n[1])
		}
		if n[0] != 0 {
			t.Fatalf("%s: %d of the wrapped connection's writes and reads entered the system-call state", network, n[0])
		}
	}
}

// hearth_io after tls gets TLS connections, where it can do nothing: it
// passes them through and says once how to fix the order.
func TestAfterTLSIsPassedThroughAndLogged(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t)
	core, logs := observer.New(zap.WarnLevel)
	wrapped := (&Wrapper{logger: zap.New(core)}).WrapListener(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}}))
	defer wrapped.Close()
	go func() {
		for range 2 {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for range 2 {
		c, err := wrapped.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(*tls.Conn); !ok {
			t.Fatalf("a TLS connection came out as a %T", c)
		}
		c.Close()
	}
	if got := logs.FilterMessageSnippet("since it comes after tls: list it first").Len(); got != 1 {
		t.Fatalf("%d warnings about the order, want 1: %v", got, logs.All())
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Wraps knows the listeners hearth_io wraps now, by address, a listener on
// every address by its port, until the last wrapper of one closes.
func TestWrapsKnowsTheListenersWrappedNow(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	any, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer any.Close()
	unix, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close()
	port := func(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }
	local := func(ip string, port int) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	check := func(when string, want map[net.Addr]bool) {
		t.Helper()
		for a, w := range want {
			if got := Wraps(a); got != w {
				t.Errorf("%s: Wraps(%s) = %v, want %v", when, a, got, w)
			}
		}
	}
	check("before", map[net.Addr]bool{tcp.Addr(): false, local("10.1.2.3", port(any)): false, unix.Addr(): false})

	w := &Wrapper{}
	first, second := w.WrapListener(tcp), w.WrapListener(tcp) // a reload wraps it again before the old config lets go
	wrappedAny, wrappedUnix := w.WrapListener(any), w.WrapListener(unix)
	check("wrapped", map[net.Addr]bool{
		tcp.Addr():                        true,
		local("127.0.0.2", port(tcp)):     false, // another address, the same port
		local("10.1.2.3", port(any)):      true,  // any address of a listener on all of them
		local("::1", port(any)):           true,
		local("127.0.0.1", port(tcp)+1):   port(tcp)+1 == port(any),
		unix.Addr():                       true,
		&net.UnixAddr{Name: "/elsewhere"}: false,
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port(tcp)}: false,
	})
	first.Close()
	first.Close() // twice: counted once
	check("one of two wrappers closed", map[net.Addr]bool{tcp.Addr(): true})
	second.Close()
	wrappedAny.Close()
	wrappedUnix.Close()
	check("all closed", map[net.Addr]bool{tcp.Addr(): false, local("10.1.2.3", port(any)): false, unix.Addr(): false})
}

// An app's handler is told to hint once per address, for a connection
// that came unwrapped from one of its server's listeners, and never for
// one it cannot judge.
func TestShouldHint(t *testing.T) {
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	plain, viaWrapper := listen(), listen()
	wrapped := (&Wrapper{}).WrapListener(viaWrapper)
	defer wrapped.Close()
	listeners := []net.Listener{plain, wrapped}
	elsewhere := &net.TCPAddr{IP: net.IPv4(10, 9, 8, 7), Port: 443} // what proxy_protocol would give
	for _, tc := range []struct {
		name  string
		local net.Addr
		want  bool
	}{
		{"unwrapped", plain.Addr(), true},
		{"unwrapped, again", plain.Addr(), false},
		{"wrapped", viaWrapper.Addr(), false},
		{"an address no listener has", elsewhere, false},
		{"not TCP or Unix", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}, false},
	} {
		if got := ShouldHint(tc.local, listeners); got != tc.want {
			t.Errorf("%s: ShouldHint(%s) = %v, want %v", tc.name, tc.local, got, tc.want)
		}
	}
}

// acceptAll accepts l's connections into the channel it returns, until l
// is closed.
func acceptAll(l net.Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	return accepted
}

// dialFrom connects to l from the address from (one of the loopback
// network's: each test of the bounds has addresses of its own, as the
// counts are the process's). The connection is closed when the test ends.
func dialFrom(t *testing.T, l net.Listener, from string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// connectFrom is a connection from the address from, accepted (its
// server side, from accepted) within 5 s; both are closed when the test
// ends.
func connectFrom(t *testing.T, l net.Listener, accepted <-chan net.Conn, from, what string) net.Conn {
	t.Helper()
	if _, err := dialFrom(t, l, from); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	select {
	case c := <-accepted:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("%s was not accepted", what)
		return nil
	}
}

// resetAtOnce dials from the address from and wants the connection reset
// as soon as it was accepted (the reset may come before the dial returns).
func resetAtOnce(t *testing.T, l net.Listener, from, what string) {
	t.Helper()
	c, err := dialFrom(t, l, from)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: %v, want it reset by the server", what, err)
		}
		return
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: read %d bytes, %v; want it closed by the server", what, n, err)
	}
}

// counterValue is c's value now.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestConnectionsPerClient: one client (an address) may hold at most
// max_connections_per_client connections open at once; one more is closed
// as soon as it is accepted (the client reads nothing but its end), and a
// warning names the client and the option, once a minute. Another client
// still connects; a connection that closes (twice, even) gives its place
// back. Before, one address could open tens of thousands, each costing
// Caddy ~24 KiB of memory. (Loopback clients are counted here only as
// count_loopback asks.)
func TestConnectionsPerClient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	wrapped := (&Wrapper{MaxConnectionsPerClient: 3, CountLoopback: true, logger: zap.New(core)}).WrapListener(l)
	defer wrapped.Close()
	accepted := acceptAll(wrapped)
	refusedBefore := counterValue(t, refusedConnections.WithLabelValues("client"))
	var mine []net.Conn
	for i := range 3 {
		mine = append(mine, connectFrom(t, l, accepted, "127.0.0.77", fmt.Sprintf("connection %d of the 3 allowed", i+1)))
	}
	for range 2 {
		resetAtOnce(t, l, "127.0.0.77", "a 4th connection from the same address")
	}
	connectFrom(t, l, accepted, "127.0.0.78", "a connection from another address")
	mine[0].Close()
	mine[0].Close() // counted out once
	connectFrom(t, l, accepted, "127.0.0.77", "a connection after one of the client's closed")
	resetAtOnce(t, l, "127.0.0.77", "a connection past the bound again")
	// (the server has counted the reset by the time it accepts the next)
	connectFrom(t, l, accepted, "127.0.0.78", "another connection from another address")

	if n := counterValue(t, refusedConnections.WithLabelValues("client")) - refusedBefore; n != 3 {
		t.Errorf("hearth_refused_connections_total grew by %v for 3 connections closed", n)
	}
	warnings := logs.TakeAll()
	if len(warnings) != 1 || !strings.Contains(warnings[0].Message, "client 127.0.0.77 already holds 3 connections open") ||
		!strings.Contains(warnings[0].Message, "max_connections_per_client") {
		t.Errorf("warnings for 3 connections closed within a minute: %v, want one naming the client and max_connections_per_client", warnings)
	}
	select {
	case c := <-accepted:
		t.Errorf("a connection past the bound reached the server: %v", c.RemoteAddr())
	default:
	}
}

// TestLoopbackNotCountedByDefault: without count_loopback, loopback
// clients (a tunnel or proxy on the machine brings every visitor from
// there) are not bounded.
func TestLoopbackNotCountedByDefault(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wrapped := (&Wrapper{MaxConnectionsPerClient: 1}).WrapListener(l)
	defer wrapped.Close()
	accepted := acceptAll(wrapped)
	for i := range 3 {
		connectFrom(t, l, accepted, "127.0.0.79", fmt.Sprintf("loopback connection %d past a bound of 1", i+1))
	}
	clients.Lock()
	defer clients.Unlock()
	if n := clients.open[netip.MustParsePrefix("127.0.0.79/32")]; n != 0 {
		t.Errorf("%d loopback connections counted", n)
	}
}

// TestMaxConnections: past max_connections (all clients, loopback
// included) a connection is reset as soon as it is accepted, whoever it
// comes from, and counted under reason total; one that closes gives its
// place back.
func TestMaxConnections(t *testing.T) {
	before := settledTotal()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	wrapped := (&Wrapper{MaxConnections: before + 3, logger: zap.New(core)}).WrapListener(l)
	defer wrapped.Close()
	accepted := acceptAll(wrapped)
	refusedBefore := counterValue(t, refusedConnections.WithLabelValues("total"))
	var held []net.Conn
	for i, from := range []string{"127.0.0.81", "127.0.0.82", "127.0.0.83"} {
		held = append(held, connectFrom(t, l, accepted, from, fmt.Sprintf("connection %d of the 3 allowed", i+1)))
	}
	resetAtOnce(t, l, "127.0.0.84", "a 4th connection, from a 4th address, past max_connections")
	held[0].Close()
	connectFrom(t, l, accepted, "127.0.0.84", "a connection after one of the 3 closed")
	// (the client may see the reset before the server counted and logged
	// it; it has by the time it accepts the next connection)
	if n := counterValue(t, refusedConnections.WithLabelValues("total")) - refusedBefore; n != 1 {
		t.Errorf("refused under total: %v, want 1", n)
	}
	if w := logs.TakeAll(); len(w) != 1 || !strings.Contains(w[0].Message, "past its max_connections") || !strings.Contains(w[0].Message, "127.0.0.84") {
		t.Errorf("warnings: %v, want one naming max_connections and the address refused", w)
	}
}

// TestReserveLetsInClientsHoldingFew: the clients of a few addresses that
// fill max_connections do not shut every other visitor out. Past it, a
// client holding fewer than reserveFloor connections gets one, up to an
// eighth more; the clients that filled it, those not counted (loopback
// without count_loopback), and anyone once the reserve is full, get a
// reset.
func TestReserveLetsInClientsHoldingFew(t *testing.T) {
	before := settledTotal()
	maxTotal := before + 2*reserveFloor
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wrapped := (&Wrapper{MaxConnections: maxTotal, MaxConnectionsPerClient: 100, CountLoopback: true}).WrapListener(l)
	defer wrapped.Close()
	accepted := acceptAll(wrapped)
	uncounted, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uncountedWrapped := (&Wrapper{MaxConnections: maxTotal}).WrapListener(uncounted)
	defer uncountedWrapped.Close()
	acceptAll(uncountedWrapped)

	for _, from := range []string{"127.0.3.1", "127.0.3.2"} {
		for i := range reserveFloor {
			connectFrom(t, l, accepted, from, fmt.Sprintf("connection %d of %s, within max_connections", i+1, from))
		}
	}
	resetAtOnce(t, l, "127.0.3.1", "one more from a client that holds its share, past max_connections")
	resetAtOnce(t, uncounted, "127.0.3.3", "a client not counted (loopback without count_loopback), past max_connections")
	for i := range reserveOf(maxTotal) {
		connectFrom(t, l, accepted, fmt.Sprintf("127.0.4.%d", i+1), fmt.Sprintf("a visitor holding none, into the reserve (%d of %d)", i+1, reserveOf(maxTotal)))
	}
	resetAtOnce(t, l, "127.0.5.1", "a visitor holding none once the reserve is full")
}

// settledTotal is the process's count of open connections once those
// earlier tests left unclosed were collected and counted out (cleanups run
// after a collection, on a goroutine of their own): read before that, a
// test of max_connections would find room the count did not show.
func settledTotal() int {
	last := -1
	for range 100 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		clients.Lock()
		n := clients.total
		clients.Unlock()
		if n == last {
			return n
		}
		last = n
	}
	return last
}

// TestAutoMaxConnections: an eighth of the memory, ~34 KiB a connection,
// from 1024 to 65536.
func TestAutoMaxConnections(t *testing.T) {
	for _, tc := range []struct {
		memory int64
		want   int
	}{
		{2 << 30, 7710},
		{1 << 30, 3855},
		{256 << 20, 1024},
		{24 << 30, 65536},
		{0, 16384},
	} {
		if got := autoMaxConnections(tc.memory); got != tc.want {
			t.Errorf("autoMaxConnections(%d MiB) = %d, want %d", tc.memory>>20, got, tc.want)
		}
	}
}

// TestPerClientBoundFollowsTheTotal: without max_connections_per_client, a
// client may hold 1024 connections, or an eighth of max_connections when
// that is less: on a small machine a few clients must not take them all.
func TestPerClientBoundFollowsTheTotal(t *testing.T) {
	for _, tc := range []struct {
		w                   Wrapper
		perClient, maxTotal int
	}{
		{Wrapper{MaxConnections: 65536}, 1024, 65536},
		{Wrapper{MaxConnections: 3469}, 433, 3469},
		{Wrapper{MaxConnections: 4}, 1, 4},
		{Wrapper{MaxConnections: 4, MaxConnectionsPerClient: 3}, 3, 4},
		{Wrapper{}, min(1024, autoMaxConnections(memory.Total())/8), autoMaxConnections(memory.Total())},
	} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wrapped := tc.w.WrapListener(l).(*listener)
		if wrapped.maxPerClient != tc.perClient || wrapped.maxTotal != tc.maxTotal {
			t.Errorf("%+v: %d per client of %d, want %d of %d", tc.w, wrapped.maxPerClient, wrapped.maxTotal, tc.perClient, tc.maxTotal)
		}
		wrapped.Close()
	}
}
