package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// cpuUse reads how many CPUs caddy's Go code uses, of how many, from
// GET /hearth/apps.
func (c *caddyProc) cpuUse() (using, available int) {
	c.t.Helper()
	body := c.goRuntime()
	return body.CaddyCPUs, body.CPUs
}

// goRuntimeStatus is what GET /hearth/apps says of Go's settings.
type goRuntimeStatus struct {
	CaddyCPUs      int `json:"caddy_cpus"`
	CPUs           int `json:"cpus"`
	CaddyGCPercent int `json:"caddy_gc_percent"`
}

func (c *caddyProc) goRuntime() goRuntimeStatus {
	c.t.Helper()
	resp, err := http.Get("http://" + c.admin + "/hearth/apps")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body goRuntimeStatus
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		c.t.Fatal(err)
	}
	return body
}

// hearthOptionSite is a one-worker hello site on port with global as the
// hearth global option's body.
func hearthOptionSite(port int, global string) string {
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

// TestCaddyCPUsLeavesCPUsToWorkers: while a config runs pools, Caddy's Go
// code uses half of the CPUs by default, all of them with caddy_cpus all,
// a set number with caddy_cpus <n>, and every CPU again once no config
// runs a pool.
func TestCaddyCPUsLeavesCPUsToWorkers(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set in the environment: it decides, caddy_cpus does not apply")
	}
	port := freePort(t)
	site := func(global string) string { return hearthOptionSite(port, global) }
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

// TestCaddyGCFloor: while a config runs pools, Go collects Caddy's
// garbage only once its heap reaches the floor (a few MiB are live here,
// so the GC percent is raised well above Go's 100),
// caddy_gc_floor off and a floor the heap has already passed leave Go's
// 100, and once no config runs a pool, Go's 100 comes back.
func TestCaddyGCFloor(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set in the environment: it decides, caddy_gc_floor does not apply")
	}
	port := freePort(t)
	site := func(global string) string { return hearthOptionSite(port, global) }
	c := startCaddy(t, site(""))
	// auto: a 128th of Caddy's memory limit (90% of the machine's memory),
	// at most 64 MiB; with 4 GiB or more that is 28 MiB or more
	if memTotal(t) >= 4<<30 {
		if got := c.goRuntime().CaddyGCPercent; got < 200 {
			t.Errorf("default (auto) floor over a heap of a few MiB: GC percent %d, want at least 200", got)
		}
	}
	for _, tt := range []struct {
		option   string
		min, max int
	}{
		{"caddy_gc_floor 64MiB", 300, 10000},
		{"caddy_gc_floor off", 100, 100},
		{"caddy_gc_floor 1MiB", 100, 100}, // the live heap is past it
		{"caddy_gc_floor 1GiB", 1000, 10000},
	} {
		if code, body := c.load(site(tt.option)); code != 200 {
			t.Fatalf("reload with %s: %d %s", tt.option, code, body)
		}
		if got := c.goRuntime().CaddyGCPercent; got < tt.min || got > tt.max {
			t.Errorf("%s: GC percent %d, want %d to %d", tt.option, got, tt.min, tt.max)
		}
	}
	if code, body := c.load(fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\trespond \"no pools\"\n}", port)); code != 200 {
		t.Fatalf("reload without pools: %d %s", code, body)
	}
	if got := c.goRuntime().CaddyGCPercent; got != 100 {
		t.Errorf("with no pool left, GC percent %d, want Go's 100 back", got)
	}
}

// memTotal is the machine's memory, from /proc/meminfo.
func memTotal(t *testing.T) int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	var kib int64
	for _, line := range strings.Split(string(data), "\n") {
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kib); err == nil {
			return kib << 10
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// TestEnvironmentWinsOverGoOptions: GOMAXPROCS and GOGC in Caddy's
// environment decide over caddy_cpus and caddy_gc_floor, and Caddy's log
// says that the options are ignored.
func TestEnvironmentWinsOverGoOptions(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	t.Setenv("GOGC", "150")
	c := startCaddy(t, hearthOptionSite(freePort(t), "caddy_cpus all\n\t\tcaddy_gc_floor 64MiB"))
	if got := c.goRuntime(); got.CaddyCPUs != 1 || got.CaddyGCPercent != 150 {
		t.Errorf("with GOMAXPROCS=1 GOGC=150: caddy_cpus %d, caddy_gc_percent %d; want 1 and 150", got.CaddyCPUs, got.CaddyGCPercent)
	}
	for _, want := range []string{
		"the GOMAXPROCS environment variable takes precedence; caddy_cpus is ignored",
		"the GOGC environment variable takes precedence; caddy_gc_floor is ignored",
	} {
		if !strings.Contains(c.log.String(), want) {
			t.Errorf("caddy's log lacks %q", want)
		}
	}
}

// cpuLent is why GET /hearth/apps says Caddy's code has a CPU more than
// caddy_cpus for now ("" when it has not).
func (c *caddyProc) cpuLent() string {
	c.t.Helper()
	resp, err := http.Get("http://" + c.admin + "/hearth/apps")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Lent string `json:"caddy_cpu_lent"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		c.t.Fatal(err)
	}
	return body.Lent
}

// hammer requests url from n connections until the returned stop is
// called (at the latest when the test ends, before its Caddy stops).
func hammer(t *testing.T, url string, n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for {
				select {
				case <-done:
					return
				default:
				}
				resp, err := client.Get(url)
				if err != nil {
					t.Errorf("GET %s: %v", url, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	var once sync.Once
	stop = func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
	t.Cleanup(stop)
	return stop
}

// lentWithin reports whether Caddy is lent a CPU for idle workers within d.
func lentWithin(c *caddyProc, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c.cpuLent() == "idle_workers" {
			return true
		}
	}
	return false
}

// caddyCPU is how many CPUs Caddy's process used over d.
func caddyCPU(t *testing.T, c *caddyProc, d time.Duration) float64 {
	t.Helper()
	ticks := func() int {
		fields, err := supervisor.ProcStat(c.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		utime, _ := strconv.Atoi(fields[11]) // fields 14 and 15 of proc(5)
		stime, _ := strconv.Atoi(fields[12])
		return utime + stime
	}
	start, before := time.Now(), ticks()
	time.Sleep(d)
	return float64(ticks()-before) / 100 / time.Since(start).Seconds() // USER_HZ is 100 on Linux
}

// TestCaddyCPULentWhileWorkersIdle: under caddy_cpus auto on a 2-CPU
// machine, a Caddy saturated by static files while the app's workers idle
// is lent the second CPU; it is taken back once the workers are busy, and
// once the load ends.
func TestCaddyCPULentWhileWorkersIdle(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set in the environment: it decides, caddy_cpus does not apply")
	}
	if n := runtime.NumCPU(); n < 2 || n > 3 {
		t.Skipf("%d CPUs: the test saturates one P of Caddy's, as caddy_cpus auto leaves it on two or three", n)
	}
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "site.css"), bytes.Repeat([]byte("a"), 2048), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	c := startCaddy(t, fmt.Sprintf(`{
	admin {ADMIN}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	handle /app/* {
		wsgi hang:application {
			dir {APPS}
			python {PYTHON}
			workers 2
		}
	}
	handle {
		root * %s
		file_server
	}
}`, port, files))
	if using, _ := c.cpuUse(); using != 1 {
		t.Fatalf("caddy_cpus auto: Caddy uses %d CPUs, want 1", using)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitLent := func(want, while string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := c.cpuLent()
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the CPU is lent for %q, want %q", while, got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got := c.cpuLent(); got == "idle_workers" {
		t.Fatalf("lent for idle workers before any load")
	}

	stopFiles := hammer(t, base+"/site.css", 8)
	if !lentWithin(c, 20*time.Second) {
		// the machine is shared (other test packages run beside this one):
		// without a CPU's worth for Caddy there is nothing to lend
		if used := caddyCPU(t, c, time.Second); used < 0.9 {
			t.Skipf("Caddy used %.2f CPUs under the test's load: the machine is too busy to saturate it", used)
		}
		waitLent("idle_workers", "static files saturating Caddy, the workers idle")
	}

	stopApp := hammer(t, base+"/app/slow?0.05", 2) // both workers busy
	waitLent("", "the workers busy")
	stopApp()
	waitLent("idle_workers", "the workers idle again")

	stopFiles()
	waitLent("", "the load ended")
}
