package tests

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jobStatus mirrors a job in GET /hearth/jobs.
type jobStatus struct {
	Name       string     `json:"name"`
	Schedule   string     `json:"schedule"`
	NextRun    *time.Time `json:"next_run"`
	Running    bool       `json:"running"`
	Runs       int        `json:"runs"`
	Failures   int        `json:"failures"`
	Skipped    int        `json:"skipped"`
	LastResult string     `json:"last_result"`
	Recent     []struct {
		ID      int64   `json:"id"`
		Trigger string  `json:"trigger"`
		Result  string  `json:"result"`
		Exit    string  `json:"exit"`
		Output  string  `json:"output_tail"`
		Seconds float64 `json:"duration_seconds"`
	} `json:"recent_runs"`
}

// jobs reads GET /hearth/jobs by name.
func (c *caddyProc) jobs() map[string]jobStatus {
	c.t.Helper()
	resp, err := http.Get("http://" + c.admin + "/hearth/jobs")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Jobs []jobStatus `json:"jobs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		c.t.Fatal(err)
	}
	out := map[string]jobStatus{}
	for _, j := range body.Jobs {
		out[j.Name] = j
	}
	return out
}

// TestJobs: a job every 2 s runs in its app's environment (its env and
// settings auto's key) and shows in /hearth/jobs; a run due while the
// previous one still goes is skipped and counted; a run past its timeout
// is killed with its children; `caddy hearth jobs run` runs one now and
// says how it ended; the metrics count the runs.
func TestJobs(t *testing.T) {
	c := startCaddy(t, strings.ReplaceAll(`
{
	admin {ADMIN}
	hearth {
		job tick {
			app envinfo
			command python -c "import os; print('tick', os.environ['JOB_MARKER'], len(os.environ['SECRET_KEY']))"
			schedule every 2s
		}
		job slow {
			command /bin/sleep 2.5
			schedule every 1s
		}
		job escape {
			command /usr/bin/python3 -c "print(chr(27) + ']0;owned' + chr(7) + ' done')"
			schedule "0 3 1 1 *"
		}
		job hang {
			command /bin/sh -c "sleep 60 & echo $! > {TMP}/hang-child; wait"
			schedule "0 3 1 1 *"
			timeout 4s
		}
	}
}
:{PORT} {
	wsgi envinfo:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		settings auto
		guard off
		env JOB_MARKER from-the-app
	}
}
`, "{PORT}", strconv.Itoa(freePort(t))))
	waitFor(t, 20*time.Second, "two runs of tick", func() bool { return c.jobs()["tick"].Runs >= 2 })
	tick := c.jobs()["tick"]
	if tick.Schedule != "every 2s" || tick.NextRun == nil || tick.LastResult != "ok" || tick.Failures != 0 {
		t.Errorf("tick: %+v", tick)
	}
	if r := tick.Recent[0]; r.Trigger != "schedule" || !strings.Contains(r.Output, "tick from-the-app") || strings.Contains(r.Output, " 0\n") {
		t.Errorf("tick did not run in the app's environment (its env, settings auto's key): %+v", r)
	}

	waitFor(t, 20*time.Second, "an overlapping run of slow skipped", func() bool { return c.jobs()["slow"].Skipped >= 1 })

	code, out := hearthCLI(t, c.dir, t.TempDir(), "jobs", "run", "hang", "--address", c.admin)
	if code == 0 || !strings.Contains(out, "timed_out") || !strings.Contains(out, "timeout (4s)") {
		t.Errorf("caddy hearth jobs run hang: exit %d, output:\n%s", code, out)
	}
	data, err := os.ReadFile(c.dir + "/hang-child")
	if err != nil {
		t.Fatalf("the hung job did not start its child: %v", err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if child == 0 || !waitGone(child, 10*time.Second) {
		t.Errorf("the timed-out run's child %d outlived it", child)
	}
	if hang := c.jobs()["hang"]; hang.Runs != 1 || hang.Failures != 1 || hang.Recent[0].Trigger != "manual" || hang.Recent[0].Result != "timed_out" {
		t.Errorf("hang: %+v", hang)
	}

	// the job's output reaches the terminal without its escape sequence
	code, out = hearthCLI(t, c.dir, t.TempDir(), "jobs", "run", "escape", "--address", c.admin)
	if code != 0 || !strings.Contains(out, "?]0;owned? done") || strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("caddy hearth jobs run escape: exit %d, output %q", code, out)
	}

	code, out = hearthCLI(t, c.dir, t.TempDir(), "jobs", "--address", c.admin)
	if code != 0 || !strings.Contains(out, "tick") || !strings.Contains(out, "every 2s") || !strings.Contains(out, "timed_out") {
		t.Errorf("caddy hearth jobs: exit %d:\n%s", code, out)
	}
	m := scrape(t, c)
	if m[`hearth_job_runs_total{job="tick"}`] < 2 || m[`hearth_job_failures_total{job="hang"}`] != 1 || m[`hearth_job_skipped_total{job="slow"}`] < 1 ||
		m[`hearth_job_last_success_timestamp_seconds{job="tick"}`] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("job metrics: tick runs %v, hang failures %v, slow skipped %v, tick last success %v", m[`hearth_job_runs_total{job="tick"}`],
			m[`hearth_job_failures_total{job="hang"}`], m[`hearth_job_skipped_total{job="slow"}`], m[`hearth_job_last_success_timestamp_seconds{job="tick"}`])
	}
}
