package tests

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// h2WebSocket is a test client for WebSockets over HTTP/2 (RFC 8441),
// framing by hand (RFC 6455) so it shares nothing with the server's codec.
type h2WebSocket struct {
	resp *http.Response
	out  *io.PipeWriter
}

// dialH2WebSocket opens a WebSocket with an extended CONNECT over
// cleartext HTTP/2 (prior knowledge).
func dialH2WebSocket(t *testing.T, rawURL string, subprotocol string) (*h2WebSocket, *http.Response) {
	t.Helper()
	transport := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(transport.CloseIdleConnections)
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	in, out := io.Pipe()
	req := &http.Request{Method: http.MethodConnect, URL: u, Host: u.Host, Header: http.Header{}, Body: in}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	if subprotocol != "" {
		req.Header.Set("Sec-WebSocket-Protocol", subprotocol)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	resp, err := transport.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("extended CONNECT to %s: %v", rawURL, err)
	}
	t.Cleanup(func() { resp.Body.Close(); out.Close() })
	return &h2WebSocket{resp: resp, out: out}, resp
}

// send writes one masked frame.
func (c *h2WebSocket) send(t *testing.T, fin bool, op byte, payload []byte) {
	t.Helper()
	first := op
	if fin {
		first |= 0x80
	}
	frame := []byte{first}
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n <= 0xFFFF:
		frame = binary.BigEndian.AppendUint16(append(frame, 0x80|126), uint16(n))
	default:
		frame = binary.BigEndian.AppendUint64(append(frame, 0x80|127), uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	if _, err := c.out.Write(frame); err != nil {
		t.Fatalf("sending a frame: %v", err)
	}
}

// receive reads one server frame (unmasked, as RFC 6455 requires).
func (c *h2WebSocket) receive(t *testing.T) (op byte, payload []byte) {
	t.Helper()
	timer := time.AfterFunc(20*time.Second, func() { c.resp.Body.Close() })
	defer timer.Stop()
	var head [2]byte
	if _, err := io.ReadFull(c.resp.Body, head[:]); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	if head[1]&0x80 != 0 {
		t.Fatalf("the server masked its frame")
	}
	size := uint64(head[1] & 0x7F)
	switch size {
	case 126:
		var ext [2]byte
		io.ReadFull(c.resp.Body, ext[:])
		size = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		io.ReadFull(c.resp.Body, ext[:])
		size = binary.BigEndian.Uint64(ext[:])
	}
	payload = make([]byte, size)
	if _, err := io.ReadFull(c.resp.Body, payload); err != nil {
		t.Fatalf("reading a payload: %v", err)
	}
	return head[0] & 0x0F, payload
}

func closeFrame(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// TestWebSocketOverHTTP2 runs the WebSocket app over HTTP/2 extended
// CONNECT, which Caddy accepts when it runs with GODEBUG=http2xconnect=1.
func TestWebSocketOverHTTP2(t *testing.T) {
	t.Setenv("GODEBUG", "http2xconnect=1") // inherited by the caddy process
	log := filepath.Join(t.TempDir(), "ws.log")
	config, base := asgiSite(t, "ws_app:app", "workers 1\n\t\tenv WS_LOG "+log)
	c := startCaddy(t, `{
	admin {ADMIN}
	servers {
		protocols h1 h2c
	}
}`+config)

	ws, resp := dialH2WebSocket(t, base+"/echo", "echo.v1")
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("Sec-WebSocket-Protocol") != "echo.v1" {
		t.Fatalf("the opening: %s %s, subprotocol %q", resp.Proto, resp.Status, resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	ws.send(t, true, 0x1, []byte("héllo"))
	if op, got := ws.receive(t); op != 0x1 || string(got) != "echo:héllo" {
		t.Errorf("text echo: op %d %q", op, got)
	}
	// a fragmented binary message, with a ping between its fragments
	ws.send(t, false, 0x2, []byte{1, 2})
	ws.send(t, true, 0x9, []byte("are you there"))
	if op, got := ws.receive(t); op != 0xA || string(got) != "are you there" {
		t.Errorf("pong: op %d %q", op, got)
	}
	ws.send(t, true, 0x0, []byte{3})
	if op, got := ws.receive(t); op != 0x2 || string(got) != "\x03\x02\x01" {
		t.Errorf("binary echo: op %d %q", op, got)
	}
	// a message of 100 KB (64-bit length)
	big := strings.Repeat("z", 100_000)
	ws.send(t, true, 0x1, []byte(big))
	if op, got := ws.receive(t); op != 0x1 || string(got) != "echo:"+big {
		t.Errorf("large echo: op %d, %d bytes", op, len(got))
	}
	// the app closes with a code
	ws.send(t, true, 0x1, []byte("close-me"))
	if op, got := ws.receive(t); op != 0x8 || binary.BigEndian.Uint16(got) != 4001 {
		t.Errorf("the app's close: op %d %q", op, got)
	}

	// the client closes with a code; the server answers the close
	ws2, _ := dialH2WebSocket(t, base+"/echo", "")
	ws2.send(t, true, 0x1, []byte("x"))
	ws2.receive(t)
	ws2.send(t, true, 0x8, closeFrame(4002, "bye"))
	if op, got := ws2.receive(t); op != 0x8 || binary.BigEndian.Uint16(got) != 4002 {
		t.Errorf("the close reply: op %d %q", op, got)
	}
	// one goes away without a close frame
	ws3, _ := dialH2WebSocket(t, base+"/echo", "")
	ws3.send(t, true, 0x1, []byte("y"))
	ws3.receive(t)
	ws3.out.CloseWithError(io.ErrUnexpectedEOF)
	ws3.resp.Body.Close()
	waitFor(t, 10*time.Second, "both disconnects seen by the app", func() bool {
		data, _ := os.ReadFile(log)
		return strings.Contains(string(data), "disconnect 4002") && strings.Contains(string(data), "disconnect 1006")
	})
	// an unmasked frame is a protocol error: closed with 1002
	ws4, _ := dialH2WebSocket(t, base+"/echo", "")
	ws4.out.Write([]byte{0x81, 0x01, 'u'})
	if op, got := ws4.receive(t); op != 0x8 || binary.BigEndian.Uint16(got) != 1002 {
		t.Errorf("an unmasked frame: op %d %q", op, got)
	}
	// invalid UTF-8 in a text message: 1007
	ws5, _ := dialH2WebSocket(t, base+"/echo", "")
	ws5.send(t, true, 0x1, []byte{0xff, 0xfe})
	if op, got := ws5.receive(t); op != 0x8 || binary.BigEndian.Uint16(got) != 1007 {
		t.Errorf("invalid UTF-8: op %d %q", op, got)
	}
	// a refusal before the handshake is an HTTP answer
	_, refused := dialH2WebSocket(t, base+"/refuse", "")
	if refused.StatusCode != 403 {
		t.Errorf("a refused WebSocket: %s", refused.Status)
	}
	waitFor(t, 10*time.Second, "no busy channel", func() bool { return c.mustApps()[0].Workers[0].State == "idle" })
}

// TestWebSocketOverHTTP2OutlivesReadIdle: a WebSocket over HTTP/2 whose
// client only listens lives past Caddy's read_body_idle, as one over HTTP/1.1
// does (its connection taken out of the server): the stream's body read
// failed once read_body_idle passed without a frame, and every listening
// browser tab lost its WebSocket after a minute.
func TestWebSocketOverHTTP2OutlivesReadIdle(t *testing.T) {
	t.Setenv("GODEBUG", "http2xconnect=1") // inherited by the caddy process
	config, base := asgiSite(t, "ws_app:app", "workers 1")
	startCaddy(t, `{
	admin {ADMIN}
	servers {
		protocols h1 h2c
		timeouts {
			read_body_idle 1s
		}
	}
}`+config)
	ws, resp := dialH2WebSocket(t, base+"/echo", "")
	if resp.StatusCode != 200 {
		t.Fatalf("the opening: %s", resp.Status)
	}
	ws.send(t, true, 0x1, []byte("first"))
	if op, got := ws.receive(t); op != 0x1 || string(got) != "echo:first" {
		t.Fatalf("echo: op %d %q", op, got)
	}
	time.Sleep(3 * time.Second) // the client listens, past read_body_idle (what is tested, not a wait for readiness)
	ws.send(t, true, 0x1, []byte("after a silence"))
	if op, got := ws.receive(t); op != 0x1 || string(got) != "echo:after a silence" {
		t.Errorf("after 3 s of silence (read_body_idle 1s): op %d %q", op, got)
	}
}

// TestWebSocketsThatFailToOpenKeepTheirPlace: a WebSocket whose opening
// fails after its app accepted it (here its client reset the HTTP/2 stream
// while the app decided) holds its channel until the app ends, which an
// app that does not end when told takes closeGrace (10 s) to; it keeps its
// place among the app's WebSockets as long. The place was given back at
// once: a client repeating such openings took every channel past
// max_websockets (half of them by default), and every request then waited
// for its queue_timeout and got 503.
func TestWebSocketsThatFailToOpenKeepTheirPlace(t *testing.T) {
	t.Setenv("GODEBUG", "http2xconnect=1") // inherited by the caddy process
	marker := filepath.Join(t.TempDir(), "marker")
	config, base := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 4\n\t\tqueue_timeout 3s\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, "{\n\tadmin {ADMIN}\n\tservers {\n\t\tprotocols h1 h2c\n\t}\n}\n"+config)
	name := c.mustApps()[0].Name
	refusedSeries := fmt.Sprintf("hearth_refused_requests_total{app=%q,reason=\"websockets\"}", name)
	transport := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(transport.CloseIdleConnections)
	u, err := url.Parse(base + "/ws-slow?secs=0.5")
	if err != nil {
		t.Fatal(err)
	}
	busy := func() int {
		apps := c.mustApps()
		if len(apps[0].Workers) != 1 {
			return -1
		}
		return apps[0].Workers[0].BusyThreads
	}
	leftLines := func() int {
		data, _ := os.ReadFile(marker + ".ws-slow-left")
		return strings.Count(string(data), "\n")
	}
	held, refused := 0, 0
	for i := 1; i <= 4; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		in, out := io.Pipe()
		t.Cleanup(func() { cancel(); out.Close() })
		req := &http.Request{Method: http.MethodConnect, URL: u, Host: u.Host, Header: http.Header{}, Body: in}
		req.Header.Set(":protocol", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		answer := make(chan *http.Response, 1)
		go func() {
			resp, _ := transport.RoundTrip(req.WithContext(ctx))
			answer <- resp
		}()
		// the opening either takes a channel (the app decides for 0.5 s) or
		// is refused at the limit
		var resp *http.Response
		waitFor(t, 20*time.Second, fmt.Sprintf("opening %d taking a channel or being refused", i), func() bool {
			select {
			case resp = <-answer:
				return true
			default:
			}
			return busy() == held+1
		})
		if resp != nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("opening %d: %s before its stream was reset, want 503 or nothing", i, resp.Status)
			}
			refused++
			continue
		}
		cancel() // RST_STREAM before the app accepts: the accept fails
		held++
		waitFor(t, 20*time.Second, fmt.Sprintf("the app told that opening %d's client left", i), func() bool { return leftLines() == held })
	}
	if held != 2 || refused != 2 {
		t.Errorf("of 4 openings that failed after their app accepted them, %d held a channel and %d were refused; want 2 and 2 (half of the 4 channels)", held, refused)
	}
	if apps := c.mustApps(); apps[0].WebSockets != held {
		t.Errorf("/hearth/apps: %d WebSockets open, want the %d whose channels are still held", apps[0].WebSockets, held)
	}
	if got := scrape(t, c)[refusedSeries]; got != float64(refused) {
		t.Errorf("%s = %v, want %d", refusedSeries, got, refused)
	}
	// requests still find a channel: the app's own answer, not the queue's 503
	if resp, body := get(t, base+"/"); resp.StatusCode != 200 || !strings.HasPrefix(body, "hello") {
		t.Fatalf("a request beside the failed openings: %d %q", resp.StatusCode, body)
	}
	// the app, deaf to the close, is cancelled at closeGrace: channels and places come back
	waitFor(t, 30*time.Second, "the failed openings' channels and places given back", func() bool {
		apps := c.mustApps()
		return apps[0].WebSockets == 0 && len(apps[0].Workers) == 1 && apps[0].Workers[0].BusyThreads == 0
	})
	if data, _ := os.ReadFile(marker + ".ws-slow"); string(data) != "cancelled" {
		t.Errorf("the app's task after closeGrace: %q, want cancelled", data)
	}
}
