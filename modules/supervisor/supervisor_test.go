package supervisor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Stable: 10 * time.Second}
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, b.Failed(time.Millisecond))
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v, want %v ms", got, want)
		}
	}
	if d := b.Failed(time.Minute); d != 100*time.Millisecond || b.Failures() != 1 {
		t.Errorf("a process that ran stably should reset the backoff: %s, %d failures", d, b.Failures())
	}
}

func TestOutputForwardedAndGroupStopped(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	// the shell starts a grandchild that ignores SIGTERM; stopping the
	// process must take the whole group down
	p, err := Start(Command{
		Path: "/bin/sh",
		Args: []string{"-c", `echo to-stdout; echo to-stderr >&2; (trap "" TERM; sleep 60) & echo $! ; wait`},
		Env:  os.Environ(),
	}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	var grandchild int
	deadline := time.Now().Add(5 * time.Second)
	for grandchild == 0 && time.Now().Before(deadline) {
		for _, e := range logs.FilterField(zap.String("stream", "stdout")).All() {
			if n, err := strconv.Atoi(e.Message); err == nil {
				grandchild = n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if grandchild == 0 {
		t.Fatalf("no grandchild pid in output: %v", logs.All())
	}
	p.Stop(syscall.SIGTERM, 300*time.Millisecond)
	if !p.Exited() {
		t.Fatal("process still running after Stop")
	}
	for i := 0; i < 100; i++ {
		if err := syscall.Kill(grandchild, 0); err == syscall.ESRCH {
			break
		}
		if !Alive(grandchild) {
			break
		}
		if i == 99 {
			syscall.Kill(grandchild, syscall.SIGKILL)
			t.Fatalf("grandchild %d survived the group stop", grandchild)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if logs.FilterMessage("to-stderr").FilterField(zap.String("stream", "stderr")).Len() != 1 {
		t.Errorf("stderr line not logged with its stream: %v", logs.All())
	}
	if logs.FilterMessage("to-stdout").FilterField(zap.Int("pid", p.Pid())).Len() != 1 {
		t.Errorf("stdout line not logged with the pid: %v", logs.All())
	}
}

// TestMissingDirectorySaysSo: a `dir` that is not there is refused when
// the config loads, naming it; one removed after that fails the start
// naming the directory, not the program ("fork/exec /usr/bin/sleep: no
// such file or directory" sent the user looking for sleep).
func TestMissingDirectorySaysSo(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	if _, err := (&Placement{Dir: missing}).Resolve(); err == nil || !strings.Contains(err.Error(), "dir "+missing+" does not exist") {
		t.Errorf("Resolve with a missing dir: %v", err)
	}
	if _, err := (&Placement{Dir: t.TempDir()}).Resolve(); err != nil {
		t.Errorf("Resolve with a dir that is there: %v", err)
	}
	_, err := Start(Command{Path: "/bin/true", Dir: missing, Env: os.Environ()}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "its directory "+missing+" does not exist") {
		t.Errorf("a start in a directory that is not there: %v", err)
	}
}
