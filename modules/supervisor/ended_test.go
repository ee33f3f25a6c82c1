package supervisor

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestEndedBeforeTheOutputDrains: Ended closes when the process ends,
// while Done waits for its output, which a descendant that holds its
// pipes keeps open for up to outputDrain: what the process held (a port)
// is free from Ended on.
func TestEndedBeforeTheOutputDrains(t *testing.T) {
	p, err := Start(Command{Path: "/bin/sh", Args: []string{"-c", "sleep 60 & exit 0"}, Env: []string{"PATH=/usr/bin:/bin"}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-p.Pid(), syscall.SIGKILL) })
	select {
	case <-p.Ended():
	case <-time.After(20 * time.Second):
		t.Fatal("Ended not closed 20 s after the shell exited")
	}
	select {
	case <-p.Done():
		t.Fatal("Done closed with Ended, while the shell's child holds its output (outputDrain is 2 s)")
	default:
	}
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("Done not closed after outputDrain")
	}
}

// TestSignalReachesAProcessThatLeftItsGroup: a process that left its
// process group for another of its session (a forked worker may join its
// fork server's) still gets the signals Hearth sends it (a hung worker's
// SIGKILL); they went to its empty group before, and it ran on, its
// replica waiting for its end for good.
func TestSignalReachesAProcessThatLeftItsGroup(t *testing.T) {
	cmd := exec.Command("/usr/bin/python3", "-c", "import os, time\nos.setpgid(0, os.getpgid(os.getppid()))\nprint('moved', flush=True)\ntime.sleep(60)")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "moved\n" {
		_ = cmd.Process.Kill()
		t.Fatalf("the child said %q", line)
	}
	go func() { exited <- cmd.Wait() }()
	r1, w1, _ := os.Pipe()
	r2, w2, _ := os.Pipe()
	w1.Close()
	w2.Close()
	self, err := Pin(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Adopt(cmd.Process.Pid, self, r1, r2, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("the process that left its group did not get the signal")
	}
}

// TestAdoptRefusesAChildOfAParentThatEnded: a worker is adopted only while
// the fork server that named itself (pinned by a pidfd at its greeting)
// is alive: once it has ended, its number may be another account's
// process, whose children the app could name as its workers (and have
// Caddy signal them). Here the number is the test's own, the pidfd that of
// a process that ended: a child of the test's is refused.
func TestAdoptRefusesAChildOfAParentThatEnded(t *testing.T) {
	ended := exec.Command("/bin/true")
	if err := ended.Start(); err != nil {
		t.Fatal(err)
	}
	held, err := Pin(ended.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	_ = ended.Wait()
	child := exec.Command("/bin/sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	reused := &Pinned{pid: os.Getpid(), fd: held.fd} // the ended one's number, taken since by this process
	r1, w1, _ := os.Pipe()
	r2, w2, _ := os.Pipe()
	w1.Close()
	w2.Close()
	if _, err := Adopt(child.Process.Pid, reused, r1, r2, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "which has ended") {
		t.Errorf("adopting a child of a number whose process ended: %v", err)
	}
	self, err := Pin(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	r1, w1, _ = os.Pipe()
	r2, w2, _ = os.Pipe()
	w1.Close()
	w2.Close()
	p, err := Adopt(child.Process.Pid, self, r1, r2, zap.NewNop())
	if err != nil {
		t.Fatalf("adopting a child of a living parent: %v", err)
	}
	_ = p.Signal(syscall.SIGKILL)
}
