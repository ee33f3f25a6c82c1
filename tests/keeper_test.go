package tests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKeeperSkipsCaddysInit: the process keeper (Caddy's binary started
// again as hearth-keeper) acts from an init function that Go runs before
// Caddy's packages are initialized, so it carries none of their memory
// (Caddy's ~400 package initializers allocate ~9 MB and touch tens of MB
// of the binary). With GODEBUG=inittrace=1 every package initialized
// before the keeper took over is listed: neither Caddy nor net/http nor
// zap may be among them, and the keeper must still serve (it exits 0 when
// its socket closes, without Caddy's usage text).
func TestKeeperSkipsCaddysInit(t *testing.T) {
	t.Parallel()
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "caddy side"), os.NewFile(uintptr(pair[1]), "keeper side")
	defer mine.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBinary(t))
	cmd.Args = []string{"hearth-keeper"}
	cmd.Env = []string{"HEARTH_KEEPER_FD=3", "GODEBUG=inittrace=1"}
	cmd.ExtraFiles = []*os.File{theirs}
	var stderr bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	// a keeper answers a request it cannot parse: proof that it serves
	if _, err := mine.Write([]byte{2, '{'}); err != nil {
		t.Fatal(err)
	}
	mine.SetReadDeadline(time.Now().Add(15 * time.Second))
	reply := make([]byte, 1024)
	n, err := mine.Read(reply)
	if err != nil || !strings.Contains(string(reply[:n]), "malformed request to the process keeper") {
		t.Errorf("the keeper's answer to a malformed request: %q, %v", reply[:n], err)
	}
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm"); string(comm) != "hearth-keeper\n" {
		t.Errorf("the keeper's name in top and /proc/<pid>/comm: %q, want hearth-keeper", comm)
	}
	mine.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the keeper, once its socket closed: %v\n%s", err, stderr.String())
	}
	var before []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "init" {
			before = append(before, f[1])
		} else if strings.TrimSpace(line) != "" {
			t.Errorf("the keeper wrote %q", line)
		}
	}
	if len(before) == 0 {
		t.Fatalf("no package initialization traced (GODEBUG=inittrace=1 ignored?): %s", stderr.String())
	}
	for _, pkg := range before {
		if pkg == "net/http" || pkg == "go.uber.org/zap" || strings.HasPrefix(pkg, "github.com/caddyserver/") {
			t.Errorf("%s was initialized before the keeper took over (the keeper package must import only the standard library)", pkg)
		}
	}
	t.Logf("%d packages initialized before the keeper took over", len(before))
}
