package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// asgiSite returns a Caddyfile serving the ASGI app from the test apps on
// a fresh loopback port, and its URL.
func asgiSite(t *testing.T, app, options string) (string, string) {
	return appSite(t, "asgi", app, "{APPS}", options)
}

func TestASGIFastAPI(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "fastapi_app:app", "workers 2\n\t\tlifespan on")
	c := startCaddy(t, config)
	resp, body := get(t, url+"/items/42?q=hello")
	var item map[string]any
	if json.Unmarshal([]byte(body), &item) != nil || resp.StatusCode != 200 || item["item_id"] != 42.0 || item["q"] != "hello" {
		t.Fatalf("GET /items/42: %d %s", resp.StatusCode, body)
	}
	if item["started_in"] != item["pid"] {
		t.Errorf("lifespan state not set in the worker: %v", item)
	}
	// validation errors, from FastAPI itself
	if resp, body := get(t, url+"/items/not-a-number"); resp.StatusCode != 422 || !strings.Contains(body, "item_id") {
		t.Errorf("path validation: %d %s", resp.StatusCode, body)
	}
	r, err := http.Post(url+"/items", "application/json", strings.NewReader(`{"name": "lamp", "price": 10}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || !strings.Contains(string(b), `"price_with_tax":12.0`) {
		t.Errorf("POST /items: %d %s", r.StatusCode, b)
	}
	r, _ = http.Post(url+"/items", "application/json", strings.NewReader(`{"name": "lamp"}`))
	b, _ = io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 422 || !strings.Contains(string(b), "price") {
		t.Errorf("body validation: %d %s", r.StatusCode, b)
	}
	// the scope
	req, _ := http.NewRequest("GET", url+"/scope?a=1", nil)
	req.Header.Set("X-Custom", "yes")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var scope struct {
		HTTPVersion string     `json:"http_version"`
		Scheme      string     `json:"scheme"`
		Client      []any      `json:"client"`
		Server      []any      `json:"server"`
		Path        string     `json:"path"`
		RawPath     string     `json:"raw_path"`
		Query       string     `json:"query_string"`
		Headers     [][]string `json:"headers"`
	}
	json.NewDecoder(resp2.Body).Decode(&scope)
	resp2.Body.Close()
	hasHeader := false
	for _, h := range scope.Headers {
		hasHeader = hasHeader || h[0] == "x-custom" && h[1] == "yes"
	}
	if scope.HTTPVersion != "1.1" || scope.Scheme != "http" || scope.Client[0] != "127.0.0.1" || scope.Path != "/scope" ||
		scope.RawPath != "/scope" || scope.Query != "a=1" || !hasHeader || scope.Server[1] == 0.0 {
		t.Errorf("scope: %+v", scope)
	}
	// concurrency: one worker's event loop runs many requests at once
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, _ := get(t, url+"/sleep?seconds=1"); resp.StatusCode != 200 {
				t.Errorf("sleep: %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if elapsed := time.Since(start); elapsed > 8*time.Second {
		t.Errorf("20 one-second requests on 2 workers took %s: not concurrent", elapsed)
	}
	_ = c
}

func TestASGIStreamingAndDisconnect(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "disconnected")
	config, url := asgiSite(t, "fastapi_app:app", "workers 1")
	startCaddy(t, config)
	resp, err := http.Get(url + "/stream?n=4&delay=0.3")
	if err != nil {
		t.Fatal(err)
	}
	reader := bufio.NewReader(resp.Body)
	var times []time.Time
	for {
		line, err := reader.ReadString('\n')
		if err != nil {
			break
		}
		times = append(times, time.Now())
		if !strings.HasPrefix(line, "chunk ") {
			t.Fatalf("line %q", line)
		}
	}
	resp.Body.Close()
	if len(times) != 4 || times[3].Sub(times[0]) < 600*time.Millisecond {
		t.Errorf("streamed %d chunks over %v: not streamed as produced", len(times), times)
	}
	// the client leaves in the middle: the app gets http.disconnect
	os.Setenv("DISCONNECT_MARKER", marker)
	defer os.Unsetenv("DISCONNECT_MARKER")
	dconfig, durl := asgiSite(t, "fastapi_app:disconnect_app", "workers 1\n\t\tenv DISCONNECT_MARKER "+marker)
	startCaddy(t, dconfig)
	resp, err = http.Get(durl + "/")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	io.ReadFull(resp.Body, buf)
	resp.Body.Close() // hang up mid-stream
	waitFor(t, 10*time.Second, "the app to see http.disconnect", func() bool {
		data, _ := os.ReadFile(marker)
		return string(data) == "disconnected"
	})
}

func TestASGILifespanFailureRefusesConfig(t *testing.T) {
	t.Parallel()
	config, _ := asgiSite(t, "lifespan_fails:app", "workers 1")
	if log := refused(t, config); !strings.Contains(log, "cannot reach the database (on purpose)") {
		t.Errorf("the app's message is not in the error:\n%s", tail(log, 5))
	}
}

func TestASGIDjangoAndTimeout(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "djasgi:application", "workers 1\n\t\tguard warn")
	startCaddy(t, config)
	if resp, body := get(t, url+"/hello"); resp.StatusCode != 200 || body != "hello from django asgi at /hello" {
		t.Errorf("Django through its ASGI handler: %d %q", resp.StatusCode, body)
	}
	// the supervision options apply: a request past its timeout gets 504.
	// The worker serves many requests at once: only the late one's task is
	// cancelled (its stack logged), and a response streaming meanwhile on
	// the same worker comes whole
	config, url = asgiSite(t, "fastapi_app:app", "workers 1\n\t\ttimeout 1s")
	c := startCaddy(t, config)
	before := c.workerPIDs()
	streamed := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url + "/stream?n=8&delay=0.5")
		if err != nil {
			streamed <- err.Error()
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		streamed <- fmt.Sprintf("%d %q %v", resp.StatusCode, body, err)
	}()
	started := time.Now()
	if resp, _ := get(t, url+"/sleep?seconds=30"); resp.StatusCode != 504 || time.Since(started) > 10*time.Second {
		t.Errorf("a request past its timeout: %d after %v", resp.StatusCode, time.Since(started))
	}
	want := fmt.Sprintf("200 %q <nil>", "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\nchunk 6\nchunk 7\n")
	if got := <-streamed; got != want {
		t.Errorf("a stream on the same worker meanwhile: %s, want %s", got, want)
	}
	if after := c.workerPIDs(); fmt.Sprint(after) != fmt.Sprint(before) || c.mustApps()[0].Restarts["timeout"] != 0 {
		t.Errorf("workers %v before the timeout, %v after (restarts %v): want the same one", before, after, c.mustApps()[0].Restarts)
	}
	if log := c.log.String(); !strings.Contains(log, "Caddy gave up on a request (past its timeout, or its client gone); cancelled it where it waited") ||
		!strings.Contains(log, "await asyncio.sleep(seconds)") {
		t.Errorf("the cancelled request's stack is not in the log")
	}
	// an app that blocks its event loop (time.sleep in async code) does
	// not end the request when told: after 5 s more its worker is replaced
	if resp, _ := get(t, url+"/block?seconds=30"); resp.StatusCode != 504 {
		t.Errorf("a request blocking its event loop: %d", resp.StatusCode)
	}
	waitFor(t, 20*time.Second, "the replacement", func() bool {
		p := c.workerPIDs()
		return len(p) == 1 && p[0] != before[0] && c.mustApps()[0].Restarts["timeout"] == 1
	})
	if resp, _ := get(t, url+"/items/1"); resp.StatusCode != 200 {
		t.Errorf("after the replacement: %d", resp.StatusCode)
	}
}

func TestExampleFastAPI(t *testing.T) {
	src, err := os.ReadFile(repoPath("examples", "fastapi", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	t.Setenv("HEARTH_EXAMPLES", repoPath("examples"))
	config := string(src)
	config = "{\n\tadmin {ADMIN}\n" + config[strings.Index(config, "\n{\n")+len("\n{\n"):] // the example's global options, with the harness's admin address
	startCaddy(t, strings.ReplaceAll(config, "127.0.0.1:3131", fmt.Sprintf("127.0.0.1:%d", port)))
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	r, err := http.Post(url+"/notes", "application/json", strings.NewReader(`{"text": "buy milk", "priority": 2}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || !strings.Contains(string(b), `"index":`) {
		t.Errorf("POST /notes: %d %s", r.StatusCode, b)
	}
	r, _ = http.Post(url+"/notes", "application/json", strings.NewReader(`{"priority": "high"}`))
	r.Body.Close()
	if r.StatusCode != 422 {
		t.Errorf("an invalid note: %d", r.StatusCode)
	}
	if resp, body := get(t, url+"/events?count=3"); resp.StatusCode != 200 || strings.Count(body, "data: tick") != 3 ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("events: %d %q", resp.StatusCode, body)
	}
}

// TestASGIStreamOutlivesTimeout: an ASGI response that streams longer than
// the request's timeout (server-sent events) is relayed whole, and a client
// that stops reading is given up once a write waits longer than Caddy's
// write_idle (the app sees the disconnect); the worker, which serves many
// requests at once, is never ended for either. Before, the timeout ran over
// the whole stream and killed the worker with every request it served.
func TestASGIStreamOutlivesTimeout(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "disconnected")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 1\n\t\ttimeout 2s\n\t\tenv STREAM_MARKER "+marker)
	// Caddy gives up a client that accepts nothing for write_idle (a
	// minute by default)
	c := startCaddy(t, "{\n\tadmin {ADMIN}\n\tservers {\n\t\ttimeouts {\n\t\t\twrite_idle 2s\n\t\t}\n\t}\n}\n"+config)
	before := c.workerPIDs()
	started := time.Now()
	resp, body := get(t, url+"/sse?n=5&delay=0.8")
	if resp.StatusCode != 200 || strings.Count(body, "data: ") != 5 || !strings.HasSuffix(body, "data: 4\n\n") {
		t.Errorf("a stream of 5 events over %v (timeout 2s): %d %q", time.Since(started), resp.StatusCode, body)
	}

	// a client that reads nothing of an endless response, to a request
	// with a body the app never reads either (more than the worker keeps
	// in memory): the body must not stop the client's cancel on its way
	// to the worker, and the one channel serves the next request
	host := strings.TrimPrefix(url, "http://")
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	const bodySize = 10 << 20
	fmt.Fprintf(conn, "POST /flood HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", host, bodySize)
	if _, err := conn.Write(make([]byte, bodySize)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the app told that the client is gone", func() bool {
		data, _ := os.ReadFile(marker)
		return string(data) == "disconnected"
	})
	// an app that fails right after its head, on the one channel: a 500,
	// and nothing of it reaches the channel's next request
	if resp, _ := get(t, url+"/start-raise"); resp.StatusCode != 500 {
		t.Errorf("a failure right after the head: %d", resp.StatusCode)
	}
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != fmt.Sprintf("hello from %d\n", before[0]) {
		t.Errorf("after a failure right after the head: %d %q, want the same worker (%d)", resp.StatusCode, body, before[0])
	}
	// a client that leaves before the first event: the app hears of it
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/sse-wait", nil)
	go func() { time.Sleep(time.Second); cancel() }()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	waitFor(t, 20*time.Second, "the app told that the client left before the first event", func() bool {
		data, _ := os.ReadFile(marker + ".wait")
		return string(data) == "left before the first event"
	})
	resp, body = get(t, url+"/")
	if want := fmt.Sprintf("hello from %d\n", before[0]); resp.StatusCode != 200 || body != want {
		t.Errorf("after the streams: %d %q, want %q (the same worker)", resp.StatusCode, body, want)
	}
	if after := c.workerPIDs(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("workers %v before the streams, %v after", before, after)
	}
}

// TestASGIAppDeafToItsClientLeaving: an event stream that waits for its
// next event without listening for the disconnect has its task cancelled
// 10 s (closeGrace) after its client left, and its channel serves again;
// before, it held the channel until that event came (here, an hour: the
// worker's one channel, so every other request waited).
func TestASGIAppDeafToItsClientLeaving(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 1\n\t\tqueue_timeout 60s\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, config)
	before := c.workerPIDs()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url + "/sse-deaf")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()             // the client leaves once it has the head
	resp, body := get(t, url+"/") // waits for the one channel (get's client: 30 s)
	if want := fmt.Sprintf("hello from %d\n", before[0]); resp.StatusCode != 200 || body != want {
		t.Errorf("the next request: %d %q, want %q", resp.StatusCode, body, want)
	}
	if data, _ := os.ReadFile(marker + ".deaf"); string(data) != "cancelled" {
		t.Errorf("the deaf app's task was not cancelled (%q)", data)
	}
	if after := c.workerPIDs(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("workers %v before, %v after: want the same one", before, after)
	}
}

// TestStreamsLeaveChannelsForRequests: streamed ASGI responses (server-sent
// events, downloads) take at most half an app's channels, shared with its
// WebSockets; one more GET gets 503 instead of the app's head, its task is
// cancelled, and HTTP requests still find a channel. Each stream holds its
// channel for as long as it goes: one client's event streams (250 on one
// HTTP/2 connection) took every channel, and every request then waited for
// its queue_timeout and got 503. A POST's stream is counted, not refused
// (its app has done its work).
func TestStreamsLeaveChannelsForRequests(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 4\n\t\tqueue_timeout 3s\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, config)
	before := c.workerPIDs()
	client := &http.Client{Timeout: 20 * time.Second}
	var open []*http.Response
	defer func() {
		for _, resp := range open {
			resp.Body.Close()
		}
	}()
	for i := 1; i <= 2; i++ { // half of 4 channels
		resp, err := client.Get(url + "/sse-wait")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream %d of the 2 allowed: %v %v", i, err, resp)
		}
		open = append(open, resp)
	}
	resp, err := client.Get(url + "/sse-deaf")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		resp.Header.Get("Content-Type") == "text/event-stream" {
		t.Errorf("a third stream: %d %v %q, want 503 with Retry-After, without the app's head", resp.StatusCode, resp.Header, body)
	}
	waitFor(t, 20*time.Second, "the refused stream's task cancelled", func() bool {
		data, _ := os.ReadFile(marker + ".deaf")
		return string(data) == "cancelled"
	})
	// a download (its first 64 KiB came with its head) is refused the same
	resp, err = client.Get(url + "/flood")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Content-Type") == "application/octet-stream" {
		t.Errorf("a download past the limit: %d %v, want 503 without the app's head", resp.StatusCode, resp.Header)
	}
	waitFor(t, 10*time.Second, "the worker's line on the refusal in Caddy's log", func() bool {
		return strings.Count(c.log.String(), "Caddy refused a streamed response") == 2
	})
	if log := c.log.String(); strings.Contains(log, "timed out") {
		t.Errorf("a refusal is logged as a timeout:\n%s", tail(log, 20))
	}
	// a POST past the limit is served (counted, and refused nothing)
	post, err := client.Post(url+"/sse-wait", "text/plain", strings.NewReader("x"))
	if err != nil || post.StatusCode != 200 {
		t.Fatalf("a POST's stream past the limit: %v %v, want the app's 200", err, post)
	}
	open = append(open, post)
	// WebSockets share the half
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/ws-deaf", nil); err == nil {
		ws.CloseNow()
		t.Errorf("a WebSocket opened beside 2 streams on 4 channels")
	} else if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a WebSocket beside 2 streams: %v, want 503", err)
	}
	// the app's own answers, not the queue's 503
	for range 2 {
		if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != fmt.Sprintf("hello from %d\n", before[0]) {
			t.Fatalf("a request with 2 streams open: %d %q", resp.StatusCode, body)
		}
	}
	apps := c.mustApps()
	if apps[0].Streams != 3 || apps[0].MaxStreams != 2 || apps[0].WebSockets != 0 || apps[0].MaxWebSockets != 2 ||
		!apps[0].MaxStreamsShared || !apps[0].MaxWebSocketsShared {
		t.Errorf("/hearth/apps: streams %d of %d, WebSockets %d of %d, shared %v %v; want 3 of 2 (a POST's past it), 0 of 2, both shared",
			apps[0].Streams, apps[0].MaxStreams, apps[0].WebSockets, apps[0].MaxWebSockets, apps[0].MaxStreamsShared, apps[0].MaxWebSocketsShared)
	}
	metrics := scrape(t, c)
	for reason, want := range map[string]float64{"streams": 2, "websockets": 1} {
		series := fmt.Sprintf("hearth_refused_requests_total{app=%q,reason=%q}", apps[0].Name, reason)
		if got := metrics[series]; got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// streams that end give their place back
	open[0].Body.Close()
	open[2].Body.Close()
	open = open[1:2]
	waitFor(t, 20*time.Second, "a stream after one ended", func() bool {
		resp, err := client.Get(url + "/sse-wait")
		if err != nil {
			return false
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
			return false
		}
		open = append(open, resp)
		return true
	})
	if after := c.workerPIDs(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("workers %v before, %v after: want the same one", before, after)
	}
}

// TestSentStreamsGiveTheirChannelBack: a large ASGI answer (2 MiB in
// pieces) to a client that reads none of it gives its channel, and its
// place among the streams, back once the app has sent it all: the rest
// waits for the client in Caddy's spool, as a WSGI answer's does. Before,
// each such answer held its channel until its client had taken it all, so
// two slow downloads of a page took the streams' half of 4 channels and
// the third got 503 after the app had done its work.
func TestSentStreamsGiveTheirChannelBack(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 4\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, "{\n\tadmin {ADMIN}\n\tservers {\n\t\tprotocols h1 h2c\n\t}\n}\n"+config)
	before := c.workerPIDs()
	addr := strings.TrimPrefix(url, "http://")
	for i := 1; i <= 4; i++ {
		stalledH2Streams(t, addr, "/flood?mib=2", 1) // (a client that grants no window: it gets no byte)
		waitFor(t, 20*time.Second, fmt.Sprintf("the app done sending stalled download %d (streams 0 in /hearth/apps)", i), func() bool {
			apps, err := c.apps()
			return err == nil && len(apps) == 1 && len(apps[0].Workers) == 1 &&
				apps[0].Workers[0].Requests >= int64(i) && apps[0].Streams == 0
		})
	}
	// the streams' half of the channels is still there, for an event
	// stream and a client that reads the download
	resp, body := get(t, url+"/sse?n=2&delay=0.1")
	if resp.StatusCode != 200 || body != "data: 0\n\ndata: 1\n\n" {
		t.Errorf("an event stream beside 4 stalled downloads: %d %q", resp.StatusCode, body)
	}
	resp, body = get(t, url+"/flood?mib=2")
	if resp.StatusCode != 200 || body != strings.Repeat("x", 2<<20) {
		t.Errorf("a download beside 4 stalled ones: %d, %d bytes", resp.StatusCode, len(body))
	}
	apps := c.mustApps()
	series := fmt.Sprintf("hearth_refused_requests_total{app=%q,reason=\"streams\"}", apps[0].Name)
	if got := scrape(t, c)[series]; got != 0 {
		t.Errorf("%s = %v, want 0", series, got)
	}
	if after := c.workerPIDs(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("workers %v before, %v after: want the same one", before, after)
	}
}

// TestRefusedStreamOfABlockedApp: a stream refused past the limit whose
// app holds its event loop up (it hears no cancel) still has its client
// answered 503, and the worker is terminated as blocked, the log saying
// so rather than that the request timed out.
func TestRefusedStreamOfABlockedApp(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "stream")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 2\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, config)
	before := c.workerPIDs()
	client := &http.Client{Timeout: 30 * time.Second}
	open, err := client.Get(url + "/sse-wait") // the one stream of 2 channels
	if err != nil || open.StatusCode != 200 {
		t.Fatalf("the first stream: %v %v", err, open)
	}
	defer open.Body.Close()
	resp, err := client.Get(url + "/first-block")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a stream past the limit, its app blocked: %d, want 503", resp.StatusCode)
	}
	waitFor(t, 20*time.Second, "the blocked worker replaced", func() bool {
		pids := c.workerPIDs()
		return len(pids) == 1 && pids[0] != before[0]
	})
	if log := c.log.String(); !strings.Contains(log, "the app did not end a stream Caddy refused once told to") {
		t.Errorf("the log does not say why the worker was terminated:\n%s", tail(log, 20))
	}
}

// TestASGIEventStreamOverHTTP2: server-sent events with gaps longer than
// the request's timeout reach an HTTP/2 client whole (over h2c here): a
// write deadline left armed between events resets an HTTP/2 stream when
// it fires, writing or not.
func TestASGIEventStreamOverHTTP2(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\ttimeout 2s")
	startCaddy(t, "{\n\tadmin {ADMIN}\n\tservers {\n\t\tprotocols h1 h2c\n\t}\n}\n"+config)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Protocols: &protocols}}
	resp, err := client.Get(url + "/sse?n=3&delay=2.5")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || err != nil || strings.Count(string(body), "data: ") != 3 {
		t.Errorf("HTTP/%d, %q, %v: want 3 events over HTTP/2", resp.ProtoMajor, body, err)
	}
}

// TestASGIFailureAfterHead: an app that sends its response head (a cookie,
// a Location, a Content-Length), awaits, then fails before any body. Right
// after its head (within the runtime's HEAD_HOLD) the head was never sent:
// the client gets the runtime's plain 500 with none of it. After its head went out on
// its own, as an event stream's does, the client has that head and the
// response is cut off, never complete. (Caddy's 502 for a failure it reads
// together with the head: the engine's TestFailureAfterHeadLeavesNoAppHeader.)
func TestASGIFailureAfterHead(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "asgi_streams:app", "workers 1")
	startCaddy(t, config)
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(url + "/head-wait-raise?delay=0.5")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Set-Cookie") == "" || err == nil {
		t.Errorf("a head 0.5 s before the failure: %d %q (%v), want the app's head, then the response cut off", resp.StatusCode, body, err)
	}
	for range 10 {
		resp, body := get(t, url+"/head-wait-raise?delay=0") // (get fails on a truncated body)
		if resp.StatusCode != 500 || body != "Internal Server Error\n" || resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("Location") != "" {
			t.Fatalf("a failure right after the head: %d %v %q, want the runtime's plain 500", resp.StatusCode, resp.Header, body)
		}
	}
}

// TestASGIEventStreamHeadComesFirst: an event stream whose first event
// comes after a while gives its client the response head at once (as
// uvicorn does, and Caddy's reverse_proxy for event streams): an
// EventSource opens, and a client that waits a bounded time for headers
// gets them. Caddy held the head until the first event.
func TestASGIEventStreamHeadComesFirst(t *testing.T) {
	t.Parallel()
	config, url := asgiSite(t, "asgi_streams:app", "workers 1")
	startCaddy(t, config)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{ResponseHeaderTimeout: 2 * time.Second}}
	resp, err := client.Get(url + "/sse?n=2&delay=4")
	if err != nil {
		t.Fatalf("an event stream whose first event comes after 4 s: %v (want its head at once)", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || string(body) != "data: 0\n\ndata: 1\n\n" {
		t.Errorf("%d %q %v", resp.StatusCode, body, err)
	}
}

// TestASGIMountedUnderAPrefix: under handle_path, an ASGI app's scope has
// root_path, the mount point, and path, the path the client asked for with
// it, as the ASGI spec has it and Django reads it: Django took root_path
// off a path given without it whenever that path began the same way, so
// /he/hello mounted at /he reached it as "llo" (and /app/app/admin/ passed
// a rule on /app/admin/* as /admin/). FastAPI on Debian 12's Starlette
// (before 0.33), which routes on path without the mount point, is given
// it so.
func TestASGIMountedUnderAPrefix(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	handle_path /he/* {
		asgi djasgi:application {
			dir {APPS}
			python {PYTHON}
			workers 1
			guard warn
		}
	}
	handle_path /hel/* {
		asgi djasgi_starlette:application {
			dir {APPS}
			python {PYTHON}
			workers 1
			guard warn
		}
	}
	handle_path /api/* {
		asgi fastapi_app:app {
			dir {APPS}
			python {PYTHON}
			workers 1
		}
	}
}`, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if resp, body := rawGet(t, "h1", addr, "/he/hello"); resp.StatusCode != 200 || body != "hello from django asgi at /he/hello" {
		t.Errorf("Django mounted at /he, /he/hello: %d %q", resp.StatusCode, body)
	}
	// Django in a worker that imported an old Starlette (Sentry's SDK does): Django's reading still
	if resp, body := rawGet(t, "h1", addr, "/hel/hello"); resp.StatusCode != 200 || body != "hello from django asgi at /hel/hello" {
		t.Errorf("Django (Starlette imported) mounted at /hel, /hel/hello: %d %q", resp.StatusCode, body)
	}
	if resp, body := rawGet(t, "h1", addr, "/api/items/3?q=x"); resp.StatusCode != 200 || !strings.Contains(body, `"item_id":3`) {
		t.Errorf("FastAPI mounted at /api, /api/items/3: %d %q", resp.StatusCode, body)
	}
	resp, body := rawGet(t, "h1", addr, "/api/scope")
	var scope struct {
		RootPath string `json:"root_path"`
		Path     string `json:"path"`
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &scope) != nil || scope.RootPath != "/api" || scope.Path != "/scope" {
		t.Errorf("FastAPI's scope at /api/scope: %d %q", resp.StatusCode, body)
	}
}
