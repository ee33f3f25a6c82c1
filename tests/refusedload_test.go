package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// setBeforeStart sets before_start of every wsgi handler in a JSON config.
func setBeforeStart(v any, value any) {
	switch v := v.(type) {
	case map[string]any:
		if v["handler"] == "wsgi" {
			v["before_start"] = value
		}
		for _, e := range v {
			setBeforeStart(e, value)
		}
	case []any:
		for _, e := range v {
			setBeforeStart(e, value)
		}
	}
}

// TestLoadEmptyBeforeStartRefused (issue 15): a JSON config whose wsgi
// handler has an empty before_start command (`[[]]`, which panicked in
// runCommand and killed Caddy) is refused with 400 and a clear message,
// and the running config keeps serving.
func TestLoadEmptyBeforeStartRefused(t *testing.T) {
	t.Parallel()
	config, url := site(t, "hello:application", "workers 1")
	c := startCaddy(t, config)
	client := adminClient
	resp, err := client.Get("http://" + c.admin + "/config/")
	if err != nil {
		t.Fatal(err)
	}
	running, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pids := c.workerPIDs()
	for _, bad := range []string{`[[]]`, `[[""]]`, `[["python", "-V"], []]`} {
		var cfg any
		if err := json.Unmarshal(running, &cfg); err != nil {
			t.Fatalf("running config: %v\n%s", err, running)
		}
		var value any
		_ = json.Unmarshal([]byte(bad), &value)
		setBeforeStart(cfg, value)
		body, _ := json.Marshal(cfg)
		if !strings.Contains(string(body), `"before_start"`) {
			t.Fatalf("no wsgi handler in the running config: %s", running)
		}
		resp, err := client.Post("http://"+c.admin+"/load", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatalf("before_start %s: POST /load: %v (caddy died?)\n%s", bad, err, tail(c.log.String(), 40))
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), "before_start command") || !strings.Contains(string(msg), "is empty") {
			t.Fatalf("before_start %s: got %d %s, want 400 naming the empty before_start command", bad, resp.StatusCode, msg)
		}
		t.Logf("before_start %s: %d %s", bad, resp.StatusCode, strings.TrimSpace(string(msg)))
		select {
		case <-c.exited:
			t.Fatalf("caddy exited after before_start %s:\n%s", bad, tail(c.log.String(), 40))
		default:
		}
		if resp, body := get(t, url+"/"); resp.StatusCode != 200 || body != "Hello, world!\n" {
			t.Fatalf("after the refused load (before_start %s): got %d %q", bad, resp.StatusCode, body)
		}
	}
	if strings.Contains(c.log.String(), "panic") {
		t.Fatalf("caddy logged a panic:\n%s", tail(c.log.String(), 40))
	}
	if after := c.workerPIDs(); len(after) != len(pids) || (len(pids) > 0 && after[0] != pids[0]) {
		t.Errorf("workers changed across refused loads: %v, then %v", pids, after)
	}
}

// TestReferencesRefusedBeforeBeforeStart: a job in an app the config does
// not serve refuses the config before any app's before_start runs (it ran
// a new app's migrations first, then the config was refused anyway).
func TestReferencesRefusedBeforeBeforeStart(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "before-start-ran")
	config, _ := site(t, "hello:application", "workers 1\n\t\tbefore_start /usr/bin/touch "+marker)
	log := refused(t, `
{
	admin {ADMIN}
	hearth {
		job clean {
			app nosuchapp
			command /bin/true
			schedule every 1h
		}
	}
}
`+config)
	if !strings.Contains(log, "job clean runs in app nosuchapp, which this config does not serve") {
		t.Errorf("the refusal does not name the job and app:\n%s", tail(log, 8))
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the new app's before_start ran for a config that was refused")
	}
}
