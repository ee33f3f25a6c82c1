package service

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

// TestFailedStartStopsTheOthersAtOnce: when one process of a service fails
// to start, the others are told to stop at once, not one after the other
// (each given its stop_timeout: a service of processes that ignore the
// stop signal held a failed start, and Caddy's config lock, for
// stop_timeout each). Each process notes the signal; all have it before
// the first one's stop_timeout has passed.
func TestFailedStartStopsTheOthersAtOnce(t *testing.T) {
	dir := t.TempDir()
	g := &Group{spec: &Spec{Name: "stubborn", StopSignal: syscall.SIGTERM, StopTimeout: 3 * time.Second}, logger: zap.NewNop()}
	var procs []*proc
	for i := range 4 {
		p, err := supervisor.Start(supervisor.Command{Path: "/bin/sh", Args: []string{"-c",
			"trap 'echo > " + filepath.Join(dir, strconv.Itoa(i)) + "' TERM; : > " + filepath.Join(dir, "ready-"+strconv.Itoa(i)) + "; while :; do sleep 0.1; done"}}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, &proc{p: p})
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // their traps set
		if entries, _ := os.ReadDir(dir); len(entries) == len(procs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shells did not start")
		}
	}
	stopped := make(chan struct{})
	go func() { g.stopAll(procs); close(stopped) }()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		entries, _ := os.ReadDir(dir)
		if len(entries) == 2*len(procs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d processes had the stop signal before the first one's stop_timeout (3 s) passed", len(entries)-len(procs), len(procs))
		}
	}
	<-stopped
}
