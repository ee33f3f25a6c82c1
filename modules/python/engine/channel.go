package engine

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/hearth-dev/hearth/modules/protocol"
)

// channel is one request-at-a-time channel to a worker.
type channel struct {
	worker *worker
	conn   net.Conn
	frames *protocol.Reader
	stream uint32 // id of the current request

	deadline time.Time // the read deadline set on conn; zero: none
	// timeout is the exchange's timeout, as setDeadline was given it, and
	// paused how long pauseDeadline has held its deadline off
	timeout, paused time.Duration
	// unbounded says the exchange on s set no deadline (a WebSocket, an
	// ASGI stream, timeout off) or waits on its client (pauseDeadline):
	// nothing ends it but its sides
	unbounded atomic.Bool
	sendBufs  net.Buffers // scratch of send, reused

	// guarded by the pool's mutex
	path   string    // path of the request in flight, "" when idle
	since  time.Time // when that request took the channel
	queued pipeline  // requests pipelined behind it (dispatch.go)
}

// Every write to a worker's channel goes through write or writeBatch.
// Each write is whole: net.Conn serializes concurrent writes, so frames
// written by different goroutines never interleave (a spilled body's
// frames from their own goroutine, a Cancel when the client leaves, a
// WebSocket client's messages). A request's head is written by the
// goroutine holding the channel: the one serving the request, or the one
// handing the channel over to it (send).

// write sends frames to the worker.
func (s *channel) write(frames []byte) error {
	_, err := s.conn.Write(frames)
	return err
}

// writeBatch sends several frames to the worker in one system call
// (writev).
func (s *channel) writeBatch(batch net.Buffers) error {
	if c, ok := s.conn.(*pairConn); ok {
		_, err := c.Writev(batch)
		return err
	}
	_, err := batch.WriteTo(s.conn)
	return err
}

// send writes first (if set) and the frames of piped to the worker in one
// system call. Only the goroutine handing s over may call it.
func (s *channel) send(first []byte, piped []*waiter) error {
	bufs := s.sendBufs[:0]
	if first != nil {
		bufs = append(bufs, first)
	}
	for _, w := range piped {
		bufs = append(bufs, w.frames)
	}
	s.sendBufs = bufs[:0]
	var err error
	if len(bufs) == 1 {
		err = s.write(bufs[0])
	} else {
		err = s.writeBatch(bufs)
	}
	clear(s.sendBufs[:cap(s.sendBufs)]) // keep no request's frames alive
	return err
}

// cancel tells the worker that the client of stream sid left.
func (s *channel) cancel(sid uint32) {
	_ = s.sendCancel(sid, 0)
}

// giveUp has the worker cancel the task of stream sid (ASGI): Caddy gave
// up on the request (FlagTimedOut).
func (s *channel) giveUp(sid uint32) error {
	return s.sendCancel(sid, protocol.FlagTimedOut)
}

// refuse has the worker cancel the task of stream sid (ASGI), whose
// stream Caddy refused (FlagRefused).
func (s *channel) refuse(sid uint32) error {
	return s.sendCancel(sid, protocol.FlagTimedOut|protocol.FlagRefused)
}

// cancelPastGrace answers a read of stream sid that failed with err
// while a grace deadline was armed (closeGrace, once the client left):
// the first time the deadline passes, the worker is told to cancel the
// task (giveUp) and given timeoutGrace to end the stream, and nil says
// the relay reads on; otherwise the error to end the channel with.
func (s *channel) cancelPastGrace(err error, sid uint32, cancelled *bool) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) || *cancelled {
		return err
	}
	*cancelled = true
	s.setDeadline(timeoutGrace)
	return s.giveUp(sid)
}

func (s *channel) sendCancel(sid uint32, flags uint8) error {
	var frame [protocol.HeaderSize]byte
	protocol.PutHeader(frame[:], protocol.Header{Type: protocol.Cancel, Flags: flags, Stream: sid})
	return s.write(frame[:])
}

// next reads the worker's next frame of the channel's current stream; a
// frame of another stream is a protocol error.
func (s *channel) next() (protocol.Header, []byte, error) {
	h, payload, err := s.frames.Next()
	if err == nil && h.Stream != s.stream {
		err = fmt.Errorf("response frame for stream %d during stream %d", h.Stream, s.stream)
	}
	return h, payload, err
}

// setDeadline bounds the exchange about to start on s by timeout (none
// if timeout ≤ 0): its reads and its writes, so a worker that stops
// reading a request body it was sent (the socket's buffer full) times out
// like one that does not answer. The deadline in force is kept while it falls within
// deadlineSlack of timeout, so a busy channel re-arms it a few times a second
// rather than on every request: a request times out between timeout and
// timeout plus 1%.
func (s *channel) setDeadline(timeout time.Duration) {
	s.unbounded.Store(timeout <= 0)
	s.timeout, s.paused = timeout, 0
	if timeout <= 0 {
		if !s.deadline.IsZero() {
			s.clearDeadline()
		}
		return
	}
	due := time.Now().Add(timeout)
	slack := deadlineSlack(timeout)
	if s.deadline.Before(due) || s.deadline.Sub(due) > slack {
		s.deadline = due.Add(slack)
		_ = s.conn.SetDeadline(s.deadline)
	}
}

// deadlineSlack is how much later than its timeout a request may time
// out: 1% of it, at most a second.
func deadlineSlack(timeout time.Duration) time.Duration {
	return min(timeout/100, time.Second)
}

// pauseDeadline takes s's deadline off while its reader waits on a client
// instead of on the worker (a worker blocked on a slow client's answer is
// not hung); the function it returns puts it back, later by the time it
// was off. The counted waits of one exchange (for Caddy's budget, spent
// by other clients maybe) may add up to its timeout: past it, resume
// reports errSlowClient, and the answer is cut off, so that a client
// reading slowly while the budget is spent holds the worker, and the
// requests pipelined behind its answer, no longer than the app itself
// may. From its first pause the exchange counts as unbounded: a recycled
// worker waiting on a client is stopped at stop_timeout. Only the
// channel's reader may call it.
func (s *channel) pauseDeadline(counted bool) (resume func() error) {
	s.unbounded.Store(true)
	if s.deadline.IsZero() {
		return func() error { return nil }
	}
	since := time.Now()
	_ = s.conn.SetDeadline(time.Time{})
	return func() error {
		waited := time.Since(since)
		s.deadline = s.deadline.Add(waited)
		_ = s.conn.SetDeadline(s.deadline)
		if counted {
			s.paused += waited
		}
		if s.timeout > 0 && s.paused > s.timeout {
			return errSlowClient
		}
		return nil
	}
}

// errSlowClient is an answer cut off because its client read it too
// slowly while Caddy's budget for what it holds was spent.
var errSlowClient = errors.New("answer cut off: its client read it too slowly while Caddy held its whole budget for slow clients (in memory and in temporary files), or while other requests waited for the worker past the answer's own part of that budget, and it waited for the client longer than the request's timeout")

// clearDeadline takes off any deadline on s, including one set on its
// connection directly (clientLeft's read deadline).
func (s *channel) clearDeadline() {
	_ = s.conn.SetDeadline(time.Time{})
	s.deadline = time.Time{}
}
