package supervisor

import (
	"bufio"
	"os"
	"os/exec"
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
	p, err := Adopt(cmd.Process.Pid, os.Getpid(), r1, r2, zap.NewNop())
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
