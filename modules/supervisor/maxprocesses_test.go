package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

// forkBomb is a Python script that prints its RLIMIT_NPROC, then forks
// children that sleep until it has started 300 or a fork fails, and
// prints how many it started and how the last one failed; it ends them
// before it exits.
const forkBomb = `
import os, resource, signal, time
print("limit", *resource.getrlimit(resource.RLIMIT_NPROC))
kids, failure = [], "none"
while len(kids) < 300:
    try:
        pid = os.fork()
    except OSError as e:
        failure = "errno %d" % e.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
for pid in kids:
    os.waitpid(pid, 0)
print("started", len(kids), failure)
`

// stranger is the account the tests run another account's processes as:
// a uid of no account, which no other test (of this package or another,
// running at the same time) uses, since the limit counts the account's
// every process.
var stranger = &syscall.Credential{Uid: strangerUID, Gid: strangerUID}

const strangerUID = 64123

// runForkBomb runs forkBomb as cred and returns its lines' fields.
func runForkBomb(t *testing.T, cred *syscall.Credential) (limit []string, started string, failure string) {
	t.Helper()
	out, err := Run(context.Background(), Command{Path: "/usr/bin/python3", Args: []string{"-c", forkBomb}, Dir: "/", Credential: cred}, zap.NewNop())
	if err != nil {
		t.Fatalf("the fork bomb: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("the fork bomb wrote %q", out)
	}
	first, last := strings.Fields(lines[0]), strings.Fields(lines[1])
	if len(first) != 3 || len(last) < 3 {
		t.Fatalf("the fork bomb wrote %q", out)
	}
	return first[1:], last[1], strings.Join(last[2:], " ")
}

// An app's account cannot take the machine's processes: a process run as
// another account than Caddy's gets max_processes as its RLIMIT_NPROC,
// soft and hard, and its forks past it fail with EAGAIN; one of Caddy's
// own account keeps Caddy's limit.
func TestMaxProcessesHoldsAnotherAccount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a process as another account")
	}
	if others := accountProcesses(t, strangerUID); others != 0 {
		t.Skipf("uid %d already has %d processes or threads: the count would be theirs too", strangerUID, others)
	}
	previous := SetMaxProcesses(128)
	t.Cleanup(func() { SetMaxProcesses(previous) })

	limit, started, failure := runForkBomb(t, stranger)
	if strings.Join(limit, " ") != "128 128" {
		t.Errorf("RLIMIT_NPROC of another account's process: %v, want 128 128", limit)
	}
	if started != "127" || failure != fmt.Sprintf("errno %d", syscall.EAGAIN) {
		t.Errorf("the fork bomb started %s children (%s); want 127, the 128th refused with EAGAIN", started, failure)
	}

	var own syscall.Rlimit
	if err := syscall.Getrlimit(6, &own); err != nil { // RLIMIT_NPROC
		t.Fatal(err)
	}
	out, err := Run(context.Background(), Command{Path: "/usr/bin/python3", Args: []string{"-c", "import resource; print(*resource.getrlimit(resource.RLIMIT_NPROC))"}}, zap.NewNop())
	if want := fmt.Sprintf("%d %d", own.Cur, own.Max); err != nil || strings.TrimSpace(string(out)) != want && !(own.Cur == ^uint64(0) && strings.TrimSpace(string(out)) == "-1 -1") {
		t.Errorf("RLIMIT_NPROC of a process of Caddy's account: %q, %v; want Caddy's, %s", out, err, want)
	}

	SetMaxProcesses(0)
	if _, started, _ := runForkBomb(t, stranger); started != "300" {
		t.Errorf("max_processes off: the fork bomb started %s children, want all 300", started)
	}
}

// A process started under a limit is the program it asked for, as any
// other: its argv, its descriptors and none more (the step's report
// descriptor is not among them), default signal dispositions and mask;
// a program its account cannot execute fails to start, saying so.
func TestALimitedStartIsTheProgramItself(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a process as another account")
	}
	previous := SetMaxProcesses(256)
	t.Cleanup(func() { SetMaxProcesses(previous) })
	extra, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	script := "import os; s = open('/proc/self/status').read().split('\\n'); " +
		"print(open('/proc/self/cmdline').read().replace('\\0', ' ').strip()); " +
		"print(' '.join(sorted(os.listdir('/proc/self/fd'), key=int))); " +
		"print(' '.join(l for l in s if l.startswith(('SigBlk', 'SigIgn'))))"
	run := func() []string {
		t.Helper()
		out, err := Run(context.Background(), Command{Path: "/usr/bin/python3", Args: []string{"-c", script}, Dir: "/", Credential: stranger, ExtraFiles: []*os.File{extra}}, zap.NewNop())
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err != nil || len(lines) != 3 {
			t.Fatalf("%v: %q", err, out)
		}
		return lines
	}
	lines := run()
	if lines[0] != "/usr/bin/python3 -c "+script {
		t.Errorf("its command line: %q", lines[0])
	}
	if lines[1] != "0 1 2 3 4" { // stdin, stdout, stderr, the extra file, and python's own open of fd
		t.Errorf("its descriptors: %q, want 0 1 2 3 and the one listing them", lines[1])
	}
	SetMaxProcesses(0)
	if unlimited := run(); lines[2] != unlimited[2] {
		t.Errorf("its signals: %q; started without a limit: %q", lines[2], unlimited[2])
	}
	SetMaxProcesses(256)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	private := filepath.Join(dir, "private")
	os.WriteFile(private, []byte("#!/bin/sh\necho ran\n"), 0o700)
	_, err = Run(context.Background(), Command{Path: private, Dir: "/", Credential: stranger}, zap.NewNop())
	if !errors.Is(err, syscall.EACCES) {
		t.Errorf("a program the account cannot execute: %v, want permission denied", err)
	}
}

// accountProcesses counts the threads of uid's processes.
func accountProcesses(t *testing.T, uid uint32) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		var st syscall.Stat_t
		if e.Name()[0] < '0' || e.Name()[0] > '9' || syscall.Stat("/proc/"+e.Name(), &st) != nil || st.Uid != uid {
			continue
		}
		tasks, _ := os.ReadDir("/proc/" + e.Name() + "/task")
		n += len(tasks)
	}
	return n
}

// A process that cannot start because its account is past max_processes
// (the kernel refuses the execution once the account has more than the
// limit: here, started under a higher one) fails saying so, and what to do.
func TestStartPastMaxProcessesSaysWhy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a process as another account")
	}
	if others := accountProcesses(t, strangerUID); others != 0 {
		t.Skipf("uid %d already has %d processes or threads", strangerUID, others)
	}
	previous := SetMaxProcesses(256)
	t.Cleanup(func() { SetMaxProcesses(previous) })
	hold := `
import os, time
for _ in range(150):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
time.sleep(60)
`
	p, err := Start(Command{Path: "/usr/bin/python3", Args: []string{"-c", hold}, Dir: "/", Credential: stranger}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(syscall.SIGKILL, 0) })
	for deadline := time.Now().Add(10 * time.Second); accountProcesses(t, strangerUID) < 151; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the account has %d processes, want 151", accountProcesses(t, strangerUID))
		}
	}
	SetMaxProcesses(128)
	_, err = Run(context.Background(), Command{Path: "/bin/true", Dir: "/", Credential: stranger}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "has more than max_processes (128) processes and threads") || !strings.Contains(err.Error(), fmt.Sprintf("ps -L -u %d", strangerUID)) {
		t.Errorf("a start past the limit: %v", err)
	} else {
		t.Log(err)
	}
}

// A pool starting its workers at once under a limit: the first steps of
// the starts, each a Go program with threads of its own counted against
// the account, run one at a time, so that they do not fill the limit they
// check (100 at once went over 128).
func TestManyLimitedStartsAtOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a process as another account")
	}
	if others := accountProcesses(t, strangerUID); others != 0 {
		t.Skipf("uid %d already has %d processes or threads", strangerUID, others)
	}
	previous := SetMaxProcesses(128)
	t.Cleanup(func() { SetMaxProcesses(previous) })
	const n = 100
	procs := make([]*Process, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			procs[i], errs[i] = Start(Command{Path: "/bin/sleep", Args: []string{"60"}, Dir: "/", Credential: stranger}, zap.NewNop())
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, p := range procs {
			if p != nil {
				p.Stop(syscall.SIGKILL, 0)
			}
		}
	})
	time.Sleep(300 * time.Millisecond) // a step that died would be seen as its process's end by now
	for i := range n {
		if errs[i] != nil {
			t.Errorf("start %d: %v", i, errs[i])
		} else if procs[i].Exited() {
			t.Errorf("start %d: its process ended: %s", i, procs[i].ExitDescription())
		}
	}
}
