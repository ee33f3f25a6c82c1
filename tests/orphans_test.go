package tests

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// TestNothingOutlivesCaddy: when Caddy is SIGKILLed, every process it
// started and everything those started are gone within 5 s: a background
// service's processes and their children, a job's run and its child, a
// pool's workers, a preloading fork server and the workers it forked, a process
// upstream started through a shell together with the shell's children,
// one in a session of its own, and a daemon that forked twice. (A panic
// ends Caddy the same way; modules/supervisor's TestNothingOutlivesItsCaddy
// has both.)
func TestNothingOutlivesCaddy(t *testing.T) {
	t.Parallel()
	plain, _ := site(t, "hello:application", "workers 2")
	preloaded, _ := site(t, "preloaded:application", "name preloaded\n\t\tworkers 2\n\t\tpreload")
	shell := `sh -c "{PYTHON} -m http.server --bind 127.0.0.1 {port} & setsid sleep 600 & setsid sh -c 'sleep 600 & exit 0'; wait"`
	upstream, url := processSite(t, shell, "workers 1")
	background := `{
	admin {ADMIN}
	hearth {
		service sleeper {
			command /bin/sh -c "sleep 601 & sleep 602 & wait"
		}
		job long {
			command /bin/sh -c "sleep 603 & wait"
			schedule every 1s
		}
	}
}
`
	c := startCaddy(t, background+plain+preloaded+upstream)
	if resp, _ := get(t, url+"/"); resp.StatusCode != 200 {
		t.Fatalf("the process upstream answered %d", resp.StatusCode)
	}
	var below []int
	kinds := func() map[string]int {
		below = descendants(c.cmd.Process.Pid)
		n := map[string]int{}
		for _, pid := range below {
			cl := cmdline(pid)
			switch {
			case strings.HasPrefix(cl, "sleep 600"):
				n["sleep"]++
			case strings.HasPrefix(cl, "sleep 60"):
				n["background"]++ // the service's two, the job's run
			case strings.Contains(cl, "http.server"):
				n["http.server"]++
			case strings.Contains(cl, "hearth_worker"):
				n["worker"]++ // workers, fork servers and the forked workers alike
			}
		}
		return n
	}
	want := map[string]int{"sleep": 2, "http.server": 1, "worker": 5, "background": 3}
	waitFor(t, 10*time.Second, fmt.Sprintf("Caddy's descendants to include %v", want), func() bool {
		n := kinds()
		return n["sleep"] == want["sleep"] && n["http.server"] >= want["http.server"] && n["worker"] >= want["worker"] && n["background"] == want["background"]
	})
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.waitExit(10 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range below {
		for supervisor.Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if supervisor.Alive(pid) {
			t.Errorf("process %d (%s) outlived Caddy's SIGKILL by 5s; killing it", pid, cmdline(pid))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
