package python

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, ".env")
	os.WriteFile(envFile, []byte("FROM_FILE=1\nBOTH=file\n"), 0o600)
	venv := filepath.Join(dir, "venv")
	os.MkdirAll(filepath.Join(venv, "bin"), 0o755)
	os.WriteFile(filepath.Join(venv, "bin", "python"), []byte("#!/bin/sh\n"), 0o755)
	t.Setenv("HEARTH_TEST_HOME", "/home/test")

	spec, err := PoolConfig{
		Dir: dir, Venv: "venv", EnvFile: ".env", Workers: 3,
		Env: map[string]string{"BOTH": "env", "HOME_COPY": "{env.HEARTH_TEST_HOME}"},
	}.resolve("mysite.wsgi:application")
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(spec.Env, "\n") + "\n"
	for _, want := range []string{"FROM_FILE=1\n", "BOTH=env\n", "HOME_COPY=/home/test\n", "VIRTUAL_ENV=" + venv + "\n", "PATH=" + venv + "/bin:"} {
		if !strings.Contains(env, want) {
			t.Errorf("environment lacks %q", want)
		}
	}
	if spec.Name != "mysite" || spec.Python != filepath.Join(venv, "bin", "python") || spec.Workers != 3 || spec.Threads != 1 {
		t.Errorf("spec: %+v", spec)
	}
	if spec.MaxQueue != DefaultMaxQueue || spec.MaxQueuePerClient != DefaultMaxQueue/4 || spec.QueueTimeout != DefaultQueueTimeout || spec.StartTimeout != DefaultStartTimeout || spec.CPUPolicy != "batch" {
		t.Errorf("defaults not applied: %+v", spec)
	}
	for _, c := range []struct{ maxQueue, perClient, want int }{{100, 0, 25}, {3, 0, 1}, {1, 0, 1}, {100, 100, 100}, {0, 7, 7}} {
		if got, err := (PoolConfig{Dir: dir, MaxQueue: c.maxQueue, MaxQueuePerClient: c.perClient}).resolve("mysite.wsgi:application"); err != nil || got.MaxQueuePerClient != c.want {
			t.Errorf("max_queue %d, max_queue_per_client %d: %v, %d per client; want %d", c.maxQueue, c.perClient, err, got.MaxQueuePerClient, c.want)
		}
	}
	again, _ := PoolConfig{Dir: dir, Venv: "venv", EnvFile: ".env", Workers: 3,
		Env: map[string]string{"BOTH": "env", "HOME_COPY": "{env.HEARTH_TEST_HOME}"}}.resolve("mysite.wsgi:application")
	if again.key() != spec.key() {
		t.Errorf("the same config gave two pool keys")
	}
	changed, _ := PoolConfig{Dir: dir, Venv: "venv", EnvFile: ".env", Workers: 4}.resolve("mysite.wsgi:application")
	if changed.key() == spec.key() {
		t.Errorf("a changed config kept the pool key")
	}
	// the default spelled out is the same pool; another policy is another
	batch, _ := PoolConfig{Dir: dir, Venv: "venv", EnvFile: ".env", Workers: 3, CPUPolicy: "batch",
		Env: map[string]string{"BOTH": "env", "HOME_COPY": "{env.HEARTH_TEST_HOME}"}}.resolve("mysite.wsgi:application")
	normal, _ := PoolConfig{Dir: dir, Venv: "venv", EnvFile: ".env", Workers: 3, CPUPolicy: "normal",
		Env: map[string]string{"BOTH": "env", "HOME_COPY": "{env.HEARTH_TEST_HOME}"}}.resolve("mysite.wsgi:application")
	if batch.key() != spec.key() || normal.key() == spec.key() {
		t.Errorf("cpu_policy batch gave another pool key (%v), or normal the same (%v)", batch.key() != spec.key(), normal.key() == spec.key())
	}
}

func TestResolveErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		app  string
		cfg  PoolConfig
		want string
	}{
		{"no module", ":app", PoolConfig{Dir: dir}, "not of the form module:callable"},
		{"a file path", "app.py/x", PoolConfig{Dir: dir}, "not of the form module:callable"},
		{"negative workers", "a:b", PoolConfig{Dir: dir, Workers: -1}, "workers must be a whole number of at least 1, got -1"},
		{"negative threads", "a:b", PoolConfig{Dir: dir, Threads: -3}, "threads must be a whole number of at least 1, got -3"},
		{"too many workers", "a:b", PoolConfig{Dir: dir, Workers: 100000}, "workers 100000 is more than the 1024 allowed"},
		{"too many max_workers", "a:b", PoolConfig{Dir: dir, Workers: 2, MaxWorkers: 5000}, "max_workers 5000 is more than the 1024 allowed"},
		{"too many threads", "a:b", PoolConfig{Dir: dir, Threads: 100000}, "threads 100000 is more than the 1024 allowed"},
		{"max_workers below workers", "a:b", PoolConfig{Dir: dir, Workers: 3, MaxWorkers: 2}, "max_workers (2) is below workers (3)"},
		{"workers × threads", "a:b", PoolConfig{Dir: dir, Workers: 1024, Threads: 1024}, "workers × threads is 1024 × 1024 = 1048576 channels, more than the 65536"},
		{"max_workers × threads", "a:b", PoolConfig{Dir: dir, Workers: 1, MaxWorkers: 200, Threads: 400}, "max_workers × threads is 200 × 400 = 80000 channels"},
		{"jitter alone", "a:b", PoolConfig{Dir: dir, MaxRequestsJitter: 5}, "max_requests_jitter needs max_requests"},
		{"a malformed watch glob", "a:b", PoolConfig{Dir: dir, Watch: []string{"**/[.py"}}, `watch glob "**/[.py" is malformed`},
		{"a jitter past any worker's life", "a:b", PoolConfig{Dir: dir, MaxRequests: 10, MaxRequestsJitter: math.MaxInt}, "may be at most 1000000000000"},
		{"empty before_start", "a:b", PoolConfig{Dir: dir, BeforeStart: [][]string{{}}}, "before_start command 1 is empty"},
		{"before_start without a program", "a:b", PoolConfig{Dir: dir, BeforeStart: [][]string{{"true"}, {" ", "x"}}}, "before_start command 2 is empty"},
		{"negative timeout", "a:b", PoolConfig{Dir: dir, QueueTimeout: caddy.Duration(-time.Second)}, "queue_timeout must be a positive duration"},
		{"unknown pipeline", "a:b", PoolConfig{Dir: dir, Pipeline: "on"}, `pipeline "on" is not one of auto, off`},
		{"unknown cpu_policy", "a:b", PoolConfig{Dir: dir, CPUPolicy: "idle"}, `cpu_policy "idle" is not one of batch, normal`},
		{"missing dir", "a:b", PoolConfig{Dir: filepath.Join(dir, "nope")}, "set `dir` to the directory holding your app"},
		{"python and venv", "a:b", PoolConfig{Dir: dir, Python: "/usr/bin/python3", Venv: "v"}, "python and venv are both set"},
		{"venv without python", "a:b", PoolConfig{Dir: dir, Venv: "v"}, "has no bin/python"},
		{"unknown interpreter", "a:b", PoolConfig{Dir: dir, Python: "python-does-not-exist"}, "not found in PATH"},
		{"missing env_file", "a:b", PoolConfig{Dir: dir, EnvFile: "missing.env"}, "env_file"},
		{"bad env name", "a:b", PoolConfig{Dir: dir, Env: map[string]string{"A=B": "x"}}, "not a valid variable name"},
		// the admin API's routes split on '/': POST /hearth/apps/a/b/restart reaches no app
		{"a name with a slash", "a:b", PoolConfig{Dir: dir, Name: "a/b"}, `app name "a/b" may hold only letters, digits`},
		{"a name with a newline", "a:b", PoolConfig{Dir: dir, Name: "web\nFAKE LOG LINE"}, "may hold only letters, digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.resolve(tc.app)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestClosest(t *testing.T) {
	for in, want := range map[string]string{"wokers": "workers", "thread": "threads", "env_fil": "env_file", "zzzzzz": ""} {
		if got := closest(in, wsgiOptions); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"512MiB", 512 << 20, ""},
		{"1.5GiB", 3 << 29, ""},
		{"100000", 100000, ""},
		{"10MB", 10_000_000, ""},
		{"1.5", 0, "not a whole number of bytes"},
		{"0.3KB", 300, ""},
		{"0.0001KB", 0, "not a whole number of bytes"},
		{"0", 0, "not a size"},
		{"-5MB", 0, "not a size"},
		{"lots", 0, "not a size"},
		{"5 parsecs", 0, "not a size"},
	} {
		got, err := parseSize("max_memory", tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %d, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}
