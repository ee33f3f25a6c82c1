package tests

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cWithoutGCFloor is the global options of the tests here that measure
// Caddy's heap: cleartext HTTP/2, and no GC floor (which would keep garbage
// in the heap they read).
const h2cWithoutGCFloor = "{\n\tadmin {ADMIN}\n\tservers {\n\t\tprotocols h1 h2c\n\t}\n\thearth {\n\t\tcaddy_gc_floor off\n\t}\n}\n"

// stalledH2Streams opens an HTTP/2 connection (cleartext, prior knowledge)
// to addr that grants the server no flow-control window, so no byte of any
// answer can reach it, and asks for path on streams of its own. The
// connection is closed when the test ends.
func stalledH2Streams(t *testing.T, addr, path string, streams int) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for i := 0; i < streams; i++ {
		block.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", addr}, {":path", path}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	go dropH2Frames(fr)
	return conn
}

// dropH2Frames reads the server's frames and drops them (its settings,
// acks, the answers' heads), acking its settings, so its writes never wait
// on the connection itself; it returns when the connection closes. It
// writes on fr: start it once the caller is done writing.
func dropH2Frames(fr *http2.Framer) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = fr.WriteSettingsAck()
		}
	}
}

// TestStalledStreamsDoNotHoldMemory: a client that asks for a large page
// on hundreds of HTTP/2 streams and reads none makes Caddy keep no more
// than its held budget (64 MiB) of the answers in memory: the rest waits
// in temporary files, the worker serves every stream meanwhile, and
// another client still gets the page. Before, each stalled stream kept its
// copy of the page (900 KiB here: 180 MiB for 200 streams from one
// client's two connections).
func TestStalledStreamsDoNotHoldMemory(t *testing.T) {
	t.Parallel()
	const connections, perConnection = 2, 100
	// (the 200 requests queue for one worker: a loaded machine could take
	// longer than the default queue_timeout to reach the last, which would
	// get 503, and the count below would never come)
	config, url := site(t, "bigpage:application", "workers 1\n\t\ttimeout 30s\n\t\tqueue_timeout 10m")
	c := startCaddy(t, h2cWithoutGCFloor+config)
	addr := strings.TrimPrefix(url, "http://")
	page := func() {
		t.Helper()
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url + "/?kib=900")
		if err != nil {
			t.Fatalf("GET the page: %v\n%s", err, tail(c.log.String(), 20))
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 900<<10 {
			t.Fatalf("GET the page: status %d, %d bytes\n%s", resp.StatusCode, n, tail(c.log.String(), 20))
		}
	}
	page()
	for i := 0; i < connections; i++ {
		stalledH2Streams(t, addr, "/?kib=900", perConnection)
	}
	served := func() int64 {
		apps, err := c.apps()
		if err != nil || len(apps) != 1 || len(apps[0].Workers) != 1 {
			return 0
		}
		return apps[0].Workers[0].Requests
	}
	// one worker answers every stalled stream: none holds it
	waitFor(t, 3*time.Minute, fmt.Sprintf("the worker answering the %d stalled streams", connections*perConnection), func() bool {
		return served() >= 1+connections*perConnection
	})
	time.Sleep(500 * time.Millisecond) // the last answers taken from the worker
	if held := liveHeap(t, c); held > 120<<20 {
		t.Errorf("with %d streams stalled on a 900 KiB page Caddy holds %d MiB (its held budget is 64 MiB)", connections*perConnection, held>>20)
	}
	page() // another client is served meanwhile
	if apps, err := c.apps(); err != nil || apps[0].Restarts["timeout"] != 0 {
		t.Fatalf("a worker was restarted for its timeout: %+v %v", apps, err)
	}
}

// TestStalledClientsCannotMakeTheGuardHoldErrorPages: the guard holds an
// error page back until it has checked it for a debug page, then until its
// client has taken it. The engine's budget for slow clients does not see
// these pages (the guard takes each at once), so HTTP/2 streams that grant
// no window, each asking for a large error page (a project's own 404.html),
// made Caddy hold every one of them: 600 streams of 240 KiB, 140 MiB. Now
// such pages share 32 MiB across Caddy; past it a page is replaced unread by
// the plain one of its status, and the status is kept. Large pages take at
// most three quarters of it: small ones still come whole.
func TestStalledClientsCannotMakeTheGuardHoldErrorPages(t *testing.T) {
	t.Parallel()
	const connections, perConnection = 6, 100
	const page = "/?kib=240&status=404"
	// (all 600 from one client, past its share of the queue: that share
	// is not what is tested here, the guard's bound is; nor is the queue's
	// timeout, which a loaded machine could reach before the worker has
	// answered them all, and the count below would never be)
	config, url := site(t, "bigpage:application", "workers 1\n\t\tmax_queue_per_client 1024\n\t\tqueue_timeout 10m")
	c := startCaddy(t, h2cWithoutGCFloor+config)
	addr := strings.TrimPrefix(url, "http://")
	// the app's page, whole, when nothing else is held
	if resp, body := get(t, url+page); resp.StatusCode != 404 || len(body) != 240<<10 {
		t.Fatalf("the error page: status %d, %d bytes; want the app's 404 of 240 KiB", resp.StatusCode, len(body))
	}
	base := liveHeap(t, c)
	for i := 0; i < connections; i++ {
		stalledH2Streams(t, addr, page, perConnection)
	}
	waitFor(t, 3*time.Minute, fmt.Sprintf("the worker answering the %d stalled streams", connections*perConnection), func() bool {
		apps, err := c.apps()
		return err == nil && len(apps) == 1 && len(apps[0].Workers) == 1 && apps[0].Workers[0].Requests >= 1+connections*perConnection &&
			apps[0].Workers[0].BusyThreads == 0
	})
	// the pages past the limit are replaced, and the log says so (the
	// heap is read after that: what is still on its way only adds to it)
	waitFor(t, 10*time.Second, "the warning about the pages replaced past the guard's limit", func() bool {
		return strings.Contains(c.log.String(), "guard replaced an error response unread")
	})
	if grown := liveHeap(t, c) - base; grown > 64<<20 {
		t.Errorf("with %d streams stalled on a 240 KiB error page Caddy's heap grew by %d MiB; the guard holds at most 32 MiB of such pages", connections*perConnection, grown>>20)
	}
	// another client gets an answer meanwhile, with its status: the plain
	// page while the stalled streams hold the limit
	if resp, body := get(t, url+page); resp.StatusCode != 404 || (len(body) != 240<<10 && body != "Not Found\n") {
		t.Errorf("another client's error page: status %d, %d bytes; want 404 with the app's page or the plain one", resp.StatusCode, len(body))
	}
	// small error pages (an API's JSON errors) still come whole: large
	// pages take at most three quarters of the limit. 100 more stalled
	// streams of an 8 KiB page fill what large pages left of the whole
	// limit (less than one of them), not the quarter kept for small ones.
	// (A page of 4 KiB or less would not be held: Go's HTTP/2 server takes
	// it into its own buffer.)
	stalledH2Streams(t, addr, "/?kib=8&status=404", 100)
	waitFor(t, 3*time.Minute, "the worker answering 100 more stalled streams", func() bool {
		apps, err := c.apps()
		return err == nil && len(apps) == 1 && len(apps[0].Workers) == 1 && apps[0].Workers[0].Requests >= 2+(connections+1)*perConnection &&
			apps[0].Workers[0].BusyThreads == 0
	})
	// the engine gives a channel back before it writes an answer over 2 KiB
	// to the guard, and nothing tells when the last page is held: a wait (a
	// page not yet held could only let the check below pass)
	time.Sleep(500 * time.Millisecond)
	if resp, body := get(t, url+"/?kib=1&status=404"); resp.StatusCode != 404 || len(body) != 1<<10 {
		t.Errorf("another client's small error page: status %d, %d bytes; want the app's 404 of 1 KiB", resp.StatusCode, len(body))
	}
}

// liveHeap is what Caddy's Go heap holds just after a collection (the
// race detector's shadow memory makes its resident size no measure).
func liveHeap(t *testing.T, c *caddyProc) int64 {
	t.Helper()
	for _, path := range []string{"/debug/pprof/heap?gc=1", "/metrics"} {
		resp, err := http.Get("http://" + c.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(data), "\n") {
			var n float64
			if _, err := fmt.Sscanf(line, "go_memstats_heap_alloc_bytes %g", &n); err == nil {
				return int64(n)
			}
		}
	}
	t.Fatal("no go_memstats_heap_alloc_bytes in Caddy's /metrics")
	return 0
}

// TestStalledASGIStreamsDoNotHoldMemory: an ASGI app streaming 2 MiB in
// 1 MiB chunks to clients that read nothing (60 streams of one HTTP/2
// connection: 120 MiB) makes Caddy keep no more than its held budget (64 MiB) of the
// answers in memory: the rest waits in temporary files, and the app sends
// every answer whole, its channels free for other requests. (Caddy once
// relayed a streamed frame straight from its channel's read buffer, which
// grew to the app's 1 MiB chunk and stayed held while the write to the
// client waited: a megabyte for each stalled stream.)
func TestStalledASGIStreamsDoNotHoldMemory(t *testing.T) {
	t.Parallel()
	const streams = 60
	marker := filepath.Join(t.TempDir(), "marker")
	config, url := asgiSite(t, "asgi_streams:app", "workers 1\n\t\tmax_concurrency 150\n\t\tmax_streams 120\n\t\tmax_open_per_client 120\n\t\tenv STREAM_MARKER "+marker)
	c := startCaddy(t, h2cWithoutGCFloor+config)
	base := liveHeap(t, c)
	stalledH2Streams(t, strings.TrimPrefix(url, "http://"), "/flood?mib=2", streams)
	waitFor(t, 60*time.Second, fmt.Sprintf("the app sending the %d stalled streams whole", streams), func() bool {
		apps, err := c.apps()
		return err == nil && len(apps) == 1 && len(apps[0].Workers) == 1 && apps[0].Workers[0].Requests >= streams && apps[0].Streams == 0
	})
	if apps := c.mustApps(); apps[0].MaxStreams != 120 || apps[0].MaxStreamsShared || !apps[0].MaxWebSocketsShared {
		t.Errorf("/hearth/apps: max_streams %d (shared %v), WebSockets' limit shared %v; want 120 of its own, and WebSockets still sharing half",
			apps[0].MaxStreams, apps[0].MaxStreamsShared, apps[0].MaxWebSocketsShared)
	}
	grown := liveHeap(t, c) - base
	t.Logf("%d stalled streams of 2 MiB: Caddy's heap grew by %d MiB", streams, grown>>20)
	if grown > 100<<20 {
		t.Errorf("%d streams stalled on an ASGI app's 2 MiB answers grew Caddy's heap by %d MiB (its held budget is 64 MiB)", streams, grown>>20)
	}
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || !strings.HasPrefix(body, "hello from") {
		t.Errorf("a request beside the stalled streams: %d %q", resp.StatusCode, body)
	}
}

// TestStalledClientsOfTinyPiecesCostWhatTheyCount: an ASGI app that streams
// its answer in tiny body messages (an event stream, a CSV a row at a
// time) to clients that read nothing makes Caddy hold about what it counts
// in its held budget. Each message used to be kept as a chunk of its own,
// costing Caddy 30 to 50 bytes more than it counted, and an empty message
// (Starlette sends every piece a generator yields) counted nothing at all:
// no bound.
func TestStalledClientsOfTinyPiecesCostWhatTheyCount(t *testing.T) {
	t.Parallel()
	const streams, pieces = 8, 100_000
	config, url := asgiSite(t, "asgi_streams:app", "workers 1")
	c := startCaddy(t, h2cWithoutGCFloor+config)
	get(t, url+"/")
	base := liveHeap(t, c)
	addr := strings.TrimPrefix(url, "http://")
	stalledH2Streams(t, addr, fmt.Sprintf("/drip?n=%d&size=0", pieces), streams/2)
	stalledH2Streams(t, addr, fmt.Sprintf("/drip?n=%d&size=1", pieces), streams/2)
	waitFor(t, 90*time.Second, fmt.Sprintf("the app sending the %d stalled answers whole", streams), func() bool {
		apps, err := c.apps()
		return err == nil && len(apps) == 1 && len(apps[0].Workers) == 1 && apps[0].Workers[0].Requests > streams && apps[0].Streams == 0
	})
	grown := liveHeap(t, c) - base
	t.Logf("%d stalled answers of %d empty or one-byte pieces: Caddy's heap grew by %d KiB", streams, pieces, grown>>10)
	// what the budget counts: 100 KB for each one-byte answer, nothing
	// for the empty ones; each stream costs Go's HTTP/2 server some more
	if grown > 4<<20 {
		t.Errorf("%d answers stalled on %d pieces of 0 or 1 byte each grew Caddy's heap by %d MiB, where its budget counts 0.4 MiB", streams, pieces, grown>>20)
	}
	if resp, body := get(t, url+"/drip?n=1000&size=1"); resp.StatusCode != 200 || body != strings.Repeat("x", 1000)+"end" {
		t.Errorf("an answer of 1000 one-byte pieces beside them: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// TestIdleChannelsLetGoOfLargeAnswers: a channel's read buffer grows to the
// largest frame it carries (an ASGI answer of up to 1 MiB comes whole, in
// one frame) and was given back only at the channel's next small frame. A
// pool takes the channels freed last first, so after one burst of 100 large
// answers at once most channels sat idle holding a megabyte each, for the
// life of their worker: 100 MiB here.
func TestIdleChannelsLetGoOfLargeAnswers(t *testing.T) {
	t.Parallel()
	const burst = 100
	config, url := asgiSite(t, "asgi_streams:app", fmt.Sprintf("workers 1\n\t\tmax_concurrency %d", burst))
	c := startCaddy(t, "{\n\tadmin {ADMIN}\n\thearth {\n\t\tcaddy_gc_floor off\n\t}\n}\n"+config)
	get(t, url+"/")
	base := liveHeap(t, c)
	transport := &http.Transport{MaxIdleConnsPerHost: burst}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	errs := make(chan error, burst)
	for range burst {
		go func() {
			resp, err := client.Get(url + "/big?kib=1000&wait=0.5") // all at once, each on a channel of its own
			if err == nil {
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || n != 1000<<10 {
					err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
				}
			}
			errs <- err
		}()
	}
	for range burst {
		if err := <-errs; err != nil {
			t.Fatalf("a large answer: %v", err)
		}
	}
	if apps := c.mustApps(); apps[0].Workers[0].Requests < burst {
		t.Fatalf("the worker served %d requests, want the %d of the burst", apps[0].Workers[0].Requests, burst)
	}
	for range 3 { // small answers after it, on the channels freed last
		if resp, body := get(t, url+"/"); resp.StatusCode != 200 || !strings.HasPrefix(body, "hello") {
			t.Fatalf("a small answer after the burst: %d %q", resp.StatusCode, body)
		}
	}
	transport.CloseIdleConnections()
	if grown := liveHeap(t, c) - base; grown > 40<<20 {
		t.Errorf("after a burst of %d answers of 1000 KiB, with the app's channels idle, Caddy's heap is %d MiB larger (each channel keeps 64 KiB)", burst, grown>>20)
	}
}

// declaredBodies opens an HTTP/2 connection (cleartext, prior knowledge)
// to addr and sends n POSTs on it, each declaring a body of 100,000 bytes
// and sending none of it, or one byte where trickle says: the framer, to
// read the answers with. The connection is closed when the test ends.
func declaredBodies(t *testing.T, addr string, n int, trickle func(stream int) bool) *http2.Framer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	io.WriteString(conn, http2.ClientPreface)
	fr := http2.NewFramer(conn, conn)
	fr.WriteSettings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for s := 0; s < n; s++ {
		block.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", addr}, {":path", "/"}, {"content-length", "100000"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*s + 1), BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if trickle(s) {
			if err := fr.WriteData(uint32(2*s+1), false, []byte{'x'}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return fr
}

// TestDeclaredBodiesThatNeverComeCostLittle: HTTP/2 streams that declare a
// request body and send none of it, or a byte (a POST's HEADERS with a
// Content-Length, then nothing), cost Caddy little memory each while it
// waits for the rest. Each used
// to cost 48 KiB outside the held budget (the copy's 32 KiB read buffer and
// 16 KiB set aside for the body): 12 MiB for one connection's 250 streams,
// and connections are not counted.
func TestDeclaredBodiesThatNeverComeCostLittle(t *testing.T) {
	t.Parallel()
	const connections, perConnection = 4, 200
	// (one client may hold as many bodies as it may have requests queued
	// and running: 257 with the defaults here; raised for the 800)
	config, url := site(t, "hello:application", "workers 1\n\t\tmax_queue_per_client 1000")
	c := startCaddy(t, h2cWithoutGCFloor+config)
	addr := strings.TrimPrefix(url, "http://")
	get(t, url+"/")
	goroutines := func() int {
		resp, err := http.Get("http://" + c.admin + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var n int
		fmt.Fscanf(resp.Body, "goroutine profile: total %d", &n)
		return n
	}
	baseGoroutines, base := goroutines(), liveHeap(t, c)
	for i := 0; i < connections; i++ {
		// half of them send one byte of it (once unlocking 48 KiB too)
		go dropH2Frames(declaredBodies(t, addr, perConnection, func(s int) bool { return s%2 == 1 }))
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("the %d streams' handlers waiting for their bodies", connections*perConnection), func() bool {
		return goroutines() >= baseGoroutines+connections*perConnection
	})
	grown := liveHeap(t, c) - base
	if perStream := grown / (connections * perConnection); perStream > 36<<10 {
		t.Errorf("%d streams waiting for bodies that never come grew Caddy's heap by %d MiB, %d KiB each; want under 36 KiB each (Go keeps up to 16 KiB of a stream that sent a byte)", connections*perConnection, grown>>20, perStream>>10)
	} else {
		t.Logf("%d KiB of heap per stream waiting for its body", perStream>>10)
	}
	if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != "Hello, world!\n" {
		t.Errorf("another client meanwhile: %d %q", resp.StatusCode, body)
	}
}

// TestOneClientHoldsABoundedNumberOfBodies: one client trickling a byte of
// a declared body into each of 300 HTTP/2 streams (on two connections: Go
// serves 250 at once on one) has as many of them held as it may have
// requests queued and running (max_queue_per_client, 256 by default, and
// the app's one channel): the rest get 429 at once, before any of their
// bodies is read, and the refusals are counted. Each held a read buffer
// and a goroutine (and past the budget's memory, a file descriptor)
// within the client's share of the budget's bytes.
func TestOneClientHoldsABoundedNumberOfBodies(t *testing.T) {
	t.Parallel()
	const connections, perConnection, held = 2, 150, 257
	config, url := site(t, "hello:application", "workers 1")
	c := startCaddy(t, h2cWithoutGCFloor+config)
	addr := strings.TrimPrefix(url, "http://")
	get(t, url+"/")
	answers := make(chan string, connections*perConnection)
	for i := 0; i < connections; i++ {
		fr := declaredBodies(t, addr, perConnection, func(int) bool { return true })
		go func() { // each answer's status
			dec := hpack.NewDecoder(4096, nil)
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if !f.IsAck() {
						fr.WriteSettingsAck()
					}
				case *http2.HeadersFrame:
					fields, _ := dec.DecodeFull(f.HeaderBlockFragment())
					for _, hf := range fields {
						if hf.Name == ":status" {
							answers <- hf.Value
						}
					}
				}
			}
		}()
	}
	statuses := map[string]int{}
	for timeout := time.After(20 * time.Second); statuses["429"] < connections*perConnection-held; {
		select {
		case status := <-answers:
			statuses[status]++
		case <-timeout:
			t.Fatalf("20 s on, the answers to %d streams of one client with bodies under way: %v; want %d 429s", connections*perConnection, statuses, connections*perConnection-held)
		}
	}
	if len(statuses) != 1 {
		t.Errorf("answers before the rest of any body came: %v, want only 429s", statuses)
	}
	metrics := adminGet(t, "http://"+c.admin+"/metrics")
	if !strings.Contains(metrics, fmt.Sprintf(`hearth_refused_requests_total{app="hello",reason="client_bodies"} %d`, connections*perConnection-held)) {
		t.Errorf("the refusals are not counted as client_bodies:\n%s", tail(metrics, 40))
	}
}
