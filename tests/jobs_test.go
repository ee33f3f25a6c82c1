package tests

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
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
	out, err := c.tryJobs()
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// tryJobs is jobs for a Caddy that may not answer yet.
func (c *caddyProc) tryJobs() (map[string]jobStatus, error) {
	resp, err := http.Get("http://" + c.admin + "/hearth/jobs")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Jobs []jobStatus `json:"jobs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	out := map[string]jobStatus{}
	for _, j := range body.Jobs {
		out[j.Name] = j
	}
	return out, nil
}

// nextRun waits for the job's next run to be known, and returns it.
func (c *caddyProc) nextRun(name string) time.Time {
	c.t.Helper()
	var next time.Time
	waitFor(c.t, 20*time.Second, "job "+name+" scheduled", func() bool {
		jobs, _ := c.tryJobs()
		if j, ok := jobs[name]; ok && j.NextRun != nil {
			next = *j.NextRun
			return true
		}
		return false
	})
	return next
}

// TestJobs: a job every 2 s runs in its app's environment (its env and
// settings auto's key) and shows in /hearth/jobs; a run due while the
// previous one still goes is skipped and counted; a run past its timeout
// is killed with its children; `caddy hearth jobs run` runs one now and
// says how it ended; the metrics count the runs.
func TestJobs(t *testing.T) {
	t.Parallel()
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

// TestJobScheduleSurvivesARestart: a schedule counts from the time kept in
// Caddy's data directory, not from Caddy's start (a machine switched off
// every night would never reach an `every 24h` backup); a time missed
// while Caddy was not running is made up 30 s after it starts.
func TestJobScheduleSurvivesARestart(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	config := `
{
	admin {ADMIN}
	hearth {
		job daily {
			command /bin/true
			schedule every 24h
		}
	}
}
`
	c := launchCaddyWithData(t, config, data)
	first := c.nextRun("daily")
	c.stop()
	kept := filepath.Join(data, "caddy", "hearth", "jobs", "job-daily.last")
	text, err := os.ReadFile(kept)
	if err != nil {
		t.Fatalf("the schedule's start was not kept: %v", err)
	}
	if at, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(text))); err != nil || !at.Add(24*time.Hour).Equal(first) {
		t.Fatalf("kept %q (%v), the next run was %s", text, err, first)
	}

	time.Sleep(1100 * time.Millisecond) // a restart counting from its own start would differ by this
	c = launchCaddyWithData(t, config, data)
	if next := c.nextRun("daily"); !next.Equal(first) {
		t.Errorf("after a restart the next run is %s, want %s (counted from the first start)", next, first)
	}
	c.stop()

	// the machine was off when the run was due: made up once, soon
	if err := os.WriteFile(kept, []byte(time.Now().Add(-25*time.Hour).Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c = launchCaddyWithData(t, config, data)
	start := time.Now()
	if next := c.nextRun("daily"); next.Before(start) || next.After(start.Add(35*time.Second)) {
		t.Errorf("a run missed while Caddy was stopped is due at %s, want about 30 s after the start (%s)", next, start)
	}
	waitFor(t, 10*time.Second, "the make-up run in the log", func() bool {
		return strings.Contains(c.log.String(), "job missed a run while Caddy was not running")
	})
}
