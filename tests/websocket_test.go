package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func wsDial(t *testing.T, url string, subprotocols ...string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: subprotocols})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

func wsRoundTrip(t *testing.T, c *websocket.Conn, typ websocket.MessageType, msg string) (websocket.MessageType, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	rt, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return rt, string(data)
}

func TestWebSocket(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "ws.log")
	config, url := asgiSite(t, "ws_app:app", "workers 1\n\t\tenv WS_LOG "+log)
	c := startCaddy(t, config)
	base := "ws" + strings.TrimPrefix(url, "http")
	ws := wsDial(t, base+"/echo", "echo.v1")
	if ws.Subprotocol() != "echo.v1" {
		t.Errorf("subprotocol %q", ws.Subprotocol())
	}
	if typ, got := wsRoundTrip(t, ws, websocket.MessageText, "héllo"); typ != websocket.MessageText || got != "echo:héllo" {
		t.Errorf("text echo: %v %q", typ, got)
	}
	if typ, got := wsRoundTrip(t, ws, websocket.MessageBinary, "\x01\x02\x03"); typ != websocket.MessageBinary || got != "\x03\x02\x01" {
		t.Errorf("binary echo: %v %q", typ, got)
	}
	// the app closes with a code
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws.Write(ctx, websocket.MessageText, []byte("close-me"))
	_, _, err := ws.Read(ctx)
	if websocket.CloseStatus(err) != 4001 {
		t.Errorf("the app's close: %v", err)
	}
	// a code no close frame may carry is not sent (the close frame goes
	// without one: 1005 to the client), and a reason past a close frame's
	// room is cut to fit, as over HTTP/2; the connection was dropped
	// without a close frame before
	for msg, want := range map[string]websocket.StatusCode{"close-badly": websocket.StatusNoStatusRcvd, "close-long": 4003} {
		wsb := wsDial(t, base+"/echo")
		wsb.Write(ctx, websocket.MessageText, []byte(msg))
		if _, _, err := wsb.Read(ctx); websocket.CloseStatus(err) != want {
			t.Errorf("the app's close (%s): %v, want a close frame with %d", msg, err, want)
		}
	}
	// a text message that is not UTF-8 is a protocol error (1007), as
	// over HTTP/2: the app got it with its bytes replaced
	wsu := wsDial(t, base+"/echo")
	wsu.Write(ctx, websocket.MessageText, []byte{'a', 0xff, 0xfe})
	if _, got, err := wsu.Read(ctx); websocket.CloseStatus(err) != websocket.StatusInvalidFramePayloadData {
		t.Errorf("a text message that is not UTF-8: %q %v, want a close with 1007", got, err)
	}
	// the client closes with a code; then one just goes away
	ws2 := wsDial(t, base+"/echo")
	wsRoundTrip(t, ws2, websocket.MessageText, "x")
	ws2.Close(4002, "bye")
	ws3 := wsDial(t, base+"/echo")
	wsRoundTrip(t, ws3, websocket.MessageText, "y")
	ws3.CloseNow()
	waitFor(t, 10*time.Second, "both disconnects seen by the app", func() bool {
		data, _ := os.ReadFile(log)
		return strings.Contains(string(data), "disconnect 4002") && strings.Contains(string(data), "disconnect 1006")
	})
	// a refusal before the handshake
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if _, resp, err := websocket.Dial(dctx, base+"/refuse", nil); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("a refused WebSocket: %v %v", resp, err)
	}
	// broadcast to every client of the worker
	var conns []*websocket.Conn
	for i := 0; i < 3; i++ {
		conns = append(conns, wsDial(t, base+"/broadcast"))
	}
	conns[0].Write(ctx, websocket.MessageText, []byte("news"))
	for i, cn := range conns {
		_, data, err := cn.Read(ctx)
		if err != nil || string(data) != "all:news" {
			t.Errorf("client %d got %q %v", i, data, err)
		}
		cn.Close(websocket.StatusNormalClosure, "")
	}
	// the worker's channels are free again
	waitFor(t, 10*time.Second, "no busy channel", func() bool { return c.mustApps()[0].Workers[0].State == "idle" })
}

func TestThousandWebSockets(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "ws_app:app", "workers 2\n\t\tmax_concurrency 600\n\t\tmax_websockets 1000\n\t\tmax_open_per_client 1000\n\t\tmax_queue 2000")
	startCaddy(t, config)
	url = "ws" + strings.TrimPrefix(url, "http") + "/echo"
	const n = 1000
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	var failures atomic.Int64
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, url, nil)
			if err != nil {
				failures.Add(1)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d connections failed", f, n)
	}
	// all open at once: each echoes
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			msg := fmt.Sprint(i)
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				failures.Add(1)
				return
			}
			_, data, err := c.Read(ctx)
			if err != nil || string(data) != "echo:"+msg {
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
	}
	if f := failures.Load(); f > 0 {
		t.Errorf("%d of %d echoes failed", f, n)
	}
}

// TestASGIBoundsWhatTheAppDoesNotTake: what a client sends faster than the
// app takes it does not pile up in the worker's memory, which every request
// and WebSocket it serves shares: past 4 MiB a request body the app does
// not read waits in a temporary file, and a WebSocket whose app does not
// receive is closed with 1009 (the app's send raises, its receive says
// disconnect). Before, both were read into the worker's memory whole,
// until the kernel killed it.
func TestASGIBoundsWhatTheAppDoesNotTake(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "flood.log")
	config, url := asgiSite(t, "asgi_flood:app", "workers 1\n\t\tmax_body 200MB\n\t\tenv FLOOD_LOG "+log)
	c := startCaddy(t, config)
	before := c.workerPIDs()

	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Post(url+"/unread", "application/octet-stream", bytes.NewReader(make([]byte, 64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	grown, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if kb, err := strconv.Atoi(string(grown)); err != nil || kb > 16<<10 {
		t.Errorf("the worker grew by %s kB while a 64 MiB body it did not read came in", grown)
	}

	ws := wsDial(t, "ws"+strings.TrimPrefix(url, "http")+"/deaf")
	defer ws.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		message := make([]byte, 512<<10)
		for i := 0; i < 128; i++ { // 64 MiB
			if ws.Write(ctx, websocket.MessageBinary, message) != nil {
				return
			}
		}
	}()
	for {
		_, _, err := ws.Read(ctx)
		if err == nil {
			continue // a tick
		}
		if code := websocket.CloseStatus(err); code != websocket.StatusMessageTooBig {
			t.Errorf("the WebSocket ended with %v (status %d), want a close with 1009", err, code)
		}
		break
	}
	defer func() { data, _ := os.ReadFile(log); t.Logf("flood log: %q", data) }()
	waitFor(t, 20*time.Second, "the app told", func() bool {
		data, _ := os.ReadFile(log)
		return strings.Contains(string(data), "send raised ClientDisconnected") && strings.Contains(string(data), "received websocket.disconnect 1009")
	})
	// empty messages cost the worker memory too: they count against the
	// bound (before, a flood of them was never closed)
	empty := wsDial(t, "ws"+strings.TrimPrefix(url, "http")+"/deaf")
	defer empty.CloseNow()
	ectx, ecancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer ecancel()
	go func() {
		for i := 0; i < 400000; i++ {
			if empty.Write(ectx, websocket.MessageText, nil) != nil {
				return
			}
		}
	}()
	for {
		_, _, err := empty.Read(ectx)
		if err == nil {
			continue
		}
		if code := websocket.CloseStatus(err); code != websocket.StatusMessageTooBig {
			t.Errorf("a flood of empty messages ended with %v (status %d), want a close with 1009", err, code)
		}
		break
	}
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != fmt.Sprintf("hello from %d\n", before[0]) {
		t.Errorf("after the floods: %d %q, want the same worker (%d)", resp.StatusCode, body, before[0])
	}
}

// TestASGIWorkerMemoryIsBounded: what a worker holds for all its requests
// together is bounded, not only what each holds. Sixteen WebSockets whose
// app never receives, each sent 12 MiB (under a WebSocket's own 16 MiB),
// and 24 uploads of 3.5 MiB their app does not read (under a request's own
// 4 MiB): before, the worker took all of it into memory (~280 MiB, and
// max_concurrency of them could hold 100 × 16 MiB); now uploads go to their
// files once the worker holds 32 MiB, and past 64 MiB the WebSocket whose
// app is furthest behind is closed with 1009. A WebSocket that sent nothing
// is never the one closed.
func TestASGIWorkerMemoryIsBounded(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "flood.log")
	// 17 WebSockets from one address: more than its default share (12)
	config, url := asgiSite(t, "asgi_flood:app", "workers 1\n\t\tmax_open_per_client 17\n\t\tenv FLOOD_LOG "+log)
	c := startCaddy(t, config)
	pid := c.workerPIDs()[0]
	wsURL := "ws" + strings.TrimPrefix(url, "http") + "/deaf"
	quiet := wsDial(t, wsURL)
	defer quiet.CloseNow()
	base := procStatusKiB(t, pid, "VmHWM")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var tooSlow, uploaded atomic.Int32
	for i := 0; i < 16; i++ {
		ws := wsDial(t, wsURL)
		defer ws.CloseNow()
		wg.Add(1)
		go func() {
			defer wg.Done()
			message := make([]byte, 512<<10)
			for j := 0; j < 24; j++ { // 12 MiB
				if ws.Write(ctx, websocket.MessageBinary, message) != nil {
					break
				}
			}
			// ticks for 2 s: still open; a close: with 1009
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			defer rcancel()
			for {
				_, _, err := ws.Read(rctx)
				if err == nil {
					continue
				}
				if code := websocket.CloseStatus(err); code == websocket.StatusMessageTooBig {
					tooSlow.Add(1)
				} else if code != -1 || rctx.Err() == nil {
					t.Errorf("a flooding WebSocket ended with %v (status %d), want 1009 or open", err, code)
				}
				return
			}
		}()
	}
	client := &http.Client{Timeout: 60 * time.Second}
	for i := 0; i < 24; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Post(url+"/unread", "application/octet-stream", bytes.NewReader(make([]byte, 3584<<10)))
			if err != nil {
				t.Errorf("upload: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				uploaded.Add(1)
			}
		}()
	}
	wg.Wait()
	grown := procStatusKiB(t, pid, "VmHWM") - base
	t.Logf("the worker's peak grew by %d MiB; %d WebSockets closed with 1009; %d uploads answered", grown>>10, tooSlow.Load(), uploaded.Load())
	if grown > 128<<10 {
		t.Errorf("the worker's peak memory grew by %d MiB under 192 MiB of WebSocket messages and 84 MiB of uploads its app did not take, want at most 128", grown>>10)
	}
	if tooSlow.Load() == 0 {
		t.Errorf("no flooding WebSocket was closed with 1009")
	}
	if uploaded.Load() != 24 {
		t.Errorf("%d of 24 uploads answered", uploaded.Load())
	}
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	if _, data, err := quiet.Read(rctx); err != nil || string(data) != "tick" {
		t.Errorf("the WebSocket that sent nothing: %q, %v; want still open", data, err)
	}
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != fmt.Sprintf("hello from %d\n", pid) {
		t.Errorf("after the floods: %d %q, want the same worker (%d)", resp.StatusCode, body, pid)
	}
}

// TestASGIWebSocketAppThatNeverEnds: a WebSocket app that neither receives
// nor sends (waiting for an event that does not come) held its channel
// for good once its client left, and one that never accepted held it from
// the opening on: with max_concurrency 1, the worker served nothing else.
// Now the opening has the request's timeout (a 504; an accept that
// crosses Caddy's cancel is dropped), and an app that has not ended 10 s
// after its client closed or left has its task cancelled, as an HTTP
// stream's; the worker goes on.
func TestASGIWebSocketAppThatNeverEnds(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 1\n\t\tqueue_timeout 60s\n\t\ttimeout 2s\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, config)
	before := c.workerPIDs()
	hello := fmt.Sprintf("hello from %d\n", before[0])
	wsURL := "ws" + strings.TrimPrefix(url, "http")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, wsURL+"/ws-silent", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("an opening the app never answers: %v (%v), want 504", err, resp)
	}
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != hello {
		t.Errorf("after the silent opening: %d %q, want %q", resp.StatusCode, body, hello)
	}
	// an accept that crosses Caddy's cancel (the worker's loop held up
	// past the timeout) is dropped with the rest: the worker was killed
	_, resp, err = websocket.Dial(ctx, wsURL+"/ws-late", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("an opening accepted past the timeout: %v (%v), want 504", err, resp)
	}
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != hello {
		t.Errorf("after the late accept: %d %q, want %q", resp.StatusCode, body, hello)
	}

	ws := wsDial(t, wsURL+"/ws-deaf")
	ws.CloseNow() // the client goes away
	start := time.Now()
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != hello { // waits for the one channel
		t.Errorf("after the deaf WebSocket's client left: %d %q, want %q", resp.StatusCode, body, hello)
	}
	t.Logf("the channel came back %v after the client left", time.Since(start).Round(time.Millisecond))
	for _, name := range []string{"ws-silent", "ws-late", "ws-deaf"} {
		if data, _ := os.ReadFile(marker + "." + name); string(data) != "cancelled" {
			t.Errorf("/%s: the app's task was not cancelled (%q)", name, data)
		}
	}
	if after := c.workerPIDs(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("workers %v before, %v after: want the same one", before, after)
	}
}

// TestASGIWebSocketClientThatStopsReading: a client that keeps its
// WebSocket open but reads nothing held Caddy's write to it for good, and
// with it the app's send (a broadcast loop would stop for every client).
// Now a message the client takes none of for Caddy's write_idle timeout
// gives the client up as one that left: the app's send raises, and the
// channel serves the next request.
func TestASGIWebSocketClientThatStopsReading(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 1\n\t\tqueue_timeout 60s\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, "{\n\tadmin {ADMIN}\n\tservers {\n\t\ttimeouts {\n\t\t\twrite_idle 2s\n\t\t}\n\t}\n}\n"+config)
	before := c.workerPIDs()
	ws := wsDial(t, "ws"+strings.TrimPrefix(url, "http")+"/ws-flood")
	defer ws.CloseNow() // (never read)
	waitFor(t, 30*time.Second, "the app's send to raise", func() bool {
		data, _ := os.ReadFile(marker + ".ws-flood")
		return string(data) == "send raised ClientDisconnected"
	})
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != fmt.Sprintf("hello from %d\n", before[0]) {
		t.Errorf("after the client that stopped reading: %d %q, want the same worker (%d)", resp.StatusCode, body, before[0])
	}
}

// TestASGIWebSocketTaskLeftBehind: a WebSocket endpoint that returns while
// a task of its keeps sending cannot send on the ended stream (its send
// raises): such a frame reached Caddy on the channel's next request, which
// took it for a protocol error and ended the worker with every request it
// served.
func TestASGIWebSocketTaskLeftBehind(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "flood.log")
	config, url := asgiSite(t, "asgi_flood:app", "workers 1\n\t\tmax_concurrency 1\n\t\tenv FLOOD_LOG "+log)
	c := startCaddy(t, config)
	before := c.workerPIDs()
	ws := wsDial(t, "ws"+strings.TrimPrefix(url, "http")+"/leaver")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			break // the endpoint returned: closed
		}
	}
	// the only channel serves the next requests while the task goes on
	for i := 0; i < 10; i++ {
		if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != fmt.Sprintf("hello from %d\n", before[0]) {
			t.Fatalf("request %d after the WebSocket: %d %q, want the same worker (%d)", i, resp.StatusCode, body, before[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "the task's late send refused", func() bool {
		data, _ := os.ReadFile(log)
		return strings.Contains(string(data), "late send raised ClientDisconnected")
	})
}

// TestASGIReceiveAfterTheResponse: once an ASGI response is complete, the
// app's receive says http.disconnect at once (as uvicorn's does): it gave
// what was left of the request, then waited forever, and a task awaiting
// the client's departure leaked.
func TestASGIReceiveAfterTheResponse(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "flood.log")
	config, url := asgiSite(t, "asgi_flood:app", "workers 1\n\t\tenv FLOOD_LOG "+log)
	startCaddy(t, config)
	if resp, body := get(t, url+"/after"); resp.StatusCode != 200 || body != "done" {
		t.Fatalf("GET /after: %d %q", resp.StatusCode, body)
	}
	waitFor(t, 10*time.Second, "the app's receive after its response", func() bool {
		data, _ := os.ReadFile(log)
		return strings.Contains(string(data), "after the response, receive: ")
	})
	if data, _ := os.ReadFile(log); !strings.Contains(string(data), "after the response, receive: http.disconnect") {
		t.Errorf("%s", data)
	}
}

// TestWebSocketsLeaveChannelsForRequests: WebSockets take at most
// max_websockets of an ASGI app's channels (by default half of them);
// one more gets 503, and HTTP requests still find a channel. Each
// WebSocket holds a channel for its life: a client that opened as many
// idle WebSockets as the app had channels (200 on two workers, by
// default) left every HTTP request waiting for its queue_timeout, then 503.
func TestWebSocketsLeaveChannelsForRequests(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "ws_app:app", "workers 1\n\t\tmax_concurrency 4\n\t\tqueue_timeout 3s")
	startCaddy(t, config)
	wsURL := "ws" + strings.TrimPrefix(url, "http") + "/echo"
	dial := func() (*websocket.Conn, int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, wsURL, nil)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return c, status, err
	}
	var open []*websocket.Conn
	defer func() {
		for _, c := range open {
			c.Close(websocket.StatusNormalClosure, "")
		}
	}()
	for i := 1; i <= 4; i++ {
		c, status, err := dial()
		if i <= 2 {
			if err != nil {
				t.Fatalf("WebSocket %d of the 2 allowed (half of 4 channels): %v", i, err)
			}
			open = append(open, c)
			wsRoundTrip(t, c, websocket.MessageText, "hi")
			continue
		}
		if err == nil {
			open = append(open, c)
			t.Errorf("WebSocket %d opened: max_websockets defaults to half the app's 4 channels", i)
		} else if status != http.StatusServiceUnavailable {
			t.Errorf("WebSocket %d: %v, status %d, want 503", i, err, status)
		}
	}
	// the app's own answer (404: no HTTP route), not the queue's 503
	for i := 0; i < 2; i++ {
		resp, _ := get(t, url+"/not-a-websocket")
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("an HTTP request with WebSockets open: status %d, want the app's 404", resp.StatusCode)
		}
	}
	// a WebSocket that closes gives its place back
	open[0].Close(websocket.StatusNormalClosure, "")
	open = open[1:]
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, status, err := dial()
		if err == nil {
			open = append(open, c)
			break
		}
		if status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("a WebSocket after one closed: %v, status %d", err, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOneClientCannotHoldEveryWebSocket: one client (an address) may hold
// at most its share of an app's WebSockets and streamed responses (a
// quarter of the limit by default: 10 of the 40 of 80 channels); past it
// it gets 429 with Retry-After, and a client from another address still
// gets in. Before, one client could open every WebSocket the app allowed,
// and every other visitor's got 503.
func TestOneClientCannotHoldEveryWebSocket(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "marker")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 80\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, config)
	wsURL := "ws" + strings.TrimPrefix(url, "http")
	attacker, visitor := clientFrom("127.0.0.1"), clientFrom("127.0.0.2") // two addresses of the loopback network
	dial := func(client *http.Client) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return websocket.Dial(ctx, wsURL+"/ws-deaf", &websocket.DialOptions{HTTPClient: client})
	}
	stream := func(client *http.Client) *http.Response {
		t.Helper()
		resp, err := client.Get(url + "/sse-wait")
		if err != nil {
			t.Fatalf("GET /sse-wait: %v", err)
		}
		return resp
	}
	var held []io.Closer
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	wsCloser := func(ws *websocket.Conn) io.Closer {
		return closerFunc(func() error { return ws.Close(websocket.StatusNormalClosure, "") })
	}

	// the attack: one address opens all it can, up to the app's 40
	opened, streams := 0, 0
	var refusal *http.Response
	for range 40 {
		ws, resp, err := dial(attacker)
		if err != nil {
			refusal = resp
			break
		}
		held = append(held, wsCloser(ws))
		opened++
	}
	if opened != 10 || refusal == nil || refusal.StatusCode != http.StatusTooManyRequests || refusal.Header.Get("Retry-After") == "" {
		status := 0
		if refusal != nil {
			status = refusal.StatusCode
		}
		t.Fatalf("one client opened %d WebSockets, then got %d; want 10 (a quarter of the app's 40), then 429 with Retry-After", opened, status)
	}
	// a stream counts with them (they share the limit)
	if resp := stream(attacker); resp.StatusCode != http.StatusTooManyRequests {
		held = append(held, resp.Body)
		t.Errorf("a stream from the client holding 10 WebSockets: %d, want 429", resp.StatusCode)
	} else {
		resp.Body.Close()
	}

	// another client still gets its WebSocket and its stream
	ws, resp, err := dial(visitor)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("a WebSocket from another address beside the 10: %v, status %d", err, status)
	}
	held = append(held, wsCloser(ws))
	if resp := stream(visitor); resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Errorf("a stream from another address: %d, want 200", resp.StatusCode)
	} else {
		held = append(held, resp.Body)
		streams++
	}

	apps := c.mustApps()
	if apps[0].WebSockets != 11 || apps[0].Streams != streams || apps[0].MaxWebSocketsPerClient != 10 || apps[0].MaxStreamsPerClient != 10 {
		t.Errorf("/hearth/apps: %d WebSockets and %d streams, %d and %d per client; want 11 and %d, 10 and 10",
			apps[0].WebSockets, apps[0].Streams, apps[0].MaxWebSocketsPerClient, apps[0].MaxStreamsPerClient, streams)
	}
	metrics := scrape(t, c)
	for reason, want := range map[string]float64{"client_websockets": 1, "client_streams": 1, "websockets": 0} {
		series := fmt.Sprintf("hearth_refused_requests_total{app=%q,reason=%q}", apps[0].Name, reason)
		if got := metrics[series]; got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// warned once, though refused twice: a client can provoke it at will
	waitFor(t, 10*time.Second, "the warning naming the client and what to change", func() bool {
		return warned(c, "client 127.0.0.1 already holds 10 WebSockets and 0 streamed responses open, its max_open_per_client (10)", "trusted_proxies")
	})
	if n := strings.Count(c.log.String(), "its max_open_per_client (10)"); n != 1 {
		t.Errorf("%d warnings for 2 refusals within a minute, want 1", n)
	}

	// a WebSocket that closes gives its client's place back, once its app
	// has ended (this one does not listen: cancelled after 10 s)
	held[0].Close()
	held = held[1:]
	waitFor(t, 40*time.Second, "the client's WebSocket after one of its own closed", func() bool {
		ws, _, err := dial(attacker)
		if err == nil {
			held = append(held, wsCloser(ws))
		}
		return err == nil
	})
}

// closerFunc is a func as an io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// TestWebSocketsGrowAnAutoscaledPool: WebSockets refused at an autoscaled
// app's limit grow it, as queued requests do, and the limit grows with it.
// Refused before any queue, they never did: an app of workers 1,
// max_workers 4 stayed at half of one worker's channels.
func TestWebSocketsGrowAnAutoscaledPool(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "ws_app:app", "min_workers 1\n\t\tmax_workers 2\n\t\tmax_concurrency 2")
	c := startCaddy(t, config)
	wsURL := "ws" + strings.TrimPrefix(url, "http") + "/echo"
	first := wsDial(t, wsURL) // the limit: half of one worker's 2 channels
	defer first.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		second, resp, err := websocket.Dial(ctx, wsURL, nil)
		cancel()
		if err == nil {
			defer second.Close(websocket.StatusNormalClosure, "")
			break
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			apps, _ := c.apps()
			t.Fatalf("a second WebSocket: %v (workers: %+v)", err, apps)
		}
		time.Sleep(100 * time.Millisecond)
	}
	apps, err := c.apps()
	if err != nil || len(apps) != 1 || len(apps[0].Workers) != 2 {
		t.Fatalf("the pool after the WebSocket it grew for: %+v %v", apps, err)
	}
}

// TestWebSocketMessageTooLargeForTheChannel: an app's WebSocket message
// over 1 MiB (an echo with a prefix of a client's largest message) makes
// the app's send raise, and its WebSocket closes with 1011; the worker and
// its other WebSockets go on. The runtime sent it as one frame larger than
// the channel allows: Caddy took the channel for broken and killed the
// worker, so any client of such an app could end a worker and every
// request on it with one message.
func TestWebSocketMessageTooLargeForTheChannel(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "ws_app:app", "workers 1")
	c := startCaddy(t, config)
	base := "ws" + strings.TrimPrefix(url, "http")
	other := wsDial(t, base+"/echo")
	wsRoundTrip(t, other, websocket.MessageText, "before")
	big := wsDial(t, base+"/echo")
	big.SetReadLimit(4 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := big.Write(ctx, websocket.MessageText, bytes.Repeat([]byte("m"), 1<<20-2)); err != nil {
		t.Fatal(err)
	}
	if _, data, err := big.Read(ctx); websocket.CloseStatus(err) != websocket.StatusInternalError {
		t.Errorf("the echo of a 1 MiB message: %d bytes, %v; want a close with 1011", len(data), err)
	}
	if typ, got := wsRoundTrip(t, other, websocket.MessageText, "after"); typ != websocket.MessageText || got != "echo:after" {
		t.Errorf("the other WebSocket after it: %v %q", typ, got)
	}
	if apps := c.mustApps(); apps[0].Restarts["crash"] != 0 {
		t.Errorf("the worker was restarted: %v", apps[0].Restarts)
	}
	// The app's traceback reaches Caddy's log through the worker's stderr,
	// a line at a time, possibly after the close reached the client.
	waitFor(t, 10*time.Second, "the log to say why the WebSocket closed", func() bool {
		return strings.Contains(c.log.String(), "a WebSocket message may be at most 1048576 bytes (1 MiB)")
	})
	other.Close(websocket.StatusNormalClosure, "")
}

// TestRestartEndsOldWorkersWebSockets: a restart (new code deployed) gives
// an old worker's WebSockets its stop_timeout, then stops that worker: its
// clients get a close with 1001 (going away), and reconnect to the new
// workers. Before, an old worker served its WebSockets with the old code
// for as long as their clients stayed (a deployed fix did not reach
// them), one more process at each restart; and a worker stopped with a
// WebSocket open was logged as broken, killed without its lifespan
// shutdown, and its clients got 1011 (an internal error). The worker now
// cancels the task its app left waiting on a WebSocket 3 s after it was
// told to stop.
func TestRestartEndsOldWorkersWebSockets(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tstop_timeout 4s\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, config)
	before := c.workerPIDs()
	wsURL := "ws" + strings.TrimPrefix(url, "http")
	ws := wsDial(t, wsURL+"/ws-deaf")
	defer ws.CloseNow()
	name := c.mustApps()[0].Name
	if code, body := adminPost(t, c, "/hearth/apps/"+name+"/restart", ""); code != 200 {
		t.Fatalf("restart: %d %s", code, body)
	}
	if apps := c.mustApps(); len(apps[0].Workers) != 2 {
		t.Errorf("right after the restart: workers %+v, want the new one and the old one, its WebSocket open until its stop_timeout", apps[0].Workers)
	}
	waitFor(t, 20*time.Second, "the old worker, holding a WebSocket, stopped 4 s (its stop_timeout) after the restart", func() bool {
		for _, a := range c.mustApps() {
			for _, w := range a.Workers {
				if w.Pid == before[0] {
					return false
				}
			}
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("the old worker's WebSocket: %v, want a close with 1001 (going away)", err)
	}
	// the old worker stopped as a worker should: its app's task that
	// waited on the WebSocket cancelled (then its lifespan shutdown), not
	// killed at once
	if data, _ := os.ReadFile(marker + ".ws-deaf"); string(data) != "cancelled" {
		t.Errorf("the old worker's WebSocket task was not cancelled (%q): the worker was killed", data)
	}
	again := wsDial(t, wsURL+"/ws-deaf") // (the new worker's)
	again.CloseNow()
	if log := c.log.String(); !strings.Contains(log, `"retired_for":"reload"`) || strings.Contains(log, "worker channel broken") {
		t.Errorf("the log does not say why the old worker was stopped, or says it broke:\n%s", tail(log, 20))
	}
}

// TestRestartLetsBackgroundWorkFinish: work an ASGI app goes on with after
// its response (a background task) is not cancelled when a restart stops
// its worker, unlike a request whose client is still waiting: it has
// until Caddy's SIGKILL, 10 s after SIGTERM, to finish.
func TestRestartLetsBackgroundWorkFinish(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, config)
	if resp, body := get(t, url+"/background?secs=5"); resp.StatusCode != 200 || body != "accepted" {
		t.Fatalf("the request: %d %q", resp.StatusCode, body)
	}
	if code, body := adminPost(t, c, "/hearth/apps/"+c.mustApps()[0].Name+"/restart", ""); code != 200 {
		t.Fatalf("restart: %d %s", code, body)
	}
	waitFor(t, 15*time.Second, "the background work done", func() bool {
		data, _ := os.ReadFile(marker + ".background")
		return string(data) == "done"
	})
}

// TestWebSocketFromAnotherSitesPage: a page of another site that the
// user's browser opens (a real Chromium) cannot open a WebSocket to the
// app, which would carry the user's cookies for the app's site
// (cross-site WebSocket hijacking): the guard answers 403 before the app
// is asked. A page of an origin listed in websocket_origins can, as can
// the site's own pages and clients that send no Origin.
func TestWebSocketFromAnotherSitesPage(t *testing.T) {
	t.Parallel()
	// two pages' sites on loopback: one the config lists, one it does not
	type attempt struct{ result string }
	results := make(chan attempt, 4)
	page := func(target string) *httptest.Server {
		done := make(chan struct{}, 1)
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/":
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprintf(w, `<!doctype html><title>a page</title><script>
const ws = new WebSocket(%q);
const report = (r) => { new Image().src = "/done?r=" + encodeURIComponent(r); };
ws.onopen = () => ws.send("from another site");
ws.onmessage = (e) => report(e.data);
ws.onerror = () => report("error");
</script><img src="/wait">`, target)
			case "/done":
				results <- attempt{r.URL.Query().Get("r")}
				done <- struct{}{}
			case "/wait": // holds the page's load (and Chromium) until the attempt has ended
				select {
				case <-done:
				case <-time.After(30 * time.Second):
				}
				w.Header().Set("Content-Type", "image/gif")
				w.Write([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"))
			}
		}))
	}
	log := filepath.Join(t.TempDir(), "ws.log")
	port := freePort(t)
	target := fmt.Sprintf("ws://127.0.0.1:%d/echo", port)
	stranger, friend := page(target), page(target)
	defer stranger.Close()
	defer friend.Close()
	config := fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	asgi ws_app:app {
		dir {APPS}
		python {PYTHON}
		workers 1
		env WS_LOG %s
		guard enforce {
			websocket_origins %s
		}
	}
}
`, port, log, friend.URL)
	startCaddy(t, config)

	chromium(t, "--no-proxy-server", "--dump-dom", stranger.URL+"/")
	if got := (<-results).result; got != "error" {
		t.Errorf("a page of another site opened a WebSocket to the app: it got %q", got)
	}
	chromium(t, "--no-proxy-server", "--dump-dom", friend.URL+"/")
	if got := (<-results).result; got != "echo:from another site" {
		t.Errorf("a page of a listed origin: %q, want the echo", got)
	}

	// the same openings without a browser: the refusal says what to do
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(origin string) (*http.Response, error) {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, resp, err := websocket.Dial(ctx, target, &websocket.DialOptions{HTTPHeader: h})
		if err == nil {
			c.Close(websocket.StatusNormalClosure, "")
		}
		return resp, err
	}
	for _, origin := range []string{"", fmt.Sprintf("http://127.0.0.1:%d", port), friend.URL} {
		if _, err := dial(origin); err != nil {
			t.Errorf("Origin %q: %v", origin, err)
		}
	}
	for _, origin := range []string{stranger.URL, "null", "https://evil.example", fmt.Sprintf("http://127.0.0.1:%d", port+1)} {
		resp, err := dial(origin)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("Origin %q: %v %v, want 403", origin, resp, err)
		}
	}
	// the app saw only the openings let through: one from the listed
	// page, three without a browser
	waitFor(t, 10*time.Second, "the app's disconnects", func() bool {
		data, _ := os.ReadFile(log)
		return strings.Count(string(data), "disconnect") >= 4
	})
	if data, _ := os.ReadFile(log); strings.Count(string(data), "disconnect") != 4 {
		t.Errorf("the app saw %d WebSockets, want 4:\n%s", strings.Count(string(data), "disconnect"), data)
	}
}
