package tests

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// site returns a Caddyfile serving the WSGI app from the test apps on a
// fresh loopback port, and its URL.
func site(t *testing.T, app, options string) (string, string) {
	return appSite(t, "wsgi", app, "{APPS}", options)
}

// appSite returns a Caddyfile whose one site, on a fresh loopback port,
// runs app from dir with the handler (wsgi or asgi) and its options, and
// the site's URL.
func appSite(t *testing.T, handler, app, dir, options string) (string, string) {
	port := freePort(t)
	return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	%s %s {
		dir %s
		python {PYTHON}
		%s
	}
}
`, port, handler, app, dir, options), fmt.Sprintf("http://127.0.0.1:%d", port)
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := freshConnClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(body)
}

type echoReply struct {
	Environ      map[string]string `json:"environ"`
	Multithread  bool              `json:"multithread"`
	Multiprocess bool              `json:"multiprocess"`
	BodySHA256   string            `json:"body_sha256"`
	BodySize     int64             `json:"body_size"`
	Pid          int               `json:"pid"`
}

func decodeEcho(t *testing.T, body string) echoReply {
	t.Helper()
	var e echoReply
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("echo reply is not JSON (%v): %s", err, body)
	}
	return e
}

func TestHelloAndStatus(t *testing.T) {
	t.Parallel()
	config, url := site(t, "hello:application", "workers 2")
	c := startCaddy(t, config)
	resp, body := get(t, url+"/")
	if resp.StatusCode != 200 || body != "Hello, world!\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Type") != "text/plain" || resp.Header.Get("Content-Length") != "14" {
		t.Errorf("headers: %v", resp.Header)
	}
	apps := c.mustApps()
	if len(apps) != 1 || apps[0].Name != "hello" || len(apps[0].Workers) != 2 {
		t.Fatalf("status: %+v", apps)
	}
	var served int64
	for _, w := range apps[0].Workers {
		if w.Pid <= 0 || w.StartedAt.IsZero() || w.State != "idle" {
			t.Errorf("worker status: %+v", w)
		}
		served += w.Requests
	}
	if served != 1 {
		t.Errorf("workers served %d requests in total, want 1", served)
	}
	// the admin routes refuse what they do not know
	resp, _ = get(t, "http://"+c.admin+"/hearth/apps/nosuchapp")
	if resp.StatusCode != 404 {
		t.Errorf("unknown app: status %d", resp.StatusCode)
	}
	r, err := http.Post("http://"+c.admin+"/hearth/apps", "text/plain", nil)
	if err != nil || r.StatusCode != 405 {
		t.Errorf("POST /hearth/apps: %v %v", r.StatusCode, err)
	}
}

func TestEnviron(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := startCaddy(t, fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	handle_path /mounted/* {
		wsgi echo:application {
			dir {APPS}
			python {PYTHON}
			workers 1
		}
	}
	wsgi echo:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}
`, port))
	_ = c
	req, _ := http.NewRequest("POST", url+"/some/p%C3%A4th?x=1&y=%20", strings.NewReader("hello body"))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	req.Header.Set("X_Spoofed", "dropped")
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	e := decodeEcho(t, string(raw))
	want := map[string]string{
		"REQUEST_METHOD":  "POST",
		"SCRIPT_NAME":     "",
		"PATH_INFO":       "/some/p\u00c3\u00a4th", // UTF-8 bytes decoded as latin-1 (PEP 3333)
		"QUERY_STRING":    "x=1&y=%20",
		"CONTENT_TYPE":    "text/plain",
		"CONTENT_LENGTH":  "10",
		"SERVER_NAME":     "127.0.0.1",
		"SERVER_PORT":     fmt.Sprint(port),
		"SERVER_PROTOCOL": "HTTP/1.1",
		"REMOTE_ADDR":     "127.0.0.1",
		"wsgi.url_scheme": "http",
		"HTTP_HOST":       fmt.Sprintf("127.0.0.1:%d", port),
		"HTTP_X_MULTI":    "one, two",
		"HTTP_COOKIE":     "a=1; b=2",
	}
	for k, v := range want {
		if got, ok := e.Environ[k]; !ok || got != v {
			t.Errorf("environ[%s] = %q (present %v), want %q", k, got, ok, v)
		}
	}
	for _, k := range []string{"HTTP_X_SPOOFED", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"} {
		if _, ok := e.Environ[k]; ok {
			t.Errorf("environ has %s", k)
		}
	}
	if e.Environ["REMOTE_PORT"] == "" || e.Environ["REMOTE_PORT"] == "0" {
		t.Errorf("REMOTE_PORT = %q", e.Environ["REMOTE_PORT"])
	}
	if e.BodySize != 10 || e.BodySHA256 != sha("hello body") {
		t.Errorf("body: %d %s", e.BodySize, e.BodySHA256)
	}
	if e.Multithread || !e.Multiprocess {
		t.Errorf("multithread %v multiprocess %v", e.Multithread, e.Multiprocess)
	}

	// mounted under handle_path: SCRIPT_NAME is the mount point
	_, body := get(t, url+"/mounted/inner/page")
	e = decodeEcho(t, body)
	if e.Environ["SCRIPT_NAME"] != "/mounted" || e.Environ["PATH_INFO"] != "/inner/page" {
		t.Errorf("mounted: SCRIPT_NAME %q PATH_INFO %q", e.Environ["SCRIPT_NAME"], e.Environ["PATH_INFO"])
	}
	// a GET has no CONTENT_LENGTH and an empty body
	if _, ok := e.Environ["CONTENT_LENGTH"]; ok || e.BodySize != 0 {
		t.Errorf("GET: CONTENT_LENGTH %q, body %d", e.Environ["CONTENT_LENGTH"], e.BodySize)
	}
	// wsgi.errors goes to Caddy's log with the app name and pid
	waitFor(t, 5*time.Second, "wsgi.errors line in the log", func() bool {
		return strings.Contains(c.log.String(), "echo saw GET /inner/page")
	})
	for _, line := range strings.Split(c.log.String(), "\n") {
		if strings.Contains(line, "echo saw GET /inner/page") {
			var entry map[string]any
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Fatalf("log line is not JSON: %s", line)
			}
			if entry["app"] != "echo" || entry["pid"] == nil || entry["stream"] != "stderr" {
				t.Errorf("log entry lacks app/pid/stream: %s", line)
			}
		}
	}
}

func TestChunkedUploadAndReadline(t *testing.T) {
	t.Parallel()
	config, url := site(t, "lines:application", "workers 1")
	startCaddy(t, config)
	// a body without Content-Length (chunked): Caddy buffers it and tells
	// the app its real length
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("first line\nsecond"))
		pw.Write([]byte(" line\nthird\nfourth"))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", url+"/", pr)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got struct {
		First  string   `json:"first"`
		Second string   `json:"second"`
		Rest   []string `json:"rest"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("%d %s", resp.StatusCode, raw)
	}
	if got.First != "first line\n" || got.Second != "seco" || strings.Join(got.Rest, "|") != "nd line\n|third\n|fourth" {
		t.Errorf("readline results: %+v", got)
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestStreamingResponse(t *testing.T) {
	t.Parallel()
	config, url := site(t, "stream:application", "workers 1")
	startCaddy(t, config)
	resp, err := http.Get(url + "/gen?n=4&delay=0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	reader := bufio.NewReader(resp.Body)
	var arrivals []time.Time
	for {
		line, err := reader.ReadString('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		arrivals = append(arrivals, time.Now())
		if !strings.HasPrefix(line, fmt.Sprintf("chunk %d ", len(arrivals)-1)) {
			t.Fatalf("line %d: %q", len(arrivals), line)
		}
	}
	if len(arrivals) != 4 {
		t.Fatalf("got %d chunks", len(arrivals))
	}
	// chunks arrive as the app yields them, not all at the end: the first
	// one is read while the app still sleeps before the last
	if spread := arrivals[3].Sub(arrivals[0]); spread < 800*time.Millisecond {
		t.Errorf("chunks arrived together (spread %s): the response was accumulated, not streamed", spread)
	}
	_, body := get(t, url+"/write")
	if body != "written-1\nwritten-2\nreturned\n" {
		t.Errorf("write() callable: %q", body)
	}
	// write(b'') sends the headers at once (PEP 3333), before the app
	// goes on: here it waits for the test to have them
	marker := filepath.Join(t.TempDir(), "go on")
	transport := &http.Transport{ResponseHeaderTimeout: 15 * time.Second}
	defer transport.CloseIdleConnections()
	resp, err = (&http.Client{Transport: transport}).Get(url + "/headers-first?marker=" + neturl.QueryEscape(marker))
	if err != nil {
		t.Fatalf("the headers of an app that called write(b'') and waits: %v", err)
	}
	defer resp.Body.Close()
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err := io.ReadAll(resp.Body); err != nil || string(data) != "after\n" {
		t.Errorf("the body after write(b''): %q %v", data, err)
	}
}

func TestLargeResponseAndUpload(t *testing.T) {
	t.Parallel()
	config, url := site(t, "stream:application", "workers 1")
	c := startCaddy(t, config)
	get(t, url+"/big?mb=1") // warm: buffers and pools in use once
	base := rssKiB(t, c.cmd.Process.Pid)
	resp, err := http.Get(url + "/big?mb=50")
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat(func() []byte {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}(), 4096)
	want := sha256.New()
	for i := 0; i < 50; i++ {
		want.Write(chunk)
	}
	got := sha256.New()
	// read slowly at first: the worker must not wait for us, and caddy's
	// memory must stay bounded while it holds the rest
	buf := make([]byte, 64<<10)
	n, _ := io.ReadFull(resp.Body, buf)
	got.Write(buf[:n])
	waitFor(t, 20*time.Second, "the worker to be free while the client is slow", func() bool {
		apps := c.mustApps()
		return len(apps) == 1 && len(apps[0].Workers) == 1 && apps[0].Workers[0].State == "idle" && apps[0].Workers[0].Requests == 2 // the warm-up, then this one
	})
	rss := rssKiB(t, c.cmd.Process.Pid)
	copied, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || copied+int64(n) != 50<<20 {
		t.Fatalf("read %d bytes: %v", copied+int64(n), err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("50 MB response corrupted")
	}
	// measured as growth, so that it holds for the race detector's build
	// too (whose memory use is several times larger)
	if rss-base > 40<<10 {
		t.Errorf("caddy RSS grew by %d KiB (from %d KiB) while holding a 50 MB response for a slow client", rss-base, base)
	}

	// upload 50 MB: the app sees every byte
	echoConfig, echoURL := site(t, "echo:application", "workers 1")
	startCaddy(t, echoConfig)
	payload := make([]byte, 50<<20)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	r, err := http.Post(echoURL+"/upload", "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(r.Body)
	r.Body.Close()
	e := decodeEcho(t, string(raw))
	if e.BodySize != 50<<20 || e.BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("upload: size %d sha %s", e.BodySize, e.BodySHA256)
	}
}

// rssKiB is the resident memory of a process.
func rssKiB(t *testing.T, pid int) int {
	return procStatusKiB(t, pid, "VmRSS")
}

// procStatusKiB is a size field of a process's /proc status (VmRSS, VmHWM
// for its peak resident memory).
func procStatusKiB(t *testing.T, pid int, field string) int {
	data, err := readFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(data, "\n") {
		if strings.HasPrefix(line, field+":") {
			var kib int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, field+":")), "%d", &kib)
			return kib
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func TestMaxBody(t *testing.T) {
	t.Parallel()
	config, url := site(t, "echo:application", "workers 1\n\t\tmax_body 1KB")
	startCaddy(t, config)
	r, err := http.Post(url+"/", "text/plain", strings.NewReader(strings.Repeat("x", 1001)))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 413 {
		t.Errorf("1001 bytes over max_body 1KB: status %d", r.StatusCode)
	}
	r, err = http.Post(url+"/", "text/plain", strings.NewReader(strings.Repeat("x", 1000)))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Errorf("1000 bytes: status %d", r.StatusCode)
	}
}

// TestResponseSpoolFailureCutsTheResponse: a response Caddy cannot buffer
// for a slow client (its spill file may not grow: here a file size limit,
// as a full disk) ends cut off, never complete-looking: without a
// Content-Length, a client could not tell the difference.
func TestResponseSpoolFailureCutsTheResponse(t *testing.T) {
	t.Parallel()
	config, url := site(t, "stream:application", "workers 1")
	c := newCaddyProc(t, config, "")
	c.cmd = exec.Command("prlimit", append([]string{"--fsize=4000000", "--"}, c.cmd.Args...)...)
	c.cmd.Env = append(os.Environ(), "HOME="+c.dir, "XDG_DATA_HOME="+c.dir+"/data", "XDG_CONFIG_HOME="+c.dir+"/config")
	c.start()
	c.waitRunning()
	resp, err := http.Get(url + "/big?mb=20&chunked=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(2 * time.Second) // the client reads nothing for a while: the rest waits in the spool
	n, err := io.Copy(io.Discard, resp.Body)
	if n >= 20<<20 {
		t.Skipf("the whole response came through (%d bytes): the spool never reached its file's size limit", n)
	}
	if err == nil {
		t.Errorf("a response cut off at %d of %d bytes looked complete", n, 20<<20)
	}
	waitFor(t, 10*time.Second, "the failure in the log", func() bool {
		return strings.Contains(c.log.String(), "buffering the response")
	})
	if resp, body := get(t, url+"/gen?n=2&delay=0"); resp.StatusCode != 200 || strings.Count(body, "chunk ") != 2 {
		t.Errorf("after the cut-off response: %d %q", resp.StatusCode, body)
	}
}

// TestSlowClientGivenUp: a client that accepts nothing of a response for
// longer than Caddy's write_idle is given up (its connection closed, the
// rest of the response dropped, the response cut off, never complete),
// and the worker, done with it at once (the spool), serves on.
func TestSlowClientGivenUp(t *testing.T) {
	t.Parallel()
	config, url := site(t, "stream:application", "workers 1")
	startCaddy(t, "{\n\tadmin {ADMIN}\n\tservers {\n\t\ttimeouts {\n\t\t\twrite_idle 3s\n\t\t}\n\t}\n}\n"+config)
	host := strings.TrimPrefix(url, "http://")
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 48 MiB: more than the kernel's buffers on the way hold, so Caddy's
	// writes wait for the client; the worker is done at once (the spool)
	fmt.Fprintf(conn, "GET /big?mb=48&chunked=1 HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	time.Sleep(10 * time.Second) // reads nothing for three times the timeout
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if n >= 48<<20 {
		t.Errorf("a client that read nothing for 10 s (write_idle 3s) got the whole response (%d bytes)", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the connection of a client given up stayed open (%d bytes read): %v", n, err)
	}
	if resp, body := get(t, url+"/gen?n=2&delay=0"); resp.StatusCode != 200 || strings.Count(body, "chunk ") != 2 {
		t.Errorf("after the slow client: %d %q", resp.StatusCode, body)
	}
}

func TestAppException(t *testing.T) {
	t.Parallel()
	config, url := site(t, "fail:application", "workers 1")
	c := startCaddy(t, config)
	before := c.workerPIDs()
	resp, body := get(t, url+"/raise")
	if resp.StatusCode != 500 {
		t.Errorf("status %d", resp.StatusCode)
	}
	if strings.Contains(body, "secret-marker") || strings.Contains(body, "Traceback") {
		t.Errorf("the traceback leaked into the response: %q", body)
	}
	waitFor(t, 5*time.Second, "the traceback in the log", func() bool {
		log := c.log.String()
		return strings.Contains(log, "Traceback") && strings.Contains(log, "DeliberateFailure: the app failed on purpose")
	})
	// a failure after the first chunk: the client sees a truncated body,
	// never a complete-looking one
	resp2, err := http.Get(url + "/midway")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if err == nil {
		t.Errorf("a response the app aborted midway looked complete")
	}
	// a body of str (the app's bug, found before anything was sent): a
	// plain 500; the runtime sent an abort where Caddy expected the head,
	// and Caddy killed the worker with every thread's request
	if resp, body := get(t, url+"/str"); resp.StatusCode != 500 || strings.Contains(body, "text, not bytes") {
		t.Errorf("a body of str: %d %q", resp.StatusCode, body)
	}
	// the worker survives them all
	resp, body = get(t, url+"/")
	if want := fmt.Sprintf("hello from %d\n", before[0]); resp.StatusCode != 200 || body != want {
		t.Errorf("after failures: %d %q, want %q (the same worker)", resp.StatusCode, body, want)
	}
}

// TestAppOSErrorIsTheApps: an OSError the app raises (a missing file, a
// refused database connection) is answered like any other error of the
// app (a 500, or a truncated body once the response began), and the worker
// that served it goes on; the worker runtime took it for its connection to
// Caddy failing and exited (WSGI), or sent nothing until the request's
// timeout killed the worker (ASGI).
func TestAppOSErrorIsTheApps(t *testing.T) {
	t.Parallel()
	for _, handler := range []string{"wsgi", "asgi"} {
		t.Run(handler, func(t *testing.T) {
			app := map[string]string{"wsgi": "oserror:application", "asgi": "oserror:app"}[handler]
			config, url := appSite(t, handler, app, "{APPS}", "workers 1\n\t\ttimeout 20s")
			c := startCaddy(t, config)
			before := c.workerPIDs()
			client := &http.Client{Timeout: 10 * time.Second}
			resp, err := client.Get(url + "/before")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 500 || strings.Contains(string(body), "missing-template") {
				t.Errorf("/before: %d %q", resp.StatusCode, body)
			}
			resp, err = client.Get(url + "/midway")
			if err != nil {
				t.Fatal(err)
			}
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil || string(body) != "first part\n" {
				t.Errorf("/midway: %q %v, want the first part and then a truncated body", body, err)
			}
			resp, got := get(t, url+"/")
			if resp.StatusCode != 200 || got != fmt.Sprintf("hello from %d\n", before[0]) {
				t.Errorf("after the app's OSErrors: %d %q, want the same worker (pid %d)", resp.StatusCode, got, before[0])
			}
			if after := c.workerPIDs(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("workers %v before, %v after", before, after)
			}
			waitFor(t, 10*time.Second, "the app's tracebacks in the log", func() bool {
				log := c.log.String()
				return strings.Contains(log, "FileNotFoundError") && strings.Contains(log, "ConnectionRefusedError")
			})
		})
	}
}

func TestImportFailureRefusesConfig(t *testing.T) {
	t.Parallel()
	config, _ := site(t, "broken_import:application", "workers 2")
	c := launchCaddy(t, config)
	code := c.waitExit(60 * time.Second)
	if code == 0 {
		t.Fatalf("caddy run exited 0 with an app that cannot be imported")
	}
	log := c.log.String()
	for _, want := range []string{"Traceback", "json.decoder.JSONDecodeError", "broken_import.py"} {
		if !strings.Contains(log, want) {
			t.Errorf("the error lacks %q:\n%s", want, tail(log, 30))
		}
	}
}

func TestQueueLimits(t *testing.T) {
	t.Parallel()
	config, url := site(t, "fail:application", "workers 1\n\t\tmax_queue 1\n\t\tqueue_timeout 1s")
	c := startCaddy(t, config)
	results := make(chan *http.Response, 3)
	send := func() {
		go func() {
			r, err := http.Get(url + "/slow?3")
			if err != nil {
				results <- nil
				return
			}
			r.Body.Close()
			results <- r
		}()
	}
	// the first request takes the only worker, the second waits in the
	// queue, the third finds the queue full
	send()
	waitFor(t, 10*time.Second, "the worker busy", func() bool { return c.mustApps()[0].Workers[0].State == "busy" })
	send()
	waitFor(t, 10*time.Second, "one request queued", func() bool { return c.mustApps()[0].Queue == 1 })
	send()
	counts := map[int]int{}
	for i := 0; i < 3; i++ {
		r := <-results
		if r == nil {
			t.Fatal("request failed")
		}
		counts[r.StatusCode]++
		if r.StatusCode == 503 && r.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
	}
	// one runs, one waits past queue_timeout, one finds the queue full
	if counts[200] != 1 || counts[503] != 2 {
		t.Errorf("status counts %v", counts)
	}
}

// TestOneClientCannotTakeTheWholeQueue: one client's requests may fill
// max_queue_per_client of the queue, and its next gets 429 with
// Retry-After at once, while another client (another address: 127.0.0.2,
// loopback too) still gets a place and is served. One client with more
// requests in flight than max_queue used to have every other client
// answered 503 (queue_full) for as long as it kept them there.
func TestOneClientCannotTakeTheWholeQueue(t *testing.T) {
	t.Parallel()
	config, url := site(t, "fail:application", "workers 1\n\t\tpipeline off\n\t\tmax_queue 4\n\t\tmax_queue_per_client 2\n\t\tqueue_timeout 30s")
	c := startCaddy(t, config)
	one, other := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	type result struct {
		who    string
		status int
		err    error
	}
	results := make(chan result, 5)
	send := func(client *http.Client, who, path string) {
		go func() {
			resp, err := client.Get(url + path)
			if err != nil {
				results <- result{who, 0, err}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- result{who, resp.StatusCode, nil}
		}()
	}
	// the worker held until the test has seen all it checks
	hold := filepath.Join(t.TempDir(), "let go")
	send(one, "the first client's first", "/hold?"+neturl.QueryEscape(hold))
	waitFor(t, 10*time.Second, "the worker busy", func() bool { return c.mustApps()[0].Workers[0].State == "busy" })
	for i := 1; i <= 2; i++ {
		send(one, "the first client's queued", "/slow?0.05")
		waitFor(t, 10*time.Second, fmt.Sprintf("%d requests queued", i), func() bool { return c.mustApps()[0].Queue == i })
	}
	// its share of the queue is taken: refused at once, with 429
	resp, err := one.Get(url + "/slow?0.05")
	if err != nil {
		t.Fatalf("the first client's request past its share: %v (it waited: it should have had 429 at once)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("the first client's request past its share: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// another client still has the rest of the queue
	send(other, "the other client's", "/slow?0.05")
	waitFor(t, 10*time.Second, "the other client's request queued", func() bool { return c.mustApps()[0].Queue == 3 })
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		r := <-results
		if r.err != nil || r.status != 200 {
			t.Errorf("%s request: %d %v", r.who, r.status, r.err)
		}
	}
	if got := scrape(t, c)[`hearth_refused_requests_total{app="fail",reason="client_queue_full"}`]; got != 1 {
		t.Errorf("hearth_refused_requests_total for client_queue_full: %v, want 1", got)
	}
	// a 4xx is logged at Caddy's debug level only: Hearth warns, saying
	// what to change if the client is a proxy
	waitFor(t, 10*time.Second, "the warning naming the client and what to change", func() bool {
		return warned(c, "client 127.0.0.1 already has 2 requests waiting for a worker, its max_queue_per_client", "trusted_proxies")
	})
	// the share is given back as the requests leave the queue
	if resp, _ := get(t, url+"/"); resp.StatusCode != 200 {
		t.Errorf("the first client's request once the queue emptied: %d", resp.StatusCode)
	}
}

// TestOneClientCannotHoldUpAnother: the queue is served in turns among
// clients, so a request of another client (127.0.0.2) that queues behind
// twenty of one client's is served second, not twenty-first, and each
// client's requests keep their order. With one worker and a
// first-in-first-out queue, a client's queued slow requests held up every
// other visitor by all of them (256 of one second each, its share by
// default, past queue_timeout).
func TestOneClientCannotHoldUpAnother(t *testing.T) {
	t.Parallel()
	config, url := site(t, "fail:application", "workers 1\n\t\tpipeline off\n\t\tqueue_timeout 60s")
	c := startCaddy(t, config)
	one, other := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	type result struct {
		who   string // "other", or the first client's request number
		order int    // its place in the worker's order of /order requests
		err   error
	}
	const flood = 20
	results := make(chan result, flood+1)
	send := func(client *http.Client, who string) {
		go func() {
			resp, err := client.Get(url + "/order")
			if err != nil {
				results <- result{who: who, err: err}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r := result{who: who}
			if _, err := fmt.Sscan(string(body), &r.order); err != nil || resp.StatusCode != 200 {
				r.err = fmt.Errorf("%d %q", resp.StatusCode, body)
			}
			results <- r
		}()
	}
	hold := filepath.Join(t.TempDir(), "let go")
	go func() {
		if resp, err := one.Get(url + "/hold?" + neturl.QueryEscape(hold)); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, 10*time.Second, "the worker busy", func() bool { return c.mustApps()[0].Workers[0].State == "busy" })
	for i := 1; i <= flood; i++ {
		send(one, strconv.Itoa(i))
		waitFor(t, 10*time.Second, fmt.Sprintf("%d requests queued", i), func() bool { return c.mustApps()[0].Queue == i })
	}
	send(other, "other")
	waitFor(t, 10*time.Second, "the other client's request queued", func() bool { return c.mustApps()[0].Queue == flood+1 })
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// the worker's order: the first of the flood, the other client's,
	// then the rest of the flood in the order it was sent
	want := map[string]int{"other": 2, "1": 1}
	for i := 2; i <= flood; i++ {
		want[strconv.Itoa(i)] = i + 1
	}
	for range flood + 1 {
		r := <-results
		if r.err != nil {
			t.Fatalf("request %s: %v", r.who, r.err)
		}
		if r.order != want[r.who] {
			t.Errorf("request %s was the worker's %dth, want %dth (the other client's second, each client's in order)", r.who, r.order, want[r.who])
		}
	}
}

// clientFrom is an HTTP client whose connections come from ip, an address
// of the loopback network other than 127.0.0.1 when a test needs two
// clients Caddy tells apart. It keeps no connection alive.
func clientFrom(ip string) *http.Client {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}}
}

// warned reports whether Caddy's log has a warning that says all of what.
func warned(c *caddyProc, what ...string) bool {
	for _, line := range strings.Split(c.log.String(), "\n") {
		if !strings.Contains(line, `"level":"warn"`) {
			continue
		}
		all := true
		for _, w := range what {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// TestDjangoErrorsReachCaddysLog: a Django view that raises, with DEBUG
// off and no LOGGING (where Django logs nothing, mailing ADMINS only),
// leaves its traceback in Caddy's log once, with the method and path;
// the visitor gets Django's plain 500.
func TestDjangoErrorsReachCaddysLog(t *testing.T) {
	t.Parallel()
	config, url := site(t, "djerrors:application", "workers 1\n\t\tguard warn")
	c := startCaddy(t, config)
	if resp, body := get(t, url+"/ok"); resp.StatusCode != 200 || body != "fine" {
		t.Fatalf("/ok: %d %q", resp.StatusCode, body)
	}
	resp, body := get(t, url+"/boom")
	if resp.StatusCode != 500 || strings.Contains(body, "hearth-test-view-failed") {
		t.Errorf("/boom: %d %q", resp.StatusCode, body)
	}
	waitFor(t, 10*time.Second, "the traceback in Caddy's log", func() bool {
		return strings.Contains(c.log.String(), "RuntimeError: hearth-test-view-failed")
	})
	log := c.log.String()
	if n := strings.Count(log, "RuntimeError: hearth-test-view-failed"); n != 1 {
		t.Errorf("the error is in Caddy's log %d times, want once:\n%s", n, tail(log, 30))
	}
	for _, want := range []string{"request error (GET): Internal Server Error: /boom", "Traceback (most recent call last)", "in boom"} {
		if !strings.Contains(log, want) {
			t.Errorf("Caddy's log lacks %q:\n%s", want, tail(log, 30))
		}
	}
}

// TestFlaskAndASGIErrorsReachCaddysLog: the same for a Flask view (Flask
// logs it to wsgi.errors) and a FastAPI endpoint (the runtime logs what
// the app raises): once, with the method, the path and the traceback.
func TestFlaskAndASGIErrorsReachCaddysLog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		handler, app, marker string
		want                 []string
	}{
		{"wsgi", "flask_errors:app", "RuntimeError: hearth-test-flask-view-failed", []string{"Exception on /boom [GET]", "Traceback (most recent call last)"}},
		{"asgi", "fastapi_errors:app", "RuntimeError: hearth-test-asgi-view-failed", []string{"GET '/boom'", "Traceback (most recent call last)"}},
	} {
		t.Run(tc.handler, func(t *testing.T) {
			config, url := appSite(t, tc.handler, tc.app, "{APPS}", "workers 1\n\t\tguard warn")
			c := startCaddy(t, config)
			if resp, body := get(t, url+"/boom"); resp.StatusCode != 500 || strings.Contains(body, "view-failed") {
				t.Errorf("/boom: %d %q", resp.StatusCode, body)
			}
			waitFor(t, 10*time.Second, "the traceback in Caddy's log", func() bool { return strings.Contains(c.log.String(), tc.marker) })
			log := c.log.String()
			if n := strings.Count(log, tc.marker); n != 1 {
				t.Errorf("the error is in Caddy's log %d times, want once:\n%s", n, tail(log, 30))
			}
			for _, want := range tc.want {
				if !strings.Contains(log, want) {
					t.Errorf("Caddy's log lacks %q:\n%s", want, tail(log, 30))
				}
			}
		})
	}
}

// TestMistypedModuleGetsAFix: a module name with a typo (hellp for
// hello) is refused with where it was looked for and the nearest module
// that exists, as the app line to write.
func TestMistypedModuleGetsAFix(t *testing.T) {
	t.Parallel()
	config, _ := site(t, "hellp:application", "workers 1")
	c := launchCaddy(t, config)
	if code := c.waitExit(60 * time.Second); code == 0 {
		t.Fatalf("caddy run exited 0 with a module that does not exist")
	}
	log := c.log.String()
	for _, want := range []string{"no module 'hellp' in " + repoPath("tests", "apps"), `did you mean hello? (the app is \"hello:application\")`} {
		if !strings.Contains(log, want) {
			t.Errorf("the refusal lacks %q:\n%s", want, tail(log, 10))
		}
	}
}

// TestAnswerBeforeTheBodyIsRead: a request whose body the app does not
// read, to a page larger than a socket's buffer, is answered at once,
// whatever the body's size. Caddy wrote a body held in memory (up to
// 256 KiB) in one write with the request's head, and read the answer only
// after: the worker, writing its 300 KiB page before reading the body, and
// Caddy, writing the body, each waited for the other until the request's
// timeout killed the worker (a GET with a 250 KiB body did that to any
// large page, so a client could keep every worker of an app so).
func TestAnswerBeforeTheBodyIsRead(t *testing.T) {
	t.Parallel()
	config, url := site(t, "bigpage:application", "workers 1\n\t\ttimeout 10s")
	c := startCaddy(t, config)
	client := &http.Client{Timeout: 30 * time.Second}
	for _, kib := range []int{0, 60, 100, 200, 250, 256, 300, 2048} {
		start := time.Now()
		req, _ := http.NewRequest("GET", url+"/?kib=300", bytes.NewReader(make([]byte, kib<<10)))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("a %d KiB body: %v\n%s", kib, err, c.log.String())
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 300<<10 {
			t.Fatalf("a %d KiB body: status %d, %d bytes of the 300 KiB page after %v\n%s", kib, resp.StatusCode, n, time.Since(start), c.log.String())
		}
	}
	if apps, err := c.apps(); err != nil || len(apps) != 1 || apps[0].Restarts["timeout"] != 0 {
		t.Fatalf("a worker was restarted for its timeout: %+v %v", apps, err)
	}
}

// TestLooseTrustedProxiesWarned: a server that lists trusted_proxies
// without trusted_proxies_strict takes a client's address from the left
// of X-Forwarded-For, which the client writes: a client behind the proxy
// then counts as someone new with each request, past every per-client
// bound. The app's first request warns, with the fix; with
// trusted_proxies_strict it does not.
func TestLooseTrustedProxiesWarned(t *testing.T) {
	t.Parallel()
	const warning = "lists trusted_proxies without trusted_proxies_strict"
	for _, strict := range []bool{false, true} {
		port := freePort(t)
		option := ""
		if strict {
			option = "\n\t\ttrusted_proxies_strict"
		}
		c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
	servers {
		trusted_proxies static 127.0.0.0/8%s
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}`, option, port))
		resp, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if strict {
			c.stop() // (its log is whole once it stopped)
			if strings.Contains(c.log.String(), warning) {
				t.Errorf("warned with trusted_proxies_strict:\n%s", tail(c.log.String(), 5))
			}
			continue
		}
		waitFor(t, 10*time.Second, "the warning", func() bool { return warned(c, warning, "trusted_proxies_strict") })
	}
}

// TestBeforeStartKeepsItsArgumentsOutOfTheLog: a before_start command
// that fails is named by its place and program, not its arguments (a
// password on its command line, or a {file.…} secret), and what it
// printed reaches the log with what looks like a credential redacted;
// it said what to fix before, with the password in it.
func TestBeforeStartKeepsItsArgumentsOutOfTheLog(t *testing.T) {
	t.Parallel()
	config, _ := site(t, "hello:application", `workers 1
		before_start /bin/sh -c "echo migrating; echo DATABASE_URL=postgres://app:db-pw-4f1e@db/app is unreachable; exit 3" x --password hunter2-9c3a`)
	log := refused(t, config)
	for _, secret := range []string{"hunter2-9c3a", "db-pw-4f1e"} {
		if strings.Contains(log, secret) {
			t.Errorf("the log holds %s:\n%s", secret, tail(log, 10))
		}
	}
	for _, want := range []string{"before_start 1 of 1 (/bin/sh, with 5 arguments not shown) failed (exit status 3)", "migrating", "is unreachable"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, tail(log, 10))
		}
	}
}
