package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"testing"
)

// cpuUse reads how many CPUs caddy's Go code uses, of how many, from
// GET /hearth/apps.
func (c *caddyProc) cpuUse() (using, available int) {
	c.t.Helper()
	resp, err := http.Get("http://" + c.admin + "/hearth/apps")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		CaddyCPUs int `json:"caddy_cpus"`
		CPUs      int `json:"cpus"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		c.t.Fatal(err)
	}
	return body.CaddyCPUs, body.CPUs
}

// TestCaddyCPUsLeavesCPUsToWorkers: while a config runs pools, Caddy's Go
// code uses half of the CPUs by default, all of them with caddy_cpus all,
// a set number with caddy_cpus <n>, and every CPU again once no config
// runs a pool.
func TestCaddyCPUsLeavesCPUsToWorkers(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set in the environment: it decides, caddy_cpus does not apply")
	}
	port := freePort(t)
	site := func(global string) string {
		return fmt.Sprintf(`{
	admin {ADMIN}
	hearth {
		%s
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers 1
	}
}`, global, port)
	}
	c := startCaddy(t, site(""))
	using, all := c.cpuUse()
	if all < 1 || using != max(1, all/2) {
		t.Fatalf("default (auto): caddy uses %d of %d CPUs, want %d", using, all, max(1, all/2))
	}
	for _, tt := range []struct {
		option string
		want   int
	}{
		{"caddy_cpus all", all},
		{"caddy_cpus 1", 1},
		{"caddy_cpus auto", max(1, all/2)},
	} {
		if code, body := c.load(site(tt.option)); code != 200 {
			t.Fatalf("reload with %s: %d %s", tt.option, code, body)
		}
		if got, _ := c.cpuUse(); got != tt.want {
			t.Errorf("%s: caddy uses %d CPUs, want %d", tt.option, got, tt.want)
		}
	}
	if code, body := c.load(fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\trespond \"no pools\"\n}", port)); code != 200 {
		t.Fatalf("reload without pools: %d %s", code, body)
	}
	if got, _ := c.cpuUse(); got != all {
		t.Errorf("with no pool left, caddy uses %d CPUs, want all %d back", got, all)
	}
}
