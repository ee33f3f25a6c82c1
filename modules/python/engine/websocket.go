package engine

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/panics"
	"github.com/hearth-dev/hearth/modules/protocol"
)

// openingProblem checks what the WebSocket opening must hold beyond
// guard.IsWebSocket (RFC 6455 §4.2.1, RFC 8441 §5), before the app is asked: a
// malformed opening gets 400 without occupying a worker, and an app never
// accepts a connection that could not be completed. It returns "" for a
// good opening.
func openingProblem(r *http.Request) string {
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		return fmt.Sprintf("unsupported Sec-WebSocket-Version %q: this server speaks version 13", v)
	}
	if isExtendedConnect(r) {
		return "" // HTTP/2 openings carry no key
	}
	// what Go's WebSocket library checks again once the app has accepted:
	// an opening it refuses then would have had the app run its connect
	// code for a connection that never opens
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return fmt.Sprintf("a WebSocket opens by an Upgrade over HTTP/1.1 (or an extended CONNECT over HTTP/2), not over %s", r.Proto)
	}
	// (guard.IsWebSocket has seen Upgrade: websocket, and upgrade somewhere
	// in Connection)
	if !hasToken(r.Header, "Connection", "upgrade") {
		return fmt.Sprintf("the Connection header %q does not list upgrade", strings.Join(r.Header.Values("Connection"), ", "))
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return fmt.Sprintf("the opening carries %d Sec-WebSocket-Key headers: it needs exactly one", len(keys))
	}
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(key) != 16 {
		return "Sec-WebSocket-Key is not 16 bytes in base64"
	}
	return ""
}

// hasToken reports whether the comma-separated values of header name in h
// list token, in any case.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// ServeWebSocket runs an ASGI WebSocket: the app decides (accept or
// close), then messages flow both ways until either side closes. The
// channel to the worker is held for the connection's life.
func (p *Pool) ServeWebSocket(w http.ResponseWriter, r *http.Request, rq *Request) error {
	if problem := openingProblem(r); problem != "" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "bad WebSocket opening: "+problem, http.StatusBadRequest)
		return nil
	}
	from := origin{rq.ClientIP, r.RemoteAddr}
	release, err := p.admit(webSocket, true, from) // a WebSocket holds a channel for its life
	if err != nil {
		return err
	}
	// the place is given back with the channel: by the return below, or by
	// endRefused once an opening that failed after the app accepted it has
	// had its app end (up to closeGrace and timeoutGrace later)
	defer func() {
		if release != nil {
			release()
		}
	}()
	sid := p.nextStream.Add(1)
	opening := *rq // all the request's facts (a field added later included), and no body
	opening.Body = nil
	head, err := appendRequestHead(make([]byte, protocol.HeaderSize, 2048), r, &opening, "hearth.websocket", "1")
	if err != nil {
		return err
	}
	protocol.PutHeader(head, protocol.Header{Length: uint32(len(head) - protocol.HeaderSize), Type: protocol.RequestHead, Flags: protocol.FlagEnd, Stream: sid})
	g, err := p.acquire(r.Context(), from, r.URL.Path, false, nil, false, 0)
	if err != nil {
		return p.unavailable(err)
	}
	s := g.channel // a WebSocket opening is never queued with its frames: the grant carries none
	s.stream = sid
	s.setDeadline(rq.Timeout) // the app accepts or refuses within the request's timeout
	if err := s.write(head); err != nil {
		return p.broken(s, err)
	}
	h, payload, err := s.next()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return p.cancelTimedOut(s, sid, nil) // (a 504; the worker goes on)
		}
		return p.broken(s, err)
	}
	if h.Type == protocol.WSAccept {
		s.setDeadline(0) // the connection lasts as long as both sides want
	}
	switch h.Type {
	case protocol.ResponseHead: // the app closed before accepting: an HTTP answer
		mark := markHeader(w.Header())
		status, err := p.responseHead(h, payload, sid, w.Header())
		if err != nil {
			return p.badHead(s, sid, nil, err)
		}
		h, payload, err = s.next()
		if err != nil || h.Type != protocol.ResponseBody || !h.End() {
			mark.restore(w.Header()) // Caddy answers the error, not the app (its cookies, its Location)
			return p.broken(s, fmt.Errorf("expected the end of a refusal, got %v %v", h.Type, err))
		}
		status = refusalStatus(r, status)
		return p.finishSmall(w, r, status, payload, s, nil, &mark)
	case protocol.WSAccept:
		if sub := string(payload); sub != "" && !offered(r, sub) {
			// the subprotocol goes into a response header: only one the
			// client asked for, which Go's server has checked, may
			p.logger.Error("the app accepted a WebSocket with a subprotocol the client did not offer; refusing the opening",
				zap.String("path", r.URL.Path), zap.String("subprotocol", quoteName(payload)))
			p.endRefused(s, sid, &release) // the client's answer does not wait for the app to stop
			return Failed(BadResponse, fmt.Errorf("app %s accepted a WebSocket with a subprotocol the client did not offer", p.opts.Name))
		}
	default:
		return p.broken(s, fmt.Errorf("unexpected %s frame in a WebSocket handshake", h.Type))
	}
	conn, err := acceptWebSocket(w, r, string(payload))
	if err != nil {
		p.endRefused(s, sid, &release)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clientDone := make(chan struct{})
	left := &clientLeft{s: s, sid: sid}
	panics.Go(p.logger, "relaying a WebSocket to the app", func() {
		defer close(clientDone)
		p.clientToWorker(ctx, conn, s, sid, left)
	})
	p.workerToClient(ctx, conn, s, sid, clientDone, left, rq.WriteIdle)
	return nil
}

// offered reports whether the client offered subprotocol in its
// Sec-WebSocket-Protocol headers.
func offered(r *http.Request, subprotocol string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) == subprotocol {
				return true
			}
		}
	}
	return false
}

// acceptWebSocket completes the opening the app accepted, with the
// subprotocol it chose ("" for none).
func acceptWebSocket(w http.ResponseWriter, r *http.Request, subprotocol string) (wsPeer, error) {
	if isExtendedConnect(r) {
		return acceptStream(w, r, subprotocol)
	}
	var subprotocols []string
	if subprotocol != "" {
		subprotocols = []string{subprotocol}
	}
	// the app decides on origins, as with any ASGI server
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: subprotocols, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(protocol.MaxPayload)
	return upgradedPeer{conn}, nil
}

// clientToWorker forwards the client's messages, then its close (once
// the client closed or went away, the app has closeGrace to end).
func (p *Pool) clientToWorker(ctx context.Context, conn wsPeer, s *channel, sid uint32, left *clientLeft) {
	for {
		isBinary, data, code, err := conn.read(ctx)
		if err != nil {
			if code < 0 {
				code = 1006 // gone without a close frame
			}
			left.tellWith(func() { p.sendClose(s, sid, code, "") })
			return
		}
		flags := uint8(0)
		if isBinary {
			flags = protocol.FlagBinary
		}
		frame := protocol.AppendFrame(make([]byte, 0, protocol.HeaderSize+len(data)), protocol.WSMessage, flags, sid, data)
		if err := s.write(frame); err != nil {
			return
		}
	}
}

// workerToClient forwards the app's messages and close, until the app's
// handler ends (the end of the stream), then gives the channel back. An app
// that has not ended closeGrace after its client closed or left (one that
// neither receives nor sends, waiting for an event) has its task
// cancelled, as an HTTP stream's; one that has not ended timeoutGrace
// after that has a blocked event loop (its worker is terminated). A client
// that takes none of a message for writeIdle (it stopped reading) is given
// up as one that left: otherwise the app's sends to it would wait for
// good (a broadcast loop, with them).
func (p *Pool) workerToClient(ctx context.Context, conn wsPeer, s *channel, sid uint32, clientDone <-chan struct{}, left *clientLeft, writeIdle time.Duration) {
	// the channel is given back only once nothing more is written to it
	release := func() {
		left.over()
		conn.closeNow()
		<-clientDone
		p.release(s)
	}
	cancelled := false
	for {
		h, payload, err := s.next()
		if err != nil {
			if err = s.cancelPastGrace(err, sid, &cancelled); err == nil {
				p.logger.Warn("the app did not end a WebSocket its client closed; cancelling its task",
					zap.Int("pid", s.worker.proc.Pid()), zap.Duration("after", closeGrace))
				continue
			}
			left.over()
			code := 1011 // internal error
			if errors.Is(p.broken(s, err), errWorkerStopped) {
				code = 1001 // going away: the worker was stopped (a restart, stop_timeout); the client may reconnect
			}
			conn.close(code, "")
			return
		}
		switch h.Type {
		case protocol.WSMessage:
			wctx, stop := ctx, context.CancelFunc(func() {})
			if writeIdle > 0 {
				wctx, stop = context.WithTimeout(ctx, writeIdle)
			}
			err := conn.write(wctx, h.Flags&protocol.FlagBinary != 0, payload)
			stop()
			if err != nil {
				// (the connection is closed: the client's side ends, and
				// the app is told it left)
				p.logger.Debug("writing to a WebSocket client", zap.Error(err))
			}
		case protocol.WSClose:
			code, reason := parseClose(payload)
			conn.close(code, reason)
		case protocol.ResponseBody:
			if h.End() {
				release()
				return
			}
		case protocol.Abort:
			p.logAppFailure("app failed during a WebSocket", payload)
			conn.close(1011, "")
			release()
			return
		default:
			left.over()
			p.broken(s, fmt.Errorf("unexpected %s frame on a WebSocket", h.Type))
			conn.close(1011, "")
			return
		}
	}
}

func (p *Pool) sendClose(s *channel, sid uint32, code int, reason string) {
	payload := binary.BigEndian.AppendUint16(nil, uint16(code))
	_ = s.write(protocol.AppendFrame(nil, protocol.WSClose, 0, sid, append(payload, reason...)))
}

// endRefused ends a WebSocket whose opening failed after its app accepted
// it (the client gave up, or asked for a subprotocol the app did not
// accept): the app is told the connection closed (1006), and its place
// among the long-lived exchanges (*release, taken from the caller) is
// given back only when its channel is, after the app has ended. Given back
// at once, a client repeating such openings held channels for up to
// closeGrace each past max_websockets, until requests had none left.
func (p *Pool) endRefused(s *channel, sid uint32, release *func()) {
	p.sendClose(s, sid, 1006, "")
	done := *release
	*release = nil
	panics.Go(p.logger, "ending a WebSocket that did not open", func() {
		defer done()
		p.drainToEnd(s, sid)
	})
}

// drainToEnd reads the worker's frames of sid until its end, after the
// worker was told the WebSocket closed: as in workerToClient, an app that
// has not ended closeGrace later has its task cancelled.
func (p *Pool) drainToEnd(s *channel, sid uint32) {
	s.setDeadline(closeGrace)
	cancelled := false
	for {
		h, _, err := s.next()
		if err != nil {
			if err = s.cancelPastGrace(err, sid, &cancelled); err == nil {
				continue
			}
			p.broken(s, err)
			return
		}
		if h.Type == protocol.ResponseBody && h.End() || h.Type == protocol.Abort {
			p.release(s)
			return
		}
	}
}

func parseClose(payload []byte) (int, string) {
	if len(payload) < 2 {
		return 1000, ""
	}
	return int(binary.BigEndian.Uint16(payload)), string(payload[2:])
}

// refusalStatus is the status of an app's answer to a WebSocket opening
// it did not accept. Over HTTP/2 (an extended CONNECT) a 2xx would tell
// the client the WebSocket is open (RFC 8441 §5): it is sent as 403, the
// status of a refusal without an answer of the app's own.
func refusalStatus(r *http.Request, status int) int {
	if isExtendedConnect(r) && status >= 200 && status < 300 {
		return http.StatusForbidden
	}
	return status
}
