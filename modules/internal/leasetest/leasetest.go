// Package leasetest holds a write lease (F_SETLEASE) on a file from
// another process, for tests of code that must not wait on one: every open
// of the file by another process then waits up to lease-break-time (45 s)
// unless it does not block.
package leasetest

import (
	"bufio"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Hold has a process of account uid (its group the same number) take a
// write lease on path, which that account must own, and keep it (a break
// asked is ignored) until the test ends. It skips the test where setpriv
// or python3 cannot be run.
func Hold(t *testing.T, path string, uid int) {
	t.Helper()
	id := strconv.Itoa(uid)
	holder := exec.Command("setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "/usr/bin/python3", "-c", `
import fcntl, os, signal, sys, time
signal.signal(signal.SIGIO, signal.SIG_IGN)  # a lease break asked: kept anyway
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.fcntl(fd, 1024, fcntl.F_WRLCK)  # F_SETLEASE
print("held", flush=True)
time.sleep(60)
`, path)
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Skipf("setpriv or python3: %v", err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "held\n" {
		t.Fatalf("no lease taken on %s: %q %s", path, line, stderr.String())
	}
}

// Refused checks that open, which opens the leased file, fails at once
// rather than waiting for the lease to go (10 s at most).
func Refused(t *testing.T, open func() (io.Closer, error)) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		f, err := open()
		if err == nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a file under another process's write lease opened")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open waits for the lease to be given up")
	}
}
