package tests

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scrape reads Caddy's metrics endpoint on the admin API into a map from
// series (name{labels}) to value.
func scrape(t *testing.T, c *caddyProc) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	series := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "hearth_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q", line)
		}
		series[line[:i]] = v
	}
	return series
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	config, url := site(t, "fail:application", "workers 2\n\t\tmax_queue 50")
	c := startCaddy(t, config)
	for i := 0; i < 20; i++ {
		if resp, _ := get(t, url+"/"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// 5 requests on 2 workers at once: 3 of them queue for ~0.3s at least
	done := make(chan struct{})
	for i := 0; i < 5; i++ {
		go func() { get(t, url+"/slow?0.3"); done <- struct{}{} }()
	}
	for i := 0; i < 5; i++ {
		<-done
	}
	victim := c.workerPIDs()[0]
	syscall.Kill(victim, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "the replacement", func() bool {
		p := c.workerPIDs()
		return len(p) == 2 && !contains(p, victim)
	})
	m := scrape(t, c)
	app := `{app="fail"}`
	checks := map[string]float64{
		"hearth_request_duration_seconds_count" + app:                  25,
		"hearth_queue_wait_seconds_count" + app:                        25,
		`hearth_worker_restarts_total{app="fail",reason="crash"}`:      1,
		`hearth_workers{app="fail",state="idle"}`:                      2,
		`hearth_workers{app="fail",state="busy"}`:                      0,
		"hearth_queue_depth" + app:                                     0,
		`hearth_queue_wait_seconds_bucket{app="fail",le="0.25"}`:       22,
		`hearth_request_duration_seconds_bucket{app="fail",le="+Inf"}`: 25,
	}
	for series, want := range checks {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if m["hearth_worker_rss_bytes"+app] < 2<<20 {
		t.Errorf("worker RSS %v", m["hearth_worker_rss_bytes"+app])
	}
	// the slow requests queued: the waits sum to at least 3 × 0.3s minus slack
	if sum := m["hearth_queue_wait_seconds_sum"+app]; sum < 0.5 {
		t.Errorf("queue wait sum %v after queued requests", sum)
	}
}
