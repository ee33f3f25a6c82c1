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
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// server is a net/http server on a hearth_io listener of its own at an
// address others may share (SO_REUSEPORT, as Caddy binds), answering with
// its name: a config of a reload.
type server struct {
	name string
	l    *listener
	srv  *http.Server
	// opened has a value for each connection the server took up
	opened chan struct{}
}

// reusable listens at addr ("127.0.0.1:0" for a new port) with
// SO_REUSEPORT.
func reusable(t *testing.T, addr string) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); cerr != nil {
			return cerr
		}
		return err
	}}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startServer serves at addr under name, over TLS if cert is given.
func startServer(t *testing.T, name, addr string, cert *tls.Certificate) *server {
	t.Helper()
	s := &server{name: name, opened: make(chan struct{}, 100)}
	s.l = (&Wrapper{logger: zap.NewNop()}).WrapListener(reusable(t, addr)).(*listener)
	var l net.Listener = s.l
	if cert != nil {
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}})
	}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s read %q", name, body)
		}),
		ConnState: func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				s.opened <- struct{}{}
			}
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

// waitOpened waits until s took up a connection.
func (s *server) waitOpened(t *testing.T) {
	t.Helper()
	select {
	case <-s.opened:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not take up the connection within 5 s", s.name)
	}
}

// ask sends what rest of a request (after the part sent before, if any)
// on c and returns the answer's body, or the error.
func ask(c net.Conn, rest string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, rest); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
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
// server's, and with no listener at the address left, the old server
// closes it as before. Its count passes with it.
func TestReloadHandsOverWhatTheOldServerReadNoRequestOf(t *testing.T) {
	before := settledTotal()
	for _, tc := range []struct {
		name string
		// sent before the shutdown, after it
		before, after string
		// the new config runs (a listener at the address)
		successor bool
		want      string // the answer's body, or "EOF"
	}{
		{"nothing sent yet", "", post, true, `new read "hello"`},
		{"part of the head", post[:20], post[20:], true, `new read "hello"`},
		{"all of the head but its last line end", post[:len(post)-7], post[len(post)-7:], true, `new read "hello"`},
		{"a head split in a line end", post[:len(post)-8], post[len(post)-8:], true, `new read "hello"`},
		// the head had ended: the old server began the request (the new
		// one would run it again), and answers it as its shutdown lets it
		{"the head and part of the body", post[:len(post)-2], post[len(post)-2:], true, `old read "hello"`},
		{"no new config", "", post, false, "EOF"},
		{"no new config, part of the head", post[:20], post[20:], false, "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := startServer(t, "old", "127.0.0.1:0", nil)
			c := dial(t, old)
			old.waitOpened(t)
			if tc.before != "" {
				io.WriteString(c, tc.before)
				time.Sleep(50 * time.Millisecond) // read by the old server
			}
			if tc.successor {
				startServer(t, "new", old.l.Addr().String(), nil)
			}
			old.shutDown(t)
			got, err := ask(c, tc.after)
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("the answer: %q, want %q", got, tc.want)
			}
		})
	}
	if after := settledTotal(); after != before {
		t.Errorf("%d connections counted open once every test's closed, want %d", after, before)
	}
}

// TestReloadHandsOverATLSConnectionNotYetHeard: a TLS connection of
// which the old server read nothing when its shutdown began is the new
// server's from its hello on; one whose hello the old server answered
// cannot be (its keys are the old server's): Go's server closes it
// unanswered, as before.
func TestReloadHandsOverATLSConnectionNotYetHeard(t *testing.T) {
	cert := selfSigned(t)
	old := startServer(t, "old", "127.0.0.1:0", &cert)
	fresh := dial(t, old)
	old.waitOpened(t)
	shaken := dial(t, old)
	old.waitOpened(t)
	client := func(c net.Conn) *tls.Conn {
		return tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	}
	tshaken := client(shaken)
	tshaken.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tshaken.Handshake(); err != nil {
		t.Fatal(err)
	}
	startServer(t, "new", old.l.Addr().String(), &cert)
	old.shutDown(t)
	got, err := ask(client(fresh), post)
	if err != nil || got != `new read "hello"` {
		t.Fatalf("a TLS connection not heard yet: %q %v, want the new server's answer", got, err)
	}
	if got, err := ask(tshaken, post); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a TLS connection whose hello the old server answered: %q %v, want it closed unanswered", got, err)
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
	if got, err := ask(c, post); err != nil || got != `old read "hello"` {
		t.Fatalf("the answer: %q %v, want the old server's", got, err)
	}
}

// FuzzOpening: however a connection's bytes come in reads, its opening
// ends at the read in which a request head may have ended (an empty line,
// CRLF or bare LF), at the first read of a TLS connection, or where it
// would keep more than maxReplay; until then it keeps exactly what it
// gave.
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
	})
}
