package tests

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// The tests here run serially (no t.Parallel): whether a request is
// pipelined follows the mean request time (2 ms of work queued behind a
// running request at most), which other tests' load on the machine raises
// past the point where nothing is pipelined.

// appNamed finds one app in GET /hearth/apps.
func (c *caddyProc) appNamed(name string) appStatus {
	c.t.Helper()
	for _, a := range c.mustApps() {
		if a.Name == name {
			return a
		}
	}
	c.t.Fatalf("no app %q in /hearth/apps", name)
	return appStatus{}
}

// Under a queue, requests are pipelined to busy workers (pipeline auto)
// and every client still gets the answer to its own request; with
// pipeline off nothing is pipelined.
func TestPipelineAnswersEveryRequest(t *testing.T) {
	port := freePort(t)
	c := startCaddy(t, fmt.Sprintf(`
:%d {
	bind 127.0.0.1
	handle_path /auto/* {
		wsgi pipeline:application {
			name piped
			dir {APPS}
			python {PYTHON}
			workers 2
		}
	}
	handle_path /off/* {
		wsgi pipeline:application {
			name unpiped
			dir {APPS}
			python {PYTHON}
			workers 2
			pipeline off
		}
	}
}`, port))
	for _, prefix := range []string{"auto", "off"} {
		getConcurrently(t, 24, 40, func(g, i int) (string, func(int, string) bool) {
			id := fmt.Sprintf("%s-%d-%d", prefix, g, i)
			return fmt.Sprintf("http://127.0.0.1:%d/%s/id?%s", port, prefix, id), func(status int, body string) bool {
				return status == 200 && strings.HasPrefix(body, id+" ")
			}
		})
	}
	piped, unpiped := c.appNamed("piped"), c.appNamed("unpiped")
	if piped.Pipeline != "auto" || piped.Pipelined == 0 {
		t.Errorf("pipeline auto under a queue: pipeline=%q pipelined_requests=%d, want auto and > 0", piped.Pipeline, piped.Pipelined)
	}
	if unpiped.Pipeline != "off" || unpiped.Pipelined != 0 {
		t.Errorf("pipeline off: pipeline=%q pipelined_requests=%d, want off and 0", unpiped.Pipeline, unpiped.Pipelined)
	}
	t.Logf("960 requests on 2 workers: %d pipelined", piped.Pipelined)
}

// getConcurrently sends GETs from clients goroutines, each requests of
// them in turn; request(g, i) names the URL of client g's request i and
// how to judge its answer. Every failed request fails the test.
func getConcurrently(t *testing.T, clients, requests int, request func(g, i int) (string, func(status int, body string) bool)) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan string, clients*requests)
	for g := 0; g < clients; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 20 * time.Second}
			for i := 0; i < requests; i++ {
				url, ok := request(g, i)
				resp, err := client.Get(url)
				if err != nil {
					errs <- err.Error()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !ok(resp.StatusCode, string(body)) {
					errs <- fmt.Sprintf("GET %s: %d %q", url, resp.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// reply is a response's status and body.
type reply struct {
	status int
	body   string
}

// pipelineBehind starts a one-worker pipeline app, occupies its worker with
// a request that waits for a gate, queues requests (method and path, POSTs
// with a body after a space) one after the other, opens the gate and
// returns the replies in order, the caddy and the first worker's pid.
func pipelineBehind(t *testing.T, requests ...string) ([]reply, *caddyProc, int) {
	return pipelineBehindWith(t, "", requests...)
}

// pipelineBehindWith is pipelineBehind with more options for the wsgi block.
func pipelineBehindWith(t *testing.T, options string, requests ...string) ([]reply, *caddyProc, int) {
	config, base := site(t, "pipeline:application", "workers 1\n\t\tenv PIPELINE_GATE {TMP}/gate\n\t\tenv PIPELINE_RECORD {TMP}/record\n\t\t"+options)
	c := startCaddy(t, config)
	for i := 0; i < 50; i++ { // short requests: pipelining applies
		get(t, base+"/id?warm")
	}
	client := &http.Client{Timeout: 20 * time.Second}
	send := func(method, path, body string) chan reply {
		ch := make(chan reply, 1)
		go func() {
			req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
			resp, err := client.Do(req)
			if err != nil {
				ch <- reply{0, err.Error()}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- reply{resp.StatusCode, string(b)}
		}()
		return ch
	}
	blocker := send("GET", "/wait", "")
	waitFor(t, 10*time.Second, "the worker to be busy", func() bool {
		w := c.appNamed("pipeline").Workers
		return len(w) == 1 && w[0].State == "busy"
	})
	pid := c.workerPIDs()[0]
	pending := []chan reply{blocker}
	for i, r := range requests {
		method, rest, _ := strings.Cut(r, " ")
		path, body, _ := strings.Cut(rest, " ")
		pending = append(pending, send(method, path, body))
		waitFor(t, 10*time.Second, "request "+r+" to queue", func() bool { return c.appNamed("pipeline").Queue == i+1 })
	}
	writeFile(t, filepath.Join(c.dir, "gate"), "")
	replies := make([]reply, len(pending))
	for i, ch := range pending {
		replies[i] = <-ch
	}
	if replies[0].status != 200 {
		t.Errorf("the blocking request: %d %q", replies[0].status, replies[0].body)
	}
	return replies[1:], c, pid
}

// recorded is what POST /record wrote.
func recorded(c *caddyProc) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "record"))
	return string(b)
}

// Requests pipelined behind one whose worker dies never ran: they are sent
// again to the replacement worker, even POSTs, and each runs exactly once.
func TestPipelinedRequestSurvivesACrashAhead(t *testing.T) {
	replies, c, pid := pipelineBehind(t, "POST /exit", "POST /record once", "POST /record twice")
	want := []reply{{502, ""}, {200, "once"}, {200, "twice"}}
	for i, r := range replies {
		if r.status != want[i].status || (want[i].body != "" && r.body != want[i].body) {
			t.Errorf("reply %d: %d %q, want %d %q", i, r.status, r.body, want[i].status, want[i].body)
		}
	}
	if got := recorded(c); got != "once\ntwice\n" {
		t.Errorf("the pipelined POSTs recorded %q, want each exactly once, in order", got)
	}
	app := c.appNamed("pipeline")
	// how many are pipelined follows the mean request time, which a loaded
	// machine raises: at least the first POST must have been
	if app.Pipelined < 1 || app.Restarts["crash"] != 1 {
		t.Errorf("pipelined_requests=%d restarts=%v, want ≥ 1 and one crash", app.Pipelined, app.Restarts)
	}
	if supervisor.Alive(pid) {
		t.Errorf("worker %d is still alive", pid)
	}
}

// When Caddy ends a worker that is still running (here: a request ran past
// its timeout), the worker may already have started the requests
// pipelined behind: idempotent ones are sent again, the others get 502
// and ran at most once.
func TestPipelinedPOSTIsNotResentWhenItMayHaveRun(t *testing.T) {
	replies, c, _ := pipelineBehindWith(t, "timeout 3s", "GET /hang", "POST /record maybe", "GET /id?after")
	if replies[0].status != 504 {
		t.Errorf("the request that hung: %d %q, want 504", replies[0].status, replies[0].body)
	}
	if replies[1].status != 502 {
		t.Errorf("the POST pipelined behind it: %d %q, want 502", replies[1].status, replies[1].body)
	}
	if got := recorded(c); got != "" && got != "maybe\n" {
		t.Errorf("the POST recorded %q, want it at most once", got)
	}
	if replies[2].status != 200 || !strings.HasPrefix(replies[2].body, "after ") {
		t.Errorf("the GET pipelined behind it: %d %q, want 200 and its answer", replies[2].status, replies[2].body)
	}
	// Caddy's log reaches the test through a pipe: it may lag the reply
	waitFor(t, 10*time.Second, "the log to explain the 502 of the pipelined POST", func() bool {
		return strings.Contains(c.log.String(), "may have started the request")
	})
}

// Requests that take milliseconds are not pipelined: a request queued
// behind a slow one would wait for it even if another worker freed up.
func TestSlowRequestsAreNotPipelined(t *testing.T) {
	config, url := site(t, "pipeline:application", "workers 1")
	c := startCaddy(t, config)
	getConcurrently(t, 4, 10, func(int, int) (string, func(int, string) bool) {
		return url + "/slow", func(status int, _ string) bool { return status == 200 }
	})
	if app := c.appNamed("pipeline"); app.Pipelined != 0 {
		t.Errorf("%d requests of 5 ms were pipelined, want none", app.Pipelined)
	}
}
