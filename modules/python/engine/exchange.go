package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/internal/textcut"
	"github.com/hearth-dev/hearth/modules/protocol"
)

// streamMemLimit is how much of a streamed response Caddy keeps in memory
// while the client is slower than the worker; the rest spills to disk.
const streamMemLimit = 1 << 20

// headBuffers recycles the buffers request heads are encoded into.
var headBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// Request is what the engine needs of a request beyond its *http.Request,
// as the handler decided it.
type Request struct {
	// ScriptName is the mount point a handle_path stripped (the app's
	// SCRIPT_NAME), or "".
	ScriptName string
	// ClientIP is the client's address as Caddy determined it (honouring
	// trusted_proxies); "" means the connection's peer.
	ClientIP string
	// FromTrustedProxy says the connection's peer is a proxy Caddy trusts
	// (trusted_proxies). Only then do the headers a proxy sets about the
	// request (X-Forwarded-*, Forwarded, X-Real-Ip) reach the app: from any
	// other client they are dropped, since an app that reads them (Flask's
	// ProxyFix, Django's USE_X_FORWARDED_HOST) would take the client's
	// word for the host its links name, its scheme, or the client's address.
	FromTrustedProxy bool
	// Body is the request's body, buffered (ReadBody); nil for none.
	Body *Body
	// Timeout bounds the request's time in the worker; ≤ 0: none.
	Timeout time.Duration
	// WriteIdle bounds how long a write to a WebSocket's client may stall
	// before the client is given up (Caddy's write_idle timeout, which
	// does not follow a hijacked connection); ≤ 0: none.
	WriteIdle time.Duration
	// Entered says the handler counted the request in the pool (Enter)
	// while it read its body: Serve ends that (Leave) once the request
	// holds a channel or waits in the queue, where a draining pool counts
	// it anyway, or is refused.
	Entered bool
}

// Serve forwards one request, whose body is already buffered, to a worker
// and relays the response. A request whose worker died before answering is
// retried once on another worker when its method is idempotent. An error
// the engine could not serve it for carries a Failure (FailureOf).
func (p *Pool) Serve(w http.ResponseWriter, r *http.Request, rq *Request) error {
	entered := rq.Entered
	defer func() {
		if entered {
			p.Leave()
		}
	}()
	bufp := headBuffers.Get().(*[]byte)
	defer headBuffers.Put(bufp)
	// the request's frames, encoded once before a worker is taken: head,
	// then the body when it is in memory (a spilled body is streamed)
	sid := p.nextStream.Add(1)
	head, err := appendRequestHead((*bufp)[:protocol.HeaderSize], r, rq)
	if err != nil {
		return err
	}
	body := rq.Body
	if body == nil {
		body = &noBody
	}
	flags := uint8(0)
	if body.size == 0 {
		flags = protocol.FlagEnd
	}
	protocol.PutHeader(head, protocol.Header{Length: uint32(len(head) - protocol.HeaderSize), Type: protocol.RequestHead, Flags: flags, Stream: sid})
	frames := head
	if body.inline() && body.size > 0 {
		frames = appendBodyFrames(head, sid, body.mem)
	}
	*bufp = frames
	from := origin{rq.ClientIP, r.RemoteAddr}
	if err := p.streamsPastBound(r, from); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		g, err := p.acquire(r.Context(), from, r.URL.Path, idempotent(r.Method), frames, body.inline(), rq.Timeout)
		if entered {
			// the channel (or a refusal) holds the request now: a draining
			// pool waits for it as for any it runs, and not for a slow
			// client's download once the channel went back
			p.Leave()
			entered = false
		}
		if err != nil {
			return p.unavailable(err)
		}
		g.channel.setDeadline(rq.Timeout)
		mayRetry := attempt == 1 && idempotent(r.Method)
		retry, err := p.exchange(g, w, r, from, sid, frames, body, mayRetry)
		if retry && mayRetry {
			// counted in the pool until the retry holds a channel
			// (brokenBeforeAnswer entered it)
			entered = true
			p.logger.Warn("retrying request on another worker", zap.String("path", r.URL.Path), zap.Error(err))
			continue
		}
		return err
	}
}

// brokenBeforeAnswer ends s's worker, which failed before it answered
// (broken); retry says the request may go to another worker, which Serve
// does when mayRetry. Such a request is counted in the pool first (Enter,
// which Serve ends once the retry holds a channel): the channel's end
// could otherwise let a draining pool, with nothing else in flight, stop
// in the moment before the retry's acquire.
func (p *Pool) brokenBeforeAnswer(s *channel, err error, retry, mayRetry bool) (bool, error) {
	if retry && mayRetry {
		p.Enter()
	}
	return retry, p.broken(s, err)
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// unavailable says why a request got no worker: the queue (full, full of
// its client's requests, timed out, or the pool stopped), a pipelined
// request lost with its worker, or its client left.
func (p *Pool) unavailable(err error) error {
	if errors.Is(err, errQueueFull) || errors.Is(err, errQueueTimeout) || errors.Is(err, errPoolStopped) {
		return Failed(Unavailable, fmt.Errorf("app %s: %w", p.opts.Name, err))
	}
	if errors.Is(err, errClientQueueFull) {
		return Failed(TooManyRequests, fmt.Errorf("app %s: %w", p.opts.Name, err))
	}
	if errors.Is(err, errPipelineAbandoned) {
		return Failed(Abandoned, fmt.Errorf("app %s: %w", p.opts.Name, err))
	}
	return Failed(ClientLeft, fmt.Errorf("the client left while waiting for a worker: %w", err))
}

// exchange runs one request, from the client at from, on the granted
// channel s: it sends the request's frames (unless the grant says they
// were sent) and relays the response.
// It always gives s back (or retires its worker). retry reports that the
// worker failed before it answered.
func (p *Pool) exchange(g grant, w http.ResponseWriter, r *http.Request, from origin, sid uint32, frames []byte, body *Body, mayRetry bool) (retry bool, err error) {
	s := g.channel
	s.stream = sid
	var bodySent chan error
	if g.sent {
		if g.sendErr != nil {
			return p.brokenBeforeAnswer(s, g.sendErr, true, mayRetry)
		}
	} else {
		if err := s.write(frames); err != nil {
			// a worker that stopped reading would stop reading there too
			return p.brokenBeforeAnswer(s, err, !errors.Is(err, os.ErrDeadlineExceeded), mayRetry)
		}
		if !body.inline() {
			bodySent = make(chan error, 1)
			from := body.reader()
			body.hold() // the request may end (its client left) while the body is still sent
			go func() {
				defer body.drop()
				bodySent <- panics.Call(p.logger, "sending a request body to a worker", func() error { return writeBodyFrames(s, sid, from) })
			}()
		}
	}
	h, payload, err := s.frames.Next()
	if err != nil {
		if p.opts.ASGI() && errors.Is(err, os.ErrDeadlineExceeded) {
			return false, p.cancelTimedOut(s, sid, bodySent)
		}
		// the worker died before answering: the request may be retried
		// elsewhere, unless it hung (it would hang there too)
		return p.brokenBeforeAnswer(s, err, !errors.Is(err, os.ErrDeadlineExceeded), mayRetry)
	}
	hdr := w.Header()
	mark := markHeader(hdr)
	status, err := p.responseHead(h, payload, sid, hdr)
	if err != nil {
		return false, p.badHead(s, sid, bodySent, err)
	}
	if p.opts.ASGI() && s.frames.Buffered() == 0 {
		// the head came on its own: the app awaits something before its
		// first body (an event stream's first event, a slow query). The
		// client gets the head now, as from uvicorn (an EventSource opens,
		// a client's header timeout is met); a failure from here on cuts
		// the response off.
		return false, p.streamASGI(w, r, from, s, sid, status, nil, bodySent, &mark)
	}
	f, err := s.nextBody()
	switch {
	case err != nil:
		mark.restore(hdr) // Caddy answers the error, not the app
		return false, p.broken(s, err)
	case f.aborted:
		mark.restore(hdr)
		aborted := p.appAborted(f.data, "before sending its response body")
		if err := p.finish(s, bodySent); err != nil {
			return false, err
		}
		return false, aborted
	case f.last:
		return false, p.finishSmall(w, r, status, f.data, s, bodySent, &mark)
	case p.opts.ASGI():
		return false, p.streamASGI(w, r, from, s, sid, status, f.data, bodySent, &mark)
	}
	return false, p.stream(w, s, sid, status, f.data, bodySent, nil, declaredLength(r, status, hdr))
}

// bodyFrame is a frame of a response body, as the relays read it.
type bodyFrame struct {
	data    []byte // body bytes; for an abort, the app's message
	last    bool   // the response is complete: its last frame, or an abort
	aborted bool   // the app failed after it sent the response head
}

// nextBody reads the next frame of the response body on s: the one frame
// switch of every relay. An abort ends the response with the channel in
// order; an error (the channel broke, or sent a frame that has no place in
// a body) means the channel cannot be trusted (broken ends its worker).
func (s *channel) nextBody() (bodyFrame, error) {
	h, payload, err := s.next()
	switch {
	case err != nil:
		return bodyFrame{}, err
	case h.Type == protocol.ResponseBody:
		return bodyFrame{data: payload, last: h.End()}, nil
	case h.Type == protocol.Abort:
		return bodyFrame{data: payload, last: true, aborted: true}, nil
	}
	return bodyFrame{}, fmt.Errorf("unexpected %s frame in a response body", h.Type)
}

// appAborted logs the app's failure after its response head (when says
// where it was) and returns the request's error.
func (p *Pool) appAborted(message []byte, when string) error {
	p.logAppFailure("app failed "+when, message)
	return Failed(AppAborted, fmt.Errorf("app %s aborted the response (its error is in the log, which takes at most ten of them a second)", p.opts.Name))
}

// maxLoggedFailure bounds the app's own words about a failure (an Abort
// frame's message) in the log: the runtime sends at most 4 KiB, but a
// worker's channel carries whatever its process writes, up to a frame.
const maxLoggedFailure = 4 << 10

// logAppFailure logs the message of an Abort frame, cut to
// maxLoggedFailure, at most ten a second for the app (counting the ones
// held back): its requests are the app's to make, as fast as it likes.
func (p *Pool) logAppFailure(what string, message []byte) {
	ok, skipped := p.failureLogs.Allow()
	if !ok {
		return
	}
	fields := []zap.Field{zap.String("error", textcut.Prefix(string(message[:min(len(message), maxLoggedFailure+utf8.UTFMax)]), maxLoggedFailure))}
	if skipped > 0 {
		fields = append(fields, zap.Int64("not_logged_since", skipped))
	}
	p.logger.Error(what, fields...)
}

// streamASGI relays an ASGI response that did not come whole with its
// head. What follows may stream for as long as the app and the client keep
// it going (server-sent events, a download): Caddy's write_idle timeout
// bounds the client's writes instead of the request's timeout, so a long
// stream or a slow client does not end the worker and every request it
// serves; and a client that leaves is the app's to hear of
// (http.disconnect), however long its next body frame takes. (A response
// that came whole needs neither: it is answered at once.)
//
// It goes through a spool, as a WSGI response does (stream): the channel
// goes back once the app has sent the whole response, while a slow client
// takes it at its own pace. Until then the stream holds its channel, so
// streams are counted with WebSockets (admit): one past the limit gets 503
// instead of the app's head (mark), one past its client's share 429, and
// its task is cancelled.
func (p *Pool) streamASGI(w http.ResponseWriter, r *http.Request, from origin, s *channel, sid uint32, status int, first []byte, bodySent chan error, mark *headerMark) error {
	// a request whose answer may be asked again (GET, HEAD) is refused past
	// the limit; another is counted, not refused: its app has done its
	// work (a POST's effects), and a 503 would invite a second one; but
	// for a client past its share while the app is at its limit, or past
	// twice its share (the latter is refused before its app is asked, in
	// the steady state: streamsPastBound)
	release, refused := p.admit(streamedResponse, r.Method == http.MethodGet || r.Method == http.MethodHead, from)
	if refused != nil {
		mark.restore(w.Header())                   // Caddy answers the refusal, not the app
		_ = p.giveUpStream(s, sid, bodySent, true) // (a worker that does not end the stream is terminated, and logged)
		return refused
	}
	s.setDeadline(0)
	left := &clientLeft{s: s, sid: sid}
	stop := context.AfterFunc(r.Context(), left.tell)
	defer stop()
	return p.stream(w, s, sid, status, first, bodySent, &asgiStream{left: left, release: release}, declaredLength(r, status, w.Header()))
}

// asgiStream is what relaying an ASGI stream (streamASGI) adds to a
// response's relay (stream): the app hears of its client leaving (left),
// and the stream's place among the long-lived exchanges is given back
// once the app has sent it all (release).
type asgiStream struct {
	left    *clientLeft
	release func()
}

// closeGrace is how long an ASGI app has to end a response once told that
// its client left (http.disconnect; its send raises) before its task is
// cancelled: an event stream that waits for its next event without
// listening for the disconnect would hold its channel until that event
// came. (Daphne's application_close_timeout is 10 s too.)
const closeGrace = 10 * time.Second

// clientLeft tells the worker, once, that the client of a streamed ASGI
// response (or of a WebSocket) left, and arms the channel's read deadline
// for closeGrace; it does nothing once the exchange is over, when the
// channel may serve another request. tell may run on any goroutine (context.AfterFunc);
// over runs on the one relaying the response.
type clientLeft struct {
	s          *channel
	sid        uint32
	mu         sync.Mutex
	told, done bool
}

func (l *clientLeft) tell() {
	l.tellWith(func() { l.s.cancel(l.sid) })
}

// tellWith is tell with the worker told by notice (a WebSocket's close).
func (l *clientLeft) tellWith(notice func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.told || l.done {
		return
	}
	l.told = true
	// the deadline first: a worker whose loop is blocked may not take
	// the notice, and the relay must still see the grace run out
	_ = l.s.conn.SetReadDeadline(time.Now().Add(closeGrace))
	notice()
}

// over ends the exchange for tell, and takes back the deadline it set.
func (l *clientLeft) over() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	if l.told {
		l.s.clearDeadline()
	}
}

// finish gives s back once the exchange is complete, after the request
// body (when it was streamed from a file) has been fully sent.
func (p *Pool) finish(s *channel, bodySent chan error) error {
	if bodySent != nil {
		if err := <-bodySent; err != nil {
			return p.broken(s, err)
		}
	}
	p.release(s)
	return nil
}

// bufferedWrite is the size up to which net/http (and Caddy's HTTP/2 and
// HTTP/3 writers) take a response body into their own buffer without
// writing to the client's connection.
const bufferedWrite = 2048

// finishSmall answers a response that came in one frame. The channel is
// released before anything can block on the client (a small body goes into
// the response writer's buffer, a larger one is copied first: into memory
// while the held budget allows, else into a temporary file), so a slow
// client holds no worker. When the request's body could not be sent whole
// (the worker broke meanwhile) before the response was written, the error
// goes out without the app's headers (mark: the header before them; nil
// when the body was never streamed).
func (p *Pool) finishSmall(w http.ResponseWriter, r *http.Request, status int, payload []byte, s *channel, bodySent chan error, mark *headerMark) error {
	hdr := w.Header()
	// (a HEAD answered without a body says no length: its GET's is not known)
	if hdr["Content-Length"] == nil && status != http.StatusNoContent && status != http.StatusNotModified && (r.Method != http.MethodHead || len(payload) > 0) {
		hdr["Content-Length"] = contentLength(len(payload))
	}
	send := len(payload) > 0 && r.Method != http.MethodHead && status != http.StatusNoContent && status != http.StatusNotModified
	if n := declaredLength(r, status, hdr); n >= 0 && n != int64(len(payload)) {
		// nothing is sent yet: the client gets an error, not a body its
		// length misframes (HTTP/2 and HTTP/3 would send it as it is)
		if mark != nil {
			mark.restore(hdr)
		}
		err := p.lengthMismatch(n, int64(len(payload)), "")
		if ferr := p.finish(s, bodySent); ferr != nil {
			return ferr
		}
		return Failed(BadResponse, fmt.Errorf("app %s: %w", p.opts.Name, err))
	}
	if len(payload) <= bufferedWrite {
		w.WriteHeader(status)
		if send {
			_, _ = w.Write(payload)
		}
		return p.finish(s, bodySent)
	}
	var body []byte
	var sp *spool
	switch {
	case !send:
	case held.takeMem(len(payload)):
		body = append([]byte(nil), payload...)
		defer held.giveMem(len(payload))
	default: // memory is spent: to a file (or, when none can be had, memory past the budget)
		sp = newSpool(streamMemLimit, held.answerSpill())
		defer sp.Discard()
		taken, err := sp.offer(payload)
		if !taken && err == nil {
			// the disk part is spent too: the client is written to before
			// the worker is given back, as by a proxy that does not buffer,
			// within the request's timeout (write_idle alone lets a client
			// that takes 64 KiB a minute hold the worker for 16)
			if s.timeout > 0 {
				rc := http.NewResponseController(w)
				_ = rc.SetWriteDeadline(time.Now().Add(s.timeout))
				defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
			}
			w.WriteHeader(status)
			_, _ = w.Write(payload)
			return p.finish(s, bodySent)
		}
		if err != nil {
			err = spoolFailed(err) // the answer is cut off
		}
		sp.CloseWithError(err)
	}
	if err := p.finish(s, bodySent); err != nil {
		if mark != nil {
			mark.restore(hdr)
		}
		return err
	}
	w.WriteHeader(status)
	switch {
	case sp != nil:
		p.relay(w, sp, nil, -1) // (its length is payload's, checked above)
	case send:
		_, _ = w.Write(body)
	}
	return nil
}

// smallLengths are the Content-Length values of small bodies, made once.
var smallLengths = func() [][]string {
	v := make([][]string, bufferedWrite+1)
	for i := range v {
		v[i] = []string{strconv.Itoa(i)}
	}
	return v
}()

// contentLength is a Content-Length header value for n bytes.
func contentLength(n int) []string {
	if n < len(smallLengths) {
		return smallLengths[n][:1:1] // full slice: an append copies
	}
	return []string{strconv.Itoa(n)}
}

// declaredLength is the body length the app's Content-Length promises
// the client, or -1 when there is none to keep: no Content-Length, or a
// HEAD request, a 204 or a 304, whose bodies are not sent.
func declaredLength(r *http.Request, status int, hdr http.Header) int64 {
	v := hdr["Content-Length"]
	if len(v) == 0 || r.Method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified {
		return -1
	}
	n, err := strconv.ParseInt(textproto.TrimString(v[0]), 10, 64)
	if err != nil { // (parseResponseHead refuses what is not 1 to 18 digits)
		return -1
	}
	return n
}

// lengthMismatch logs (as the app's failures are: at most ten a second)
// and returns the error of a body whose length is not the one its
// Content-Length declared.
func (p *Pool) lengthMismatch(declared, got int64, atLeast string) error {
	err := fmt.Errorf("the app's response body has%s %d bytes, but its Content-Length says %d: the response is not sent as it is (a file that changed while it was read? a Content-Length set by hand?)", atLeast, got, declared)
	p.logAppFailure("the app's response does not match its Content-Length", []byte(err.Error()))
	return err
}

// stream relays a multi-frame response: a pump goroutine takes frames from
// the worker as fast as it sends them into a spool (memory, then disk), and
// this goroutine writes the spool to the client, flushing whenever it has
// caught up with the worker, and at once with a head that came alone (an
// event stream's; a WSGI app's empty first write). asgi, set for an ASGI stream,
// has the app told when the client leaves (and its task cancelled past
// closeGrace), and the stream's place given back when the worker has sent
// it all.
//
// What a response holds while it waits for its client counts in the held
// budget, shared with request bodies: memory first, then the spool's file.
// Past both, the pump waits for its own client (see spool), holding the
// worker, with the worker's deadline lifted meanwhile (a pump that waited
// under its request's timeout had its worker killed as hung), for the
// request's timeout in all: then the answer is cut off (pauseDeadline).
// Past the answer's own bound on disk (a large download), it waits for
// its client as long as the client reads, but while other requests wait
// for a worker those waits count too.
func (p *Pool) stream(w http.ResponseWriter, s *channel, sid uint32, status int, first []byte, bodySent chan error, asgi *asgiStream, declared int64) error {
	sp := newSpool(streamMemLimit, held.answerSpill())
	// however this goroutine ends, the pump must not wait on it for room
	// in the spool: it would hold the worker
	defer sp.Discard()
	sp.pause = func(counted bool) func() error {
		// a wait for the answer's own bound counts too while others wait
		// for a worker: a slow download holds its worker only while it
		// keeps no one waiting
		return s.pauseDeadline(counted || p.requestsWaiting(s))
	}
	go func() {
		if asgi != nil {
			defer asgi.release() // (after the channel went back, or its worker was ended)
		}
		err := panics.Call(p.logger, "relaying a response from a worker", func() error { return p.pump(s, sid, sp, first, asgi) })
		if _, ok := err.(*panics.Error); ok { // the channel's state is unknown: treated as broken
			sp.CloseWithError(p.broken(s, err))
			return
		}
		if brokeChannel(err) {
			sp.CloseWithError(err)
			return
		}
		if rerr := p.finish(s, bodySent); rerr != nil && err == nil {
			err = rerr
		}
		sp.CloseWithError(err)
	}()
	w.WriteHeader(status)
	var gone func()
	if asgi != nil {
		gone = asgi.left.tell
	}
	if len(first) == 0 {
		// the head came on its own: the client gets it now, not with the
		// first piece of the body (an EventSource opens; a WSGI app's
		// write(b'') sends its headers, as PEP 3333 has it)
		_ = http.NewResponseController(w).Flush()
	}
	p.relay(w, sp, gone, declared)
	return nil
}

// relay writes what sp holds to the client, flushing whenever it has
// caught up with the producer, until the end. A response that cannot be
// sent whole is cut off (http.ErrAbortHandler), never ended as complete:
// so is one whose body does not match the length the app declared
// (declared ≥ 0; Go's HTTP/1.1 server closes such a connection, but its
// HTTP/2 server sends a longer body as it is, and ends a shorter one as
// complete). gone, when set, is called once the client cannot be written
// to.
func (p *Pool) relay(w http.ResponseWriter, sp *spool, gone func(), declared int64) {
	rc := http.NewResponseController(w)
	var sent int64
	for {
		chunk, more, err := sp.Next()
		if err == io.EOF {
			sp.Close()
			if declared >= 0 && sent != declared {
				_ = p.lengthMismatch(declared, sent, "")
				panic(http.ErrAbortHandler)
			}
			return
		}
		if declared >= 0 && err == nil && sent+int64(len(chunk)) > declared {
			sp.Discard() // the pump still drains the worker
			if gone != nil {
				gone()
			}
			_ = p.lengthMismatch(declared, sent+int64(len(chunk)), " at least")
			panic(http.ErrAbortHandler)
		}
		sent += int64(len(chunk))
		if err != nil {
			sp.Discard()
			if FailureOf(err) == 0 && !errors.Is(err, errAppCancelled) { // (else logged where it happened)
				p.logger.Error("response interrupted", zap.Error(err))
			}
			panic(http.ErrAbortHandler) // the client must see a truncated response, not a complete one
		}
		// Caddy's write_idle timeout gives up a client that accepts no
		// piece of it for that long (a minute by default)
		if _, err := w.Write(chunk); err != nil {
			sp.Discard() // the client is gone or given up; the pump still drains the worker
			if gone != nil {
				gone()
			}
			if errors.Is(err, http.ErrBodyNotAllowed) {
				return // a 204 or 304: its body is not sent, and not missed
			}
			// what the client got is not the whole response: HTTP/3 would
			// end the stream as if it were
			panic(http.ErrAbortHandler)
		}
		if !more {
			_ = rc.Flush()
		}
	}
}

// errAppCancelled ends an ASGI stream whose client left and whose app
// had its task cancelled for not ending it (the worker logged where it
// waited).
var errAppCancelled = errors.New("the client left, and the app's task was cancelled")

// pump copies response body frames from the worker into sp until the end.
// A spool that fails (its disk is full, no file can be opened) drops the
// rest, which is still read from the worker, and the response ends as cut
// off, never as complete; an ASGI app (asgi) is told, as when its client
// leaves, since an event stream may have no end. For an ASGI stream, an
// app that has not ended its response closeGrace after its client left
// has its task cancelled, and one that has not ended it timeoutGrace after
// that has a blocked event loop (its worker is terminated).
func (p *Pool) pump(s *channel, sid uint32, sp *spool, first []byte, asgi *asgiStream) error {
	if asgi != nil {
		defer asgi.left.over() // before the channel may serve another request
	}
	var spoolErr error
	keep := func(data []byte) {
		if _, err := sp.Write(data); err != nil && spoolErr == nil {
			sp.Discard()
			spoolErr = err
			if !errors.Is(err, errSlowClient) {
				spoolErr = spoolFailed(err)
			}
			if asgi != nil {
				asgi.left.tell()
			}
		}
	}
	keep(first) // (before the next frame is read: first is in the channel's buffer)
	cancelled := false
	for {
		f, err := s.nextBody()
		switch {
		case err != nil:
			if asgi != nil {
				if err = s.cancelPastGrace(err, sid, &cancelled); err == nil {
					// closeGrace since the client left, and the app goes on
					p.logger.Warn("the app did not end a response whose client left; cancelling its task",
						zap.Int("pid", s.worker.proc.Pid()), zap.Duration("after", closeGrace))
					continue
				}
			}
			return p.broken(s, err)
		case f.aborted && cancelled:
			return errAppCancelled // (the runtime's abort for the cancel, already logged)
		case f.aborted:
			return p.appAborted(f.data, "in the middle of its response")
		}
		keep(f.data)
		if f.last {
			return spoolErr
		}
	}
}

// spoolFailed is the error of a response its spool could not keep: the
// response is cut off, never ended as complete.
func spoolFailed(err error) error {
	return fmt.Errorf("buffering the response (in the temporary directory, $TMPDIR): %w", err)
}

// broken retires the channel's worker after a channel failure and returns the
// error for the client: 504 when the request ran past its timeout (the
// worker's stack is dumped to the log and the worker terminated), 502
// otherwise (the worker is killed).
func (p *Pool) broken(s *channel, err error) error {
	w := s.worker
	if w.stopped.Load() && errors.Is(err, net.ErrClosed) {
		// Caddy closed the channel: the worker was stopped with the
		// request in flight (stop_timeout), and ends on its own
		p.mu.Lock()
		path := s.path
		p.mu.Unlock()
		p.logger.Info("request cut off: its worker was stopped", zap.Int("pid", w.proc.Pid()), zap.String("path", path))
		p.discard(s, "stop", false)
		return Failed(WorkerBroken, fmt.Errorf("app %s: the worker serving %s %w", p.opts.Name, path, errWorkerStopped))
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		p.mu.Lock()
		path, age := s.path, time.Since(s.since)
		p.mu.Unlock()
		p.logger.Error("request timed out; dumping the worker's Python stack and terminating it",
			zap.Int("pid", w.proc.Pid()), zap.String("path", path), zap.Duration("running_for", age))
		p.discard(s, "timeout", false)
		panics.Go(p.logger, "terminating a hung worker", func() { terminateHung(w) })
		return Failed(TimedOut, fmt.Errorf("app %s: request to %s ran longer than its timeout; the worker was terminated", p.opts.Name, path))
	}
	p.logger.Error("worker channel broken; killing the worker", zap.Int("pid", w.proc.Pid()), zap.Error(err))
	p.discard(s, "crash", workerGone(err))
	_ = w.proc.Signal(syscall.SIGKILL)
	return Failed(WorkerBroken, fmt.Errorf("app %s: worker channel broken: %w", p.opts.Name, err))
}

// errWorkerStopped is a request cut off by its worker's planned stop.
var errWorkerStopped = errors.New("was stopped (stop_timeout) before the request ended")

// timeoutGrace is how long an ASGI worker has to end a request that ran
// past its timeout (its task cancelled) before its event loop is taken for
// blocked and the worker is terminated.
const timeoutGrace = 5 * time.Second

// cancelTimedOut ends an ASGI request that ran past its timeout before its
// response head. The worker serves many requests at once on one event
// loop, so it is not ended for one slow request: it is told to cancel that
// request's task (the app gets CancelledError where it awaits; its stack
// is logged) and goes on serving the others. What it still sends for the
// request is dropped. A worker that does not end the stream within
// timeoutGrace has a blocked event loop (a time.sleep, a CPU-bound loop):
// it is terminated as a hung one, its stacks dumped.
func (p *Pool) cancelTimedOut(s *channel, sid uint32, bodySent chan error) error {
	p.mu.Lock()
	path, age := s.path, time.Since(s.since)
	p.mu.Unlock()
	if err := p.giveUpStream(s, sid, bodySent, false); err != nil {
		return err
	}
	p.logger.Error("request timed out; the app's task was cancelled (the worker logs where it waited)",
		zap.Int("pid", s.worker.proc.Pid()), zap.String("path", path), zap.Duration("running_for", age))
	return Failed(TimedOut, fmt.Errorf("app %s: request to %s ran longer than its timeout; it was cancelled", p.opts.Name, path))
}

// giveUpStream has an ASGI worker cancel the task of stream sid (refused:
// because Caddy refused its stream), drops what it still sends for it,
// and gives the channel back once the stream ended; a worker that does
// not end it within timeoutGrace is terminated (broken), and so is one
// whose channel fails.
func (p *Pool) giveUpStream(s *channel, sid uint32, bodySent chan error, refused bool) error {
	if bodySent != nil {
		// a request body still being written to the worker stopped at the
		// same deadline, maybe in the middle of a frame: the cancel must
		// not follow a torn frame
		err := <-bodySent
		bodySent = nil
		if err != nil {
			return p.broken(s, err)
		}
	}
	s.setDeadline(timeoutGrace)
	cancel := s.giveUp
	if refused {
		cancel = s.refuse
	}
	if err := cancel(sid); err != nil {
		return p.broken(s, err)
	}
	for {
		h, _, err := s.next()
		switch {
		case err != nil:
			if refused && errors.Is(err, os.ErrDeadlineExceeded) {
				// (broken then says "timed out": the request did not, its
				// worker's event loop is blocked)
				p.logger.Error("the app did not end a stream Caddy refused once told to: its worker's event loop is blocked (a time.sleep, a CPU-bound loop); the client got 503",
					zap.Int("pid", s.worker.proc.Pid()), zap.Duration("waited", timeoutGrace))
			}
			return p.broken(s, err)
		case h.Type == protocol.Abort || h.Type == protocol.ResponseBody && h.End():
			return p.finish(s, bodySent)
		case h.Type == protocol.WSAccept || h.Type == protocol.WSMessage || h.Type == protocol.WSClose:
			// a WebSocket its app accepted as its opening timed out: what
			// it sent crossed the cancel, and is dropped with the rest
		case h.Type != protocol.ResponseHead && h.Type != protocol.ResponseBody:
			return p.broken(s, fmt.Errorf("unexpected %s frame after a timed-out request's cancel", h.Type))
		}
	}
}

// workerGone reports whether err means the worker's end of the channel is
// closed: it exited (or closed it) before it finished the current
// response, so it never read the requests pipelined behind it.
func workerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// hungGrace is how long a hung worker gets between SIGTERM and SIGKILL.
const hungGrace = 2 * time.Second

// terminateHung dumps a hung worker's Python stacks (faulthandler, all
// threads, into the log), then sends SIGTERM and, after hungGrace, SIGKILL.
func terminateHung(w *worker) {
	_ = w.proc.SignalItself(syscall.SIGUSR1) // (through its pidfd when forked: its number may be another's by now)
	_ = w.proc.Signal(syscall.SIGTERM)
	select {
	case <-w.proc.Done():
	case <-time.After(hungGrace):
		_ = w.proc.Signal(syscall.SIGKILL)
	}
}

// appendBodyFrames appends body as request-body frames, the last flagged end.
func appendBodyFrames(dst []byte, sid uint32, body []byte) []byte {
	for {
		n := min(len(body), protocol.MaxPayload)
		flags := uint8(0)
		if n == len(body) {
			flags = protocol.FlagEnd
		}
		dst = protocol.AppendFrame(dst, protocol.RequestBody, flags, sid, body[:n])
		body = body[n:]
		if flags != 0 {
			return dst
		}
	}
}

// writeBodyFrames streams a request body too large to go with its head
// (Body.inline) to the worker, while the response is read.
func writeBodyFrames(s *channel, sid uint32, body io.Reader) error {
	buf := make([]byte, protocol.HeaderSize+256<<10)
	for {
		n, err := io.ReadFull(body, buf[protocol.HeaderSize:])
		last := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !last {
			return fmt.Errorf("reading buffered request body: %w", err)
		}
		flags := uint8(0)
		if last {
			flags = protocol.FlagEnd
		}
		protocol.PutHeader(buf, protocol.Header{Length: uint32(n), Type: protocol.RequestBody, Flags: flags, Stream: sid})
		if err := s.write(buf[:protocol.HeaderSize+n]); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}

// responseHead validates a response-head frame and copies its status and
// headers into hdr.
func (p *Pool) responseHead(h protocol.Header, payload []byte, sid uint32, hdr http.Header) (int, error) {
	if h.Stream != sid {
		return 0, fmt.Errorf("response for stream %d during stream %d", h.Stream, sid)
	}
	if h.Type != protocol.ResponseHead {
		return 0, fmt.Errorf("expected a response head, got a %s frame", h.Type)
	}
	return parseResponseHead(payload, hdr)
}

// badHeadError is a response head the worker framed correctly but whose
// content may not be sent: the app's fault, not the channel's.
type badHeadError struct{ reason string }

func (e *badHeadError) Error() string { return e.reason }

// badHead answers a response head that could not be used. A head the app
// filled with what no HTTP response may carry (a control character in a
// header, say) costs that request a plain 500 and nothing more: the rest
// of the response is read and dropped and the worker keeps serving, so a
// client who gets an app to reflect its input into a header cannot kill
// workers. Anything else means the channel is broken.
func (p *Pool) badHead(s *channel, sid uint32, bodySent chan error, err error) error {
	var bad *badHeadError
	if !errors.As(err, &bad) {
		return p.broken(s, err)
	}
	p.mu.Lock()
	path := s.path
	p.mu.Unlock()
	p.logger.Error("refused the app's response: it cannot be sent as it is; the client gets 500",
		zap.Int("pid", s.worker.proc.Pid()), zap.String("path", path), zap.String("reason", bad.reason))
	cancelled := false
	if p.opts.ASGI() {
		// an app streaming its answer stops (http.disconnect), as when its
		// client leaves: one that does not hear it (it awaits an event, not
		// receive()) has its task cancelled after closeGrace, rather than
		// hold the channel until the request's timeout takes its worker,
		// with every request it serves, for hung
		s.cancel(sid)
		if s.deadline.IsZero() || time.Until(s.deadline) > closeGrace { // (a sooner timeout stays)
			s.setDeadline(closeGrace)
		}
	}
	for {
		f, err := s.nextBody()
		if err != nil {
			if p.opts.ASGI() {
				if err = s.cancelPastGrace(err, sid, &cancelled); err == nil {
					continue
				}
			}
			return p.broken(s, err)
		}
		if f.last {
			break
		}
	}
	if err := p.finish(s, bodySent); err != nil {
		return err
	}
	return Failed(BadResponse, fmt.Errorf("app %s: %w", p.opts.Name, err))
}

// A response head from an app may have at most maxResponseHeaders headers
// and maxResponseHeadBytes bytes (its frame alone could hold a megabyte:
// some 350,000 empty headers, for Caddy to hold and send): far above what
// an app sends (nginx takes 4 or 8 KiB of headers from an upstream by
// default), far below what would let one app's responses crowd Caddy's
// memory.
const (
	maxResponseHeaders   = 1000
	maxResponseHeadBytes = 128 << 10
)

// parseResponseHead decodes "<status line>\0name\0value\0…" into hdr. It
// validates everything before touching hdr: header names are tokens, and
// neither values nor the status line hold a control character (NUL, CR,
// LF …; a tab is allowed in values) — what Gunicorn and uWSGI refuse too.
// Errors name the header and the reason, never the value.
func parseResponseHead(p []byte, hdr http.Header) (int, error) {
	if len(p) > maxResponseHeadBytes {
		return 0, &badHeadError{fmt.Sprintf("the app's response head is %d bytes, more than the %d a response head may have", len(p), maxResponseHeadBytes)}
	}
	var fields [][]byte
	var stack [32][]byte
	fields = stack[:0]
	protocol.Fields(p, func(f []byte) bool {
		fields = append(fields, f)
		return len(fields) <= 2*maxResponseHeaders+1
	})
	if len(fields) > 2*maxResponseHeaders+1 {
		return 0, &badHeadError{fmt.Sprintf("the app's response has more than %d headers", maxResponseHeaders)}
	}
	if len(fields) == 0 || len(fields)%2 != 1 {
		return 0, &badHeadError{"malformed response head from the app (an odd number of fields)"}
	}
	if i := controlByte(fields[0], false); i >= 0 {
		return 0, &badHeadError{fmt.Sprintf("the app's status line holds a control character (%s) at byte %d", describeByte(fields[0][i]), i)}
	}
	status, err := parseStatus(fields[0])
	if err != nil {
		return 0, &badHeadError{err.Error()}
	}
	for i := 1; i < len(fields); i += 2 {
		if !validHeaderName(fields[i]) {
			return 0, &badHeadError{fmt.Sprintf("the app sent an invalid response header name %s (a header name is a token: letters, digits and !#$%%&'*+-.^_`|~)", quoteName(fields[i]))}
		}
		if j := controlByte(fields[i+1], true); j >= 0 {
			return 0, &badHeadError{fmt.Sprintf("the app's response header %s holds a control character (%s) at byte %d of its value: header injection refused", fields[i], describeByte(fields[i+1][j]), j)}
		}
	}
	var contentLength []byte
	for i := 1; i < len(fields); i += 2 {
		if len(fields[i]) == len("Content-Length") && strings.EqualFold(string(fields[i]), "Content-Length") {
			if contentLength != nil && !bytes.Equal(bytes.TrimSpace(contentLength), bytes.TrimSpace(fields[i+1])) {
				return 0, &badHeadError{"the app sent two different Content-Length headers: a client or proxy could read the body either way"}
			}
			contentLength = fields[i+1]
		}
	}
	// Go's server sends the app's Content-Length as it is once it parses as
	// a number ("+5" does): a proxy in front could then frame the body its
	// own way. RFC 9110 allows digits only.
	if contentLength != nil && !decimal(textproto.TrimBytes(contentLength)) {
		return 0, &badHeadError{"the app sent a Content-Length that is not a length in digits: a client or proxy could read the body another way"}
	}
	clSeen := false
	// one string holds every value, and one array the values of names hdr
	// does not have yet, each such slice capped at its one value (adding
	// to it copies): two allocations for the head, not two per header
	var text string
	if len(fields) > 1 {
		text = string(p)
	}
	values := make([]string, 0, len(fields)/2)
	at := len(fields[0]) + 1 // where fields[i] starts in p: each field ends with a NUL
	for i := 1; i < len(fields); i += 2 {
		valueAt := at + len(fields[i]) + 1
		at = valueAt + len(fields[i+1]) + 1
		name, known := responseHeaderNames[string(fields[i])]
		if !known {
			name = textproto.CanonicalMIMEHeaderKey(string(fields[i]))
		}
		if hopByHop[name] {
			continue
		}
		if name == "Content-Length" { // one line, however often the app sent the same length
			if clSeen {
				continue
			}
			clSeen = true
		}
		value := text[valueAt : valueAt+len(fields[i+1])]
		if old := hdr[name]; len(old) > 0 {
			hdr[name] = append(old, value)
			continue
		}
		values = append(values, value)
		hdr[name] = values[len(values)-1 : len(values) : len(values)]
	}
	if hdr["Content-Type"] == nil {
		hdr["Content-Type"] = nil // no sniffing: the app said what it said
	}
	return status, nil
}

// controlByte returns the index of the first control character in b
// (bytes below 0x20 and DEL; a tab is allowed when tab is true), or -1.
func controlByte(b []byte, tab bool) int {
	for i, c := range b {
		if c < 0x20 && !(tab && c == '\t') || c == 0x7f {
			return i
		}
	}
	return -1
}

// describeByte names a control character for a log line.
func describeByte(c byte) string {
	switch c {
	case 0:
		return "NUL"
	case '\r':
		return "CR"
	case '\n':
		return "LF"
	case '\t':
		return "tab"
	}
	return fmt.Sprintf("0x%02x", c)
}

// quoteName quotes a header name the app sent, at most 64 bytes of it.
func quoteName(b []byte) string {
	if len(b) > 64 {
		return strconv.Quote(string(b[:64])) + "…"
	}
	return strconv.Quote(string(b))
}

func parseStatus(line []byte) (int, error) {
	if len(line) < 3 || (len(line) > 3 && line[3] != ' ') {
		return 0, fmt.Errorf("the app sent an invalid status line %s (want \"200 OK\")", quoteName(line))
	}
	code := 0
	for _, c := range line[:3] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("the app sent an invalid status line %s (want \"200 OK\")", quoteName(line))
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 {
		return 0, fmt.Errorf("the app sent status %d; WSGI responses must be 200 or above", code)
	}
	return code, nil
}

func validHeaderName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == ':' || c == '(' || c == ')' || c == '<' || c == '>' ||
			c == '@' || c == ',' || c == ';' || c == '\\' || c == '"' || c == '/' || c == '[' ||
			c == ']' || c == '?' || c == '=' || c == '{' || c == '}' {
			return false
		}
	}
	return true
}

// hopByHop headers belong to one connection; apps must not set them
// (PEP 3333) and Caddy manages its own.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Transfer-Encoding": true, "Te": true, "Trailer": true, "Upgrade": true,
}

// responseHeaderNames maps the header names apps commonly send, in the
// spellings they use, to canonical form without allocating.
var responseHeaderNames = func() map[string]string {
	m := map[string]string{}
	for _, h := range []string{
		"Content-Type", "Content-Length", "Content-Encoding", "Content-Disposition",
		"Content-Language", "Cache-Control", "Expires", "Last-Modified", "Etag", "Vary",
		"Location", "Set-Cookie", "X-Frame-Options", "X-Content-Type-Options",
		"Referrer-Policy", "Cross-Origin-Opener-Policy", "Strict-Transport-Security",
		"Content-Security-Policy", "Access-Control-Allow-Origin", "Allow", "Pragma",
		"Www-Authenticate", "Retry-After", "Server", "Date", "Connection",
		"Transfer-Encoding", "Keep-Alive",
	} {
		m[h] = h
		m[strings.ToLower(h)] = h
	}
	m["ETag"] = "Etag"
	m["WWW-Authenticate"] = "Www-Authenticate"
	return m
}()

// decimal says b is a non-negative decimal number of at most 18 digits
// (an int64 whatever they are).
func decimal(b []byte) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
