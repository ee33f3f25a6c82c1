package hearthio

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"go.uber.org/zap"
	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"
)

// server is a net/http server on a hearth_io listener of its own at an
// address others may share (SO_REUSEPORT, as Caddy binds), answering with
// its name: a config of a reload.
type server struct {
	name string
	l    *listener
	srv  *http.Server
	// opened has each connection the server took up
	opened chan *conn
	// ran counts the requests its handler ran
	ran atomic.Int64
}

// reusable listens at addr ("127.0.0.1:0" for a new port) with
// SO_REUSEPORT.
func reusable(t *testing.T, addr string) net.Listener {
	t.Helper()
	return reusableOn(t, "tcp", addr)
}

// reusableOn is reusable on network (tcp4 or tcp6: Go's tcp listens on
// every IPv6 and IPv4 address for 0.0.0.0).
func reusableOn(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); cerr != nil {
			return cerr
		}
		return err
	}}
	l, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startServer serves at addr under name, over TLS if cert is given,
// through the wrappers given after hearth_io (proxy_protocol's, say).
func startServer(t *testing.T, name, addr string, cert *tls.Certificate, after ...func(net.Listener) net.Listener) *server {
	t.Helper()
	return startServerWith(t, name, addr, cert, 0, after...)
}

// startServerWith is startServer with the server's ReadHeaderTimeout.
func startServerWith(t *testing.T, name, addr string, cert *tls.Certificate, headerTimeout time.Duration, after ...func(net.Listener) net.Listener) *server {
	t.Helper()
	s := &server{name: name, opened: make(chan *conn, 100)}
	s.l = (&Wrapper{logger: zap.NewNop()}).WrapListener(reusable(t, addr)).(*listener)
	var l net.Listener = s.l
	for _, wrap := range after {
		l = wrap(l)
	}
	if cert != nil {
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2", "http/1.1"}})
	}
	s.srv = &http.Server{
		ReadHeaderTimeout: headerTimeout,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.ran.Add(1)
			body, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s read %d bytes from %s (%v): %.40q", name, len(body), r.RemoteAddr, err, body)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			for c != nil { // under TLS or proxy_protocol
				switch u := c.(type) {
				case *conn:
					s.opened <- u
					return ctx
				case interface{ NetConn() net.Conn }:
					c = u.NetConn()
				case interface{ Raw() net.Conn }:
					c = u.Raw()
				default:
					return ctx
				}
			}
			return ctx
		},
	}
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// shutDown begins s's graceful shutdown, as a reload does for the old
// config, and returns once its listener closed: from then on Go's server
// answers no request it reads.
func (s *server) shutDown(t *testing.T) {
	t.Helper()
	go s.srv.Shutdown(context.Background())
	for deadline := time.Now().Add(5 * time.Second); !s.l.isClosed(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s's listener did not close within 5 s of its shutdown", s.name)
		}
	}
}

// waitOpened waits until s took up a connection, and returns it.
func (s *server) waitOpened(t *testing.T) *conn {
	t.Helper()
	select {
	case c := <-s.opened:
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not take up the connection within 5 s", s.name)
		return nil
	}
}

// waitRead waits until Go read n bytes of c (its opening kept them), or
// its opening ended.
func waitRead(t *testing.T, c *conn, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		o := c.open.Load()
		if o == nil {
			return
		}
		o.mu.Lock()
		read := len(o.replay)
		o.mu.Unlock()
		if read >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server read %d of the %d bytes sent within 5 s", read, n)
		}
	}
}

// ask sends what rest of a request (after the part sent before, if any)
// on c and returns the answer's body, or the error.
func ask(c net.Conn, rest string) (string, error) {
	bodies, err := askAll(c, rest, 1)
	return strings.Join(bodies, ""), err
}

// askAll sends rest on c and reads n answers, returning their bodies.
func askAll(c net.Conn, rest string, n int) (bodies []string, err error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, rest); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	for range n {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return bodies, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return bodies, err
		}
		bodies = append(bodies, string(body))
	}
	return bodies, nil
}

// dial connects to s's address.
func dial(t *testing.T, s *server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const post = "POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello"

// TestReloadHandsOverWhatTheOldServerReadNoRequestOf: a connection the
// old config's server accepted but had read no request head of when its
// shutdown began (nothing sent yet, or part of the head) is answered by
// the new config's server, which reads it from its start; before, Go's
// server closed it unanswered. One whose head had ended stays the old
// server's, which runs it (the new one must not run it again), and with
// no listener at the address left, the old server closes it as before.
// Its count passes with it.
func TestReloadHandsOverWhatTheOldServerReadNoRequestOf(t *testing.T) {
	before := settledTotal()
	pad := "X-Pad: " + strings.Repeat("p", 3000) + "\r\n"
	big := strings.Repeat("b", 6000)
	long := "POST /long HTTP/1.1\r\nHost: example.com\r\n" + pad + "Content-Length: 6000\r\n\r\n" + big
	for _, tc := range []struct {
		name string
		// sent before the shutdown, after it
		before, after string
		// the new config runs (a listener at the address)
		successor bool
		// the answer's body (or "EOF"), and which server ran it
		want, ran string
	}{
		{"nothing sent yet", "", post, true, `new read 5 bytes`, "new"},
		{"part of the head", post[:20], post[20:], true, `new read 5 bytes`, "new"},
		{"all of the head but its last line end", post[:len(post)-7], post[len(post)-7:], true, `new read 5 bytes`, "new"},
		{"a head split in a line end", post[:len(post)-8], post[len(post)-8:], true, `new read 5 bytes`, "new"},
		// what the old server read, 2 KB of a head, and what it kept back
		// (its next read, 4 KiB) is more than the new server's first read,
		// which ends the head: the rest of the body follows it, and a
		// second request
		{"part of a long head, then its end, a body and another request", long[:2000], long[2000:] + post, true, `new read 6000 bytes from 127.0.0.1:`, "new"},
		// the head had ended: the old server began the request, and
		// answers it as its shutdown lets it
		{"the head and part of the body", post[:len(post)-2], post[len(post)-2:], true, `old read 5 bytes`, "old"},
		{"no new config", "", post, false, "EOF", ""},
		{"no new config, part of the head", post[:20], post[20:], false, "EOF", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := startServer(t, "old", "127.0.0.1:0", nil)
			c := dial(t, old)
			served := old.waitOpened(t)
			io.WriteString(c, tc.before)
			waitRead(t, served, len(tc.before))
			var next *server
			if tc.successor {
				next = startServer(t, "new", old.l.Addr().String(), nil)
			}
			old.shutDown(t)
			requests := strings.Count(tc.before+tc.after, "HTTP/1.1\r\n")
			answers, err := askAll(c, tc.after, requests)
			got := strings.Join(answers, " | ")
			if err != nil {
				got += err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("the answer: %q, want %q", got, tc.want)
			}
			if tc.ran != "" && len(answers) != requests {
				t.Fatalf("%d answers to %d requests: %q", len(answers), requests, got)
			}
			ran := map[string]int64{"old": old.ran.Load()}
			if next != nil {
				ran["new"] = next.ran.Load()
			}
			for name, n := range ran {
				if want := map[bool]int64{true: int64(requests)}[name == tc.ran]; n != want {
					t.Errorf("the %s server ran %d requests, want %d", name, n, want)
				}
			}
		})
	}
	if after := settledTotal(); after != before {
		t.Errorf("%d connections counted open once every test's closed, want %d", after, before)
	}
}

// A client that sent part of its head and then nothing until the old
// server gave up on it (its header timeout, during its shutdown) is not
// handed over: the new server would give it a new timeout at every reload.
func TestTimedOutConnectionsAreNotHandedOver(t *testing.T) {
	old := startServerWith(t, "old", "127.0.0.1:0", nil, 300*time.Millisecond)
	c := dial(t, old)
	served := old.waitOpened(t)
	io.WriteString(c, post[:20])
	waitRead(t, served, 20)
	next := startServer(t, "new", old.l.Addr().String(), nil)
	old.shutDown(t)
	// the old server gives up on it at its header timeout, and closes it
	for deadline := time.Now().Add(10 * time.Second); !served.closed.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the old server did not close the connection within 10 s of its header timeout")
		}
	}
	if got, err := ask(c, post[20:]); err == nil {
		t.Fatalf("the answer: %q, want the connection closed by the old server", got)
	}
	if n := next.ran.Load(); n != 0 {
		t.Fatalf("the new server ran %d requests", n)
	}
}

// A connection open for more than 5 s that has sent nothing (a browser's
// preconnect) is one Go's shutdown closes at once, as idle, while it
// waits to read it: it is handed over all the same.
func TestIdleNewConnectionsAreHandedOver(t *testing.T) {
	t.Parallel()
	old := startServer(t, "old", "127.0.0.1:0", nil)
	c := dial(t, old)
	old.waitOpened(t)
	time.Sleep(6500 * time.Millisecond) // Go counts it idle past 5 s (in whole seconds)
	next := startServer(t, "new", old.l.Addr().String(), nil)
	old.shutDown(t)
	if got, err := ask(c, post); err != nil || !strings.Contains(got, "new read 5 bytes") {
		t.Fatalf("the answer: %q %v, want the new server's", got, err)
	}
	if n := next.ran.Load(); n != 1 {
		t.Fatalf("the new server ran %d requests, want 1", n)
	}
}

// With proxy_protocol after hearth_io, as Caddy orders them, the PROXY
// line read before the reload goes to the new server with the rest, in
// reads smaller than what it replays.
func TestReloadHandsOverThroughProxyProtocol(t *testing.T) {
	proxied := func(l net.Listener) net.Listener { return &proxyproto.Listener{Listener: l} }
	old := startServer(t, "old", "127.0.0.1:0", nil, proxied)
	c := dial(t, old)
	line := "PROXY TCP4 192.0.2.1 192.0.2.2 1111 80\r\n"
	io.WriteString(c, line)
	waitRead(t, old.waitOpened(t), len(line))
	startServer(t, "new", old.l.Addr().String(), nil, proxied)
	old.shutDown(t)
	body := strings.Repeat("b", 1000)
	got, err := ask(c, fmt.Sprintf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	if err != nil || !strings.Contains(got, "new read 1000 bytes from 192.0.2.1:1111 (<nil>)") {
		t.Fatalf("the answer: %q %v, want the new server's, with the proxy's client and the whole body", got, err)
	}
}

// A listener hearth_io wraps after another wrapper (tls here: a config
// that lists it second) is handed nothing: it would serve a raw
// connection past that wrapper.
func TestMisplacedListenersAreHandedNothing(t *testing.T) {
	cert := selfSigned(t)
	old := startServer(t, "old", "127.0.0.1:0", &cert)
	fresh := dial(t, old)
	old.waitOpened(t)
	misplaced := (&Wrapper{logger: zap.NewNop()}).WrapListener(tls.NewListener(reusable(t, old.l.Addr().String()), &tls.Config{Certificates: []tls.Certificate{cert}}))
	var plain atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			plain.Add(1)
		}
	})}
	go srv.Serve(misplaced)
	t.Cleanup(func() { srv.Close() })
	if s := old.l.successor(); s != nil {
		t.Fatalf("the misplaced listener is the old one's successor")
	}
	old.shutDown(t)
	ask(fresh, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // plain text, to the HTTPS port
	if n := plain.Load(); n != 0 {
		t.Fatalf("%d requests were served without TLS on the HTTPS port", n)
	}
}

// TestReloadHandsOverATLSConnectionNotYetHeard: a TLS connection of
// which the old server read nothing when its shutdown began is the new
// server's from its hello on. One whose hello the old server answered
// cannot be (its keys are the old server's): over HTTP/1.1, Go's server
// closes it unanswered, as before; over HTTP/2 it answers it, or tells
// the client (GOAWAY) to send it again elsewhere, which the client does.
func TestReloadHandsOverATLSConnectionNotYetHeard(t *testing.T) {
	cert := selfSigned(t)
	old := startServer(t, "old", "127.0.0.1:0", &cert)
	fresh := dial(t, old)
	old.waitOpened(t)
	handshaken := func(proto string) *tls.Conn {
		c := tls.Client(dial(t, old), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}})
		old.waitOpened(t)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Handshake(); err != nil || c.ConnectionState().NegotiatedProtocol != proto {
			t.Fatalf("handshake for %s: %v, %q", proto, err, c.ConnectionState().NegotiatedProtocol)
		}
		return c
	}
	h1, h2 := handshaken("http/1.1"), handshaken("h2")
	startServer(t, "new", old.l.Addr().String(), &cert)
	old.shutDown(t)
	got, err := ask(tls.Client(fresh, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}), post)
	if err != nil || !strings.Contains(got, `new read 5 bytes`) {
		t.Fatalf("a TLS connection not heard yet: %q %v, want the new server's answer", got, err)
	}
	if got, err := ask(h1, post); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("over HTTP/1.1, a TLS connection whose hello the old server answered: %q %v, want it closed unanswered", got, err)
	}
	cc, err := (&http2.Transport{}).NewClientConn(h2)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "https://example.com/form", strings.NewReader("hello"))
	resp, err := cc.RoundTrip(req)
	if goAway := (http2.GoAwayError{}); err != nil && (errors.As(err, &goAway) || strings.Contains(err.Error(), "GOAWAY") || strings.Contains(err.Error(), "client conn not usable")) {
		return // the client knows the request was not served, and sends it again
	}
	if err != nil {
		t.Fatalf("over HTTP/2, a TLS connection whose hello the old server answered: %v, want the old server's answer or a GOAWAY", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `old read 5 bytes`) {
		t.Fatalf("over HTTP/2: %q, want the old server's answer", body)
	}
}

// TestRefusedReloadHandsBack: when the new config's listener closes
// first (a reload refused after its servers started), what it accepted
// and read no request of goes back to the old one.
func TestRefusedReloadHandsBack(t *testing.T) {
	old := startServer(t, "old", "127.0.0.1:0", nil)
	refused := startServer(t, "refused", old.l.Addr().String(), nil)
	// the kernel spreads connections over the two sockets: one the new
	// server took up
	var c net.Conn
	for range 200 {
		d := dial(t, old)
		select {
		case <-refused.opened:
			c = d
		case <-old.opened:
		case <-time.After(5 * time.Second):
			t.Fatal("no server took up a connection within 5 s")
		}
		if c != nil {
			break
		}
	}
	if c == nil {
		t.Fatal("none of 200 connections went to the second socket")
	}
	refused.shutDown(t)
	if got, err := ask(c, post); err != nil || !strings.Contains(got, `old read 5 bytes`) {
		t.Fatalf("the answer: %q %v, want the old server's", got, err)
	}
}

// FuzzOpening: however a connection's bytes come in reads, its opening
// ends at the read in which a request head may have ended (an empty line,
// CRLF or bare LF), at the first read of a TLS connection, or where it
// would keep more than maxReplay; until then it keeps exactly what it
// gave. And no head Go's parser reads whole escapes headEnds.
func FuzzOpening(f *testing.F) {
	f.Add([]byte(post), []byte{3, 20, 1, 1})
	f.Add([]byte("GET / HTTP/1.1\nHost: x\n\n"), []byte{22, 1})
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), []byte{25, 1, 1})
	f.Add([]byte{tlsHandshake, 3, 1, 0, 5}, []byte{1})
	f.Add(bytes.Repeat([]byte("a"), maxReplay+10), []byte{255, 255})
	f.Fuzz(func(t *testing.T, data, splits []byte) {
		if len(data) > 4*maxReplay || len(splits) == 0 {
			return
		}
		e := &entry{}
		o := &opening{}
		e.open.Store(o)
		ended, want := -1, -1 // the read at which the opening ended, should have
		for k, read := 0, 0; read < len(data); k++ {
			n := min(len(data)-read, 1+int(splits[k%len(splits)])*(1+len(data)/1024))
			b := data[read : read+n]
			read += n
			if want < 0 && (k == 0 && b[0] == tlsHandshake || headEnds(data[:read]) || read > maxReplay) {
				want = k
			}
			if ended >= 0 {
				continue
			}
			o.mu.Lock()
			e.given(o, b)
			o.mu.Unlock()
			switch {
			case e.open.Load() == nil:
				ended = k
				if o.replay != nil {
					t.Fatalf("an ended opening keeps %d bytes", len(o.replay))
				}
			case !bytes.Equal(o.replay, data[:read]):
				t.Fatalf("kept %q of %q, want what it gave", o.replay, data[:read])
			}
		}
		if ended != want {
			t.Fatalf("the opening of %q ended at read %d, want %d", data, ended, want)
		}
		// and where Go's parser reads a whole head, one may have ended
		if _, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data))); err == nil && !headEnds(data) {
			t.Fatalf("Go read a request head from %q, in which none ends", data)
		}
	})
}

// The listener a closing one's connections go to serves its address
// exactly: a server on every IPv4 address and another on every IPv6
// one share a port (and a key), not their connections.
func TestSuccessorServesTheSameAddress(t *testing.T) {
	wrap := func(network, addr string) *listener {
		l := (&Wrapper{logger: zap.NewNop()}).WrapListener(reusableOn(t, network, addr)).(*listener)
		t.Cleanup(func() { l.Close() })
		return l
	}
	oldV4 := wrap("tcp4", "0.0.0.0:0")
	port := fmt.Sprint(oldV4.Addr().(*net.TCPAddr).Port)
	oldV6 := wrap("tcp6", "[::]:"+port)
	newV4, newV6 := wrap("tcp4", "0.0.0.0:"+port), wrap("tcp6", "[::]:"+port)
	if oldV4.key != oldV6.key {
		t.Fatalf("keys %q and %q: the test shows nothing", oldV4.key, oldV6.key)
	}
	for _, tc := range []struct{ old, want *listener }{{oldV4, newV4}, {oldV6, newV6}, {newV4, oldV4}, {newV6, oldV6}} {
		if got := tc.old.successor(); got != tc.want {
			t.Errorf("the successor of %s (%p): %p, want %s (%p)", tc.old.address, tc.old, got, tc.want.address, tc.want)
		}
	}
}

// What a handed-over connection has still to give comes first, however
// it is read: by Read, after its head ended and a write, by WriteTo, and
// after CloseRead.
func TestPendingComesFirst(t *testing.T) {
	const pending = "GET / HTTP/1.1\r\n\r\nABCDEFGH"
	for _, tc := range []struct {
		name string
		read func(t *testing.T, c *conn) string
	}{
		{"read", func(t *testing.T, c *conn) string {
			b, _ := io.ReadAll(c)
			return string(b)
		}},
		{"after its head, a write, and by WriteTo", func(t *testing.T, c *conn) string {
			p := make([]byte, 18) // the head: its end begins the request
			n, _ := io.ReadFull(c, p)
			c.Write([]byte("x"))
			q := make([]byte, 3)
			m, _ := c.Read(q)
			var rest bytes.Buffer
			c.WriteTo(&rest)
			return string(p[:n]) + string(q[:m]) + rest.String()
		}},
		{"after CloseRead", func(t *testing.T, c *conn) string {
			if err := c.CloseRead(); err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(c)
			return string(b)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := reusable(t, "127.0.0.1:0")
			defer ln.Close()
			client, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			l := &listener{Listener: ln, done: make(chan struct{})}
			clients.Lock()
			clients.total++ // as admit counted it
			clients.Unlock()
			c := l.wrapCounted(server.(*net.TCPConn), netip.Prefix{}, &opening{l: l, pending: []byte(pending)})
			defer c.Close()
			io.WriteString(client, "socket")
			client.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := tc.read(t, c)
			if !strings.HasPrefix(got, pending) || !strings.HasPrefix(pending+"socket", got) {
				t.Fatalf("read %q, want %q then what the socket has", got, pending)
			}
			if got != pending+"socket" && tc.name != "after CloseRead" {
				t.Fatalf("read %q, want %q", got, pending+"socket")
			}
			if c.open.Load() != nil {
				t.Errorf("the opening did not end once all was read")
			}
		})
	}
}

// TestResetConnectionsAreNotHandedOver: a connection the old listener had
// accepted, that its client reset before the reload, has no peer any
// more: its descriptor, made again for the new listener, has no remote
// address, and logging it crashed Caddy (a nil address's String, in the
// new server's Accept). It is closed and counted out instead, and the new
// listener goes on with the next connection.
func TestResetConnectionsAreNotHandedOver(t *testing.T) {
	base := settledTotal()
	old := (&Wrapper{logger: zap.NewNop()}).WrapListener(reusable(t, "127.0.0.1:0")).(*listener)
	defer old.Close()
	addr := old.Addr().String()
	client, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// the accept loop takes it up (and holds it for an Accept that no
	// server makes here)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		clients.Lock()
		n := clients.total
		clients.Unlock()
		if n == base+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the connection was not accepted: %d counted, want %d", n, base+1)
		}
	}
	client.(*net.TCPConn).SetLinger(0)
	client.Close() // a reset, processed on loopback before Close returns
	next := (&Wrapper{logger: zap.NewNop()}).WrapListener(reusable(t, addr)).(*listener)
	defer next.Close()
	old.Close() // the reload: what old held goes to next
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := next.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	fresh, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	select {
	case c := <-accepted:
		if c.RemoteAddr() == nil || c.RemoteAddr().String() != fresh.LocalAddr().String() {
			t.Errorf("the new listener's first connection is from %v, want the fresh one from %s", c.RemoteAddr(), fresh.LocalAddr())
		}
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the new listener accepted nothing")
	}
	fresh.Close()
	if n := settledTotal(); n != base {
		t.Errorf("%d connections counted once all closed, want %d", n, base)
	}
}
