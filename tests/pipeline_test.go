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
)

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
		var wg sync.WaitGroup
		errs := make(chan string, 1000)
		for g := 0; g < 24; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 20 * time.Second}
				for i := 0; i < 40; i++ {
					id := fmt.Sprintf("%s-%d-%d", prefix, g, i)
					resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/%s/id?%s", port, prefix, id))
					if err != nil {
						errs <- err.Error()
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !strings.HasPrefix(string(body), id+" ") {
						errs <- fmt.Sprintf("request %s got %d %q", id, resp.StatusCode, body)
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
	piped, unpiped := c.appNamed("piped"), c.appNamed("unpiped")
	if piped.Pipeline != "auto" || piped.Pipelined == 0 {
		t.Errorf("pipeline auto under a queue: pipeline=%q pipelined_requests=%d, want auto and > 0", piped.Pipeline, piped.Pipelined)
	}
	if unpiped.Pipeline != "off" || unpiped.Pipelined != 0 {
		t.Errorf("pipeline off: pipeline=%q pipelined_requests=%d, want off and 0", unpiped.Pipeline, unpiped.Pipelined)
	}
	t.Logf("960 requests on 2 workers: %d pipelined", piped.Pipelined)
}

// Requests pipelined behind one whose worker dies never ran: they are sent
// again to the replacement worker, even POSTs, and each runs exactly once.
func TestPipelinedRequestSurvivesACrashAhead(t *testing.T) {
	port := freePort(t)
	c := startCaddy(t, fmt.Sprintf(`
:%d {
	bind 127.0.0.1
	wsgi pipeline:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		env PIPELINE_GATE {TMP}/gate
		env PIPELINE_RECORD {TMP}/record
	}
}`, port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 20 * time.Second}
	for i := 0; i < 50; i++ { // short requests: pipelining applies
		get(t, base+"/id?warm")
	}
	type result struct {
		status int
		body   string
	}
	send := func(method, path, body string) chan result {
		ch := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
			resp, err := client.Do(req)
			if err != nil {
				ch <- result{0, err.Error()}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- result{resp.StatusCode, string(b)}
		}()
		return ch
	}
	queueIs := func(n int) func() bool { return func() bool { return c.appNamed("pipeline").Queue == n } }
	blocker := send("GET", "/wait", "")
	waitFor(t, 10*time.Second, "the worker to be busy", func() bool {
		w := c.appNamed("pipeline").Workers
		return len(w) == 1 && w[0].State == "busy"
	})
	crasher := send("POST", "/exit", "")
	waitFor(t, 10*time.Second, "the crashing request to queue", queueIs(1))
	recorded := send("POST", "/record", "once")
	waitFor(t, 10*time.Second, "the recorded request to queue", queueIs(2))
	recorded2 := send("POST", "/record", "twice")
	waitFor(t, 10*time.Second, "the second recorded request to queue", queueIs(3))
	pid := c.workerPIDs()[0]
	writeFile(t, filepath.Join(c.dir, "gate"), "")

	if r := <-blocker; r.status != 200 {
		t.Errorf("the blocking request: %d %q", r.status, r.body)
	}
	if r := <-crasher; r.status != 502 {
		t.Errorf("the request whose worker died: %d %q, want 502", r.status, r.body)
	}
	if r := <-recorded; r.status != 200 || r.body != "once" {
		t.Errorf("the request pipelined behind it: %d %q, want 200 \"once\"", r.status, r.body)
	}
	if r := <-recorded2; r.status != 200 || r.body != "twice" {
		t.Errorf("the second request pipelined behind it: %d %q, want 200 \"twice\"", r.status, r.body)
	}
	record, err := os.ReadFile(filepath.Join(c.dir, "record"))
	if err != nil || string(record) != "once\ntwice\n" {
		t.Errorf("the pipelined POSTs recorded %q (%v), want each exactly once, in order", record, err)
	}
	app := c.appNamed("pipeline")
	if app.Pipelined < 2 || app.Restarts["crash"] != 1 {
		t.Errorf("pipelined_requests=%d restarts=%v, want ≥ 2 and one crash", app.Pipelined, app.Restarts)
	}
	if alive(pid) {
		t.Errorf("worker %d is still alive", pid)
	}
}
