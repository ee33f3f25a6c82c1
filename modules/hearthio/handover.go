package hearthio

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// A reload starts the new config's servers on new sockets for the same
// addresses, then shuts the old config's down. Go's http.Server, once its
// shutdown began, closes unanswered every connection whose request it
// reads from then on: a new connection the old config accepted a moment
// before (its request still on the way), or one a client opened and had
// not written to yet. hearth_io hands such a connection over instead, with
// the bytes it had given (its replay), to the listener now serving the same
// address, whose server reads the connection from its start: the client
// sees one answer, the new config's.
//
// A connection is handed over only while its opening lasts: while no
// request head may have ended in what Go read from it, nothing was written
// to it, and it does not speak TLS past its first bytes (a TLS connection
// is handed over only if nothing of it was read: once the old server
// answered its hello, its keys are the old server's). So no handler can
// have run on it, and the new server sees exactly the bytes the client
// sent. A refused reload works the same way backwards: the new config's
// listener closes, and its connections go back to the old one.
//
// The bytes Go reads from such a connection once its listener closed are
// kept back: Go gets errHandedOver, gives the connection up and closes
// it, and the close hands it over.

// errHandedOver is what Go reads from, or writes to, a connection whose
// listener closed and which is handed over to the listener that serves its
// address now.
var errHandedOver = errors.New("connection handed over to the listener serving its address now (a reload)")

// maxReplay bounds the bytes an opening keeps: a request head longer than
// this, on a connection the reload catches before the head ended, is not
// handed over (Go closes it unanswered, as without hearth_io).
const maxReplay = 16 << 10

// tlsHandshake is the first byte of a TLS connection (a handshake record).
const tlsHandshake = 0x16

// opening is a connection's state from its start until a request may
// have begun on it and what a handed-over one still had to give was given
// (entry.open points to it until then; nil after).
type opening struct {
	mu sync.Mutex
	// l is the listener that accepted (or adopted) the connection.
	l *listener
	// replay is what Go was given from the connection so far.
	replay []byte
	// pending is what a connection handed over gives before its socket:
	// the replay of the listener it came from.
	pending []byte
	// touched: Go read from it (a close then is Go's own: a timeout, its
	// client gone).
	touched bool
	// reading counts the Reads of the socket under way; quiet, once
	// made, is signalled when none is.
	reading int
	quiet   *sync.Cond
	// begun: a request may have begun (the opening is over but for what
	// pending still holds).
	begun bool
	// failed: a read of the socket failed otherwise than by its deadline
	// (the client reset or ended it): it is not handed over.
	failed bool
	// moving: Go was told errHandedOver; its close hands the connection
	// over.
	moving bool
}

// entry is what a TCP connection of hearth_io's keeps besides its socket:
// its count, and its opening (none where the listener is handed nothing,
// see listener.handsOver).
type entry struct {
	counted
	open atomic.Pointer[opening]
}

// headEnds reports whether a request head may end in b: an empty line,
// as Go's parser takes it (CRLF or a bare LF).
func headEnds(b []byte) bool {
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// read is a Read of the connection in its opening o, from o.pending or
// else from socket.
func (e *entry) read(o *opening, p []byte, socket func([]byte) (int, error)) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.moving {
		return 0, errHandedOver
	}
	o.touched = true
	var n int
	var err error
	if len(o.pending) > 0 {
		n = copy(p, o.pending)
		o.pending = o.pending[n:]
	} else {
		o.reading++
		o.mu.Unlock()
		n, err = socket(p)
		o.mu.Lock()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			o.failed = true
		}
		if o.reading--; o.reading == 0 && o.quiet != nil {
			o.quiet.Broadcast()
		}
	}
	switch {
	case o.begun:
		if len(o.pending) == 0 {
			e.end(o)
		}
		return n, err
	case n == 0:
		return n, err
	case o.l.isClosed() && len(o.replay)+n <= maxReplay && o.l.successor() != nil:
		o.replay = append(o.replay, p[:n]...)
		o.moving = true
		return 0, errHandedOver
	}
	e.given(o, p[:n])
	return n, err
}

// given records b, which Go is given: the opening ends when a request head
// may have ended, when the connection speaks TLS, or when it would keep
// more than maxReplay.
func (e *entry) given(o *opening, b []byte) {
	if len(o.replay) == 0 && (b[0] == tlsHandshake || headEnds(b)) || len(o.replay)+len(b) > maxReplay {
		e.begin(o)
		return
	}
	from := max(0, len(o.replay)-2) // an empty line may span two reads
	o.replay = append(o.replay, b...)
	if headEnds(o.replay[from:]) {
		e.begin(o)
	}
}

// begin ends the opening o (o.mu held): nothing is kept or kept back any
// more, and once pending is given, Reads go to the socket alone.
func (e *entry) begin(o *opening) {
	o.begun, o.replay = true, nil
	if len(o.pending) == 0 {
		e.end(o)
	}
}

// end lets the connection go without its opening o (o.mu held).
func (e *entry) end(o *opening) {
	if e.open.Load() == o {
		e.open.Store(nil)
	}
}

// writing ends the connection's opening before a write, or reports that
// it is handed over (false): nothing may be written to it then.
func (e *entry) writing() bool {
	o := e.open.Load()
	if o == nil {
		return true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.moving {
		return false
	}
	e.begin(o)
	return true
}

// readingPast ends the connection's opening before a read past it (WriteTo),
// returning what pending still held, to be given first; false: it is
// handed over.
func (e *entry) readingPast() ([]byte, bool) {
	o := e.open.Load()
	if o == nil {
		return nil, true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.moving {
		return nil, false
	}
	rest := o.pending
	o.pending = nil
	e.begin(o)
	return rest, true
}

// handOff decides whether Go's close of the connection hands it over
// (ok), and if so makes the socket the next server gets (next, a
// descriptor of its own: this one's deadlines and poller registration go
// with Go's close of it) and what it is to give first (replay). Its count
// passes with it. It is handed over when Go was told errHandedOver
// (moving), never read from it (the listener closed before Go took it up),
// or closes it while waiting for its first bytes (the idle connections
// Go's shutdown closes: one taken up 5 s before, that sent nothing): that
// read is stopped first, and what it brings goes with the connection.
// One Go read from and gave up on (a timeout, its client gone) is not.
// It runs under o.mu, so that a second close waits for the first's
// descriptor to be made.
func (e *entry) handOff(o *opening, tcp *net.TCPConn) (next *net.TCPConn, replay []byte, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e.open.Load() != o || o.begun {
		return nil, nil, false
	}
	if !o.moving {
		switch {
		case !o.l.isClosed() || o.l.successor() == nil:
			return nil, nil, false
		case o.reading > 0 && len(o.replay) == 0:
			if o.quiet == nil {
				o.quiet = sync.NewCond(&o.mu)
			}
			o.moving = true                     // (and Go's close after the read's, too, hands it over)
			_ = tcp.SetReadDeadline(time.Now()) // the read returns (what came is kept back)
			for o.reading > 0 {
				o.quiet.Wait()
			}
			if e.open.Load() != o || o.begun || o.failed {
				return nil, nil, false // (its read failed: the client reset it, say)
			}
		case o.touched || o.reading > 0:
			return nil, nil, false
		}
	}
	if !e.handOverCount() {
		return nil, nil, false // closed already
	}
	o.moving = true
	f, err := tcp.File()
	var c net.Conn
	if err == nil {
		c, err = net.FileConn(f)
		f.Close()
	}
	if err == nil && c.RemoteAddr() == nil {
		// no peer (getpeername failed, which net.FileConn lets pass): the
		// client reset it meanwhile, and it has nothing more to give
		c.Close()
		err = errors.New("the connection has no peer any more (reset by its client)")
	}
	if err != nil {
		if o.l.logger != nil {
			o.l.logger.Warn("a connection a reload caught could not be handed over to the new config: closed", zap.String("address", o.l.Addr().String()),
				zap.String("remote", addressOf(tcp.RemoteAddr())), zap.Error(err))
		}
		leave(e.client)
		return nil, nil, false
	}
	return c.(*net.TCPConn), append(o.replay, o.pending...), true
}

// addressOf is a for a log: a connection whose peer is gone may have none.
func addressOf(a net.Addr) string {
	if a == nil {
		return "(gone)"
	}
	return a.String()
}

// closeOrHandOver closes the connection, or hands it over (handOff) to the
// listener serving its address now: tcp is its socket, closeSocket closes
// it.
func (e *entry) closeOrHandOver(tcp *net.TCPConn, closeSocket func() error) error {
	if o := e.open.Load(); o != nil {
		if next, replay, ok := e.handOff(o, tcp); ok {
			_ = closeSocket()
			o.l.passOn(handed{conn: next, client: e.client, replay: replay})
			return nil
		}
	}
	e.leave()
	return closeSocket()
}

// handed is a connection on its way to the listener serving its address
// now.
type handed struct {
	conn   *net.TCPConn
	client netip.Prefix
	replay []byte
}

// passOn gives h to the newest other listener serving l's address, or
// closes it when there is none.
func (l *listener) passOn(h handed) {
	for {
		next := l.successor()
		if next == nil {
			if l.logger != nil {
				l.logger.Info("a connection a reload caught had no listener left to go to: closed", zap.String("address", l.Addr().String()), zap.String("remote", addressOf(h.conn.RemoteAddr())))
			}
			_ = h.conn.Close()
			leave(h.client)
			return
		}
		if next.receive(h) {
			return
		}
	}
}

// receive queues h for Accept, unless l closed (false).
func (l *listener) receive(h handed) bool {
	l.queue.Lock()
	defer l.queue.Unlock()
	if l.queue.closed {
		return false
	}
	l.queue.conns = append(l.queue.conns, h)
	select {
	case l.arrived <- struct{}{}:
	default:
	}
	return true
}

// takeHanded is the oldest connection handed to l, if any.
func (l *listener) takeHanded() (handed, bool) {
	l.queue.Lock()
	defer l.queue.Unlock()
	if len(l.queue.conns) == 0 {
		return handed{}, false
	}
	h := l.queue.conns[0]
	l.queue.conns = l.queue.conns[1:]
	return h, true
}

// adopt wraps h, handed to l: still counted (its place passed with it),
// and in its opening, with its replay to give first.
func (l *listener) adopt(h handed) net.Conn {
	if l.logger != nil {
		l.logger.Debug("serving a connection a reload handed over", zap.String("address", l.Addr().String()),
			zap.String("remote", addressOf(h.conn.RemoteAddr())), zap.Int("replayed_bytes", len(h.replay)))
	}
	return l.wrapCounted(h.conn, h.client, &opening{l: l, pending: h.replay})
}
