package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 15, point 4: one instance per app and machine. A second Caddy with
// the same data directory that would run an app a live Caddy runs is
// refused at load, naming the other process and the fix; the lock is gone
// with its holder, even after a SIGKILL; a reload of the holder is never
// refused by its own lock; another data directory is another instance.

// instanceSite is a site on port running hello with workers, whose
// before_start appends a line to ran.
func instanceSite(port, workers int, ran string) string {
	return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi hello:application {
		dir {APPS}
		python {PYTHON}
		workers %d
		before_start /bin/sh -c "echo started >> %s"
	}
}`, port, workers, ran)
}

// lines counts the lines of path (0 if it does not exist).
func lines(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// serves checks that url answers hello n times in a row.
func serves(t *testing.T, url string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if resp, body := get(t, url); resp.StatusCode != 200 || body != "Hello, world!\n" {
			t.Fatalf("GET %s: %d %q", url, resp.StatusCode, body)
		}
	}
}

func TestSecondInstanceIsRefused(t *testing.T) {
	t.Parallel()
	data, ran := t.TempDir(), filepath.Join(t.TempDir(), "ran")
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	config := instanceSite(port, 1, ran)

	a := launchCaddyWithData(t, config, data)
	a.waitRunning()
	serves(t, url, 3)
	if n := lines(t, ran); n != 1 {
		t.Fatalf("before_start ran %d times for the first Caddy, want 1", n)
	}
	aPID, aWorkers := a.cmd.Process.Pid, sortedPIDs(a.workerPIDs())

	// `caddy validate` provisions the same config with the same data
	// directory: it neither takes nor needs the lock
	validate := exec.Command(caddyBinary(t), "validate", "--config", filepath.Join(a.dir, "Caddyfile"), "--adapter", "caddyfile")
	validate.Env = append(os.Environ(), "HOME="+a.dir, "XDG_DATA_HOME="+data)
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate beside a running Caddy: %v\n%s", err, tail(string(out), 10))
	}

	// the same Caddyfile again (another admin port), the same data directory
	b := launchCaddyWithData(t, config, data)
	if code := b.waitExit(30 * time.Second); code == 0 {
		t.Fatalf("a second Caddy with the same data directory started")
	}
	log := b.log.String()
	for _, want := range []string{`hello\" in ` + repoPath("tests", "apps"), "is already run on this machine by process " + strconv.Itoa(aPID), "caddy reload", "data directory of its own", "XDG_DATA_HOME="} {
		if !strings.Contains(log, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, tail(log, 6))
		}
	}
	if n := lines(t, ran); n != 1 {
		t.Errorf("before_start ran %d times, want 1: the refused Caddy ran it", n)
	}
	// the first one is untouched and serves alone
	serves(t, url, 10)
	if now := sortedPIDs(a.workerPIDs()); now != aWorkers {
		t.Errorf("the first Caddy's workers changed: %s, then %s", aWorkers, now)
	}
	if strings.Contains(a.log.String(), "already run") {
		t.Errorf("the first Caddy logged a refusal")
	}

	// a reload of the holder that replaces the app's pool (spawn new, then
	// drain old: both hold the lock for a while) is not refused
	if code, body := a.load(instanceSite(port, 2, ran)); code != 200 {
		t.Fatalf("reloading the first Caddy with a changed app: %d %s", code, body)
	}
	a.waitRunning()
	if n := len(a.workerPIDs()); n != 2 {
		t.Errorf("after the reload: %d workers, want 2", n)
	}
	serves(t, url, 3)
	if n := lines(t, ran); n != 2 {
		t.Errorf("before_start ran %d times, want 2 (start and reload)", n)
	}
	// and an unchanged reload keeps it
	if code, body := a.load(instanceSite(port, 2, ran)); code != 200 {
		t.Fatalf("reloading the first Caddy unchanged: %d %s", code, body)
	}

	// the holder dies without a word: the lock goes with it
	a.apps() // remember the workers for the orphan check
	if err := syscall.Kill(aPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the first Caddy did not die of SIGKILL")
	}
	c := launchCaddyWithData(t, config, data)
	c.waitRunning()
	serves(t, url, 3)
	if n := lines(t, ran); n != 3 {
		t.Errorf("before_start ran %d times, want 3", n)
	}
}

func TestInstancesWithTheirOwnDataDirectories(t *testing.T) {
	t.Parallel()
	ran := filepath.Join(t.TempDir(), "ran")
	port := freePort(t)
	config := instanceSite(port, 1, ran)
	// launchCaddy gives each its own data directory (XDG_DATA_HOME)
	a := launchCaddy(t, config)
	a.waitRunning()
	b := launchCaddy(t, config)
	b.waitRunning()
	if n := lines(t, ran); n != 2 {
		t.Errorf("before_start ran %d times, want once per instance", n)
	}
	for _, c := range []*caddyProc{a, b} {
		if apps := c.mustApps(); len(apps) != 1 || apps[0].State != "running" || len(apps[0].Workers) != 1 {
			t.Errorf("an instance's app: %+v", apps)
		}
	}
	serves(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 5)
}

func TestReloadRefusedForAnAppAnotherCaddyRuns(t *testing.T) {
	t.Parallel()
	data, ran := t.TempDir(), filepath.Join(t.TempDir(), "ran")
	helloPort, failPort := freePort(t), freePort(t)
	failSite := fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi fail:application {
		dir {APPS}
		python {PYTHON}
		workers 1
		before_start /bin/sh -c "echo fail >> %s"
	}
}`, failPort, ran)
	a := launchCaddyWithData(t, instanceSite(helloPort, 1, ran), data)
	a.waitRunning()
	other := launchCaddyWithData(t, failSite, data)
	other.waitRunning()
	if n := lines(t, ran); n != 2 {
		t.Fatalf("before_start ran %d times, want 2", n)
	}
	workers := sortedPIDs(a.workerPIDs())
	// a reload of the first Caddy that would also run the other's app is
	// refused, and the first keeps serving its old config
	code, body := a.load(instanceSite(helloPort, 1, ran) + "\n" + failSite)
	if code == 200 || !strings.Contains(body, "already run on this machine by process "+strconv.Itoa(other.cmd.Process.Pid)) {
		t.Fatalf("a reload adding an app another Caddy runs: %d %s", code, body)
	}
	serves(t, fmt.Sprintf("http://127.0.0.1:%d/", helloPort), 5)
	if now := sortedPIDs(a.workerPIDs()); now != workers {
		t.Errorf("the first Caddy's workers changed: %s, then %s", workers, now)
	}
	if apps := a.mustApps(); len(apps) != 1 || apps[0].Name != "hello" || apps[0].State != "running" {
		t.Errorf("after the refused reload: %+v", apps)
	}
	if n := lines(t, ran); n != 2 {
		t.Errorf("before_start ran %d times, want 2: the refused reload ran it", n)
	}
	if _, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/slow?0", failPort)); body == "" {
		t.Errorf("the other Caddy no longer serves its app")
	}
}
