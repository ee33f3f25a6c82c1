package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/internal/keeper"
)

// parentModeEnv makes the test binary act as a Caddy that starts
// processes through Start, prints "ready", and then ends as the value says:
// "panic" (a Go panic) or "wait" (until the test SIGKILLs it).
const parentModeEnv = "HEARTH_TEST_PARENT_MODE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(parentModeEnv); mode != "" {
		os.Exit(actAsParent(mode))
	}
	os.Exit(m.Run())
}

// actAsParent starts the kinds of descendants that used to outlive Caddy:
// a shell's child in the shell's group, a child in a session of its own,
// and a daemon that forked twice (its parent exits at once).
func actAsParent(mode string) int {
	if mode == "descriptors" {
		return listChildDescriptors()
	}
	if mode == "chain" {
		// a chain of processes, each in a session (and group) of its own,
		// each the parent of the next: tests/ passes its script and length
		if _, err := Start(Command{Path: "/bin/sh", Args: []string{os.Getenv(chainScriptEnv), chainLength, os.Getenv(chainLeafEnv)}, Env: []string{"PATH=/usr/bin:/bin"}}, zap.NewNop()); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			return 1
		}
		os.Stdout.WriteString("ready\n")
		select {}
	}
	scripts := []string{
		`sleep 600 & wait`,
		`setsid sleep 600 & wait`,
		`setsid sh -c 'sleep 600 & exit 0'; sleep 600`,
	}
	for _, s := range scripts {
		if _, err := Start(Command{Path: "/bin/sh", Args: []string{"-c", s}, Env: []string{"PATH=/usr/bin:/bin"}}, zap.NewNop()); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			return 1
		}
	}
	os.Stdout.WriteString("ready\n")
	if mode == "panic" {
		time.Sleep(300 * time.Millisecond) // the shells have started theirs
		panic("a panic in Caddy")
	}
	select {}
}

// listChildDescriptors opens a descriptor without close-on-exec (as a C
// library in Caddy might, after Caddy's start) before the keeper starts,
// then prints the descriptors of a child started through the keeper.
func listChildDescriptors() int {
	fd, err := syscall.Open("/", syscall.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		return 1
	}
	out, err := Run(context.Background(), Command{Path: "/bin/sh", Args: []string{"-c", "ls /proc/$$/fd"}}, zap.NewNop())
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		return 1
	}
	os.Stdout.WriteString(strconv.Itoa(fd) + ": " + strings.Join(strings.Fields(string(out)), " ") + "\n")
	return 0
}

// TestKeeperPassesOnNoInheritedDescriptor: a descriptor Caddy holds
// without close-on-exec when it starts the keeper reaches the keeper, but
// no child the keeper starts.
func TestKeeperPassesOnNoInheritedDescriptor(t *testing.T) {
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), parentModeEnv+"=descriptors")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	fd, fds, _ := strings.Cut(strings.TrimSpace(string(out)), ": ")
	if fds != "0 1 2" {
		t.Errorf("the child's descriptors: %q, want 0 1 2 (fd %s is the one Caddy held without close-on-exec)", fds, fd)
	}
}

// descendants lists every process below pid.
func descendants(pid int) []int {
	parents := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			pp := keeper.ParentPID(p)
			parents[pp] = append(parents[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range parents[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func TestNothingOutlivesItsCaddy(t *testing.T) {
	for _, mode := range []string{"wait", "panic"} {
		t.Run(mode, func(t *testing.T) {
			cmd, exited := startParent(t, mode)
			// four sleeps: one in a shell's group, one in a session of its
			// own, and one of each kind from the daemon's script
			var procs []int
			sleeps := func() (n int) {
				procs = descendants(cmd.Process.Pid)
				for _, pid := range procs {
					if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); string(comm) == "sleep\n" {
						n++
					}
				}
				return n
			}
			deadline := time.Now().Add(5 * time.Second)
			for sleeps() < 4 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if n := sleeps(); n != 4 {
				_ = cmd.Process.Kill()
				t.Fatalf("the parent has %d sleeps among its descendants %v, want 4", n, procs)
			}
			if mode == "wait" {
				_ = cmd.Process.Kill()
			}
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Fatal("the parent did not end")
			}
			deadline = time.Now().Add(5 * time.Second)
			for _, pid := range procs {
				for Alive(pid) && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if Alive(pid) {
					cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
					t.Errorf("process %d (%q) outlived its Caddy by 5s", pid, cmdline)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
	}
}

// The chain's script, its leaf's mark, and its length: more levels than
// the keeper's wait of 4 s would end one round (~10 ms) at a time.
const (
	chainScriptEnv = "HEARTH_TEST_CHAIN_SCRIPT"
	chainLeafEnv   = "HEARTH_TEST_CHAIN_LEAF"
	chainLength    = "600"
	chainScript    = `n=$1
if [ "$n" -gt 0 ]; then exec setsid -w /bin/sh "$0" $((n-1)) "$2"; fi
: > "$2"
exec sleep 600
`
)

// TestAChainOfGroupsDoesNotOutliveItsCaddy: an app's chain of processes,
// each in a group of its own and the parent of the next, ends with Caddy:
// the keeper killed its children and their groups a round at a time,
// each orphan reaching it only once its parent had died, and gave up
// after 4 s with hundreds left.
func TestAChainOfGroupsDoesNotOutliveItsCaddy(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid here")
	}
	dir := t.TempDir()
	script, leaf := filepath.Join(dir, "chain.sh"), filepath.Join(dir, "leaf")
	if err := os.WriteFile(script, []byte(chainScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, exited := startParent(t, "chain", chainScriptEnv+"="+script, chainLeafEnv+"="+leaf)
	defer func() { _ = cmd.Process.Kill() }()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(leaf); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the chain was not built within 60 s (%d processes)", len(descendants(cmd.Process.Pid)))
		}
	}
	procs := descendants(cmd.Process.Pid)
	_ = cmd.Process.Kill() // Caddy gone: the keeper ends what it started
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the parent did not end")
	}
	deadline := time.Now().Add(20 * time.Second)
	var alive []int
	for _, pid := range procs {
		for Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if Alive(pid) {
			alive = append(alive, pid)
		}
	}
	for _, pid := range alive {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(alive) > 0 {
		t.Errorf("%d of the chain's %d processes outlived their Caddy", len(alive), len(procs))
	}
}

// startParent starts the test binary acting as a Caddy (parentModeEnv)
// in mode, with env added, and waits for its "ready"; exited is closed
// when it has ended.
func startParent(t *testing.T, mode string, env ...string) (cmd *exec.Cmd, exited chan struct{}) {
	t.Helper()
	cmd = exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(append(os.Environ(), parentModeEnv+"="+mode), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		_ = cmd.Process.Kill()
		t.Fatalf("the parent said %q", line)
	}
	return cmd, exited
}

func TestRunReportsTheEnd(t *testing.T) {
	big := strings.Repeat("x", 3*keeper.PacketSize) // an environment spread over several packets
	for _, tc := range []struct {
		script, want, out string
	}{
		{`echo "${#BIG}"`, "", strconv.Itoa(len(big)) + "\n"},
		{`echo to-stderr >&2; exit 3`, "exit status 3", "to-stderr\n"},
		{`kill -9 $$`, "signal: killed", ""},
		// SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM and
		// SIGTERM not ignored: a child can be stopped by them
		// (signals 1 to 16: the last four hex digits of the mask)
		{`exec awk '/^SigIgn/ { print substr($2, 13) }' /proc/self/status`, "", "0000\n"},
	} {
		out, err := Run(context.Background(), Command{Path: "sh", Args: []string{"-c", tc.script}, Env: []string{"BIG=" + big}}, zap.NewNop())
		if got := ""; err != nil {
			got = err.Error()
			if got != tc.want {
				t.Errorf("%s: %q, want %q", tc.script, got, tc.want)
			}
		} else if tc.want != "" {
			t.Errorf("%s: no error, want %q", tc.script, tc.want)
		}
		if string(out) != tc.out {
			t.Errorf("%s: output %q, want %q", tc.script, out, tc.out)
		}
	}
	_, err := Run(context.Background(), Command{Path: "/nonexistent/program"}, zap.NewNop())
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "/nonexistent/program") {
		t.Errorf("a missing program: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Run(ctx, Command{Path: "/bin/sh", Args: []string{"-c", "sleep 60; echo never"}}, zap.NewNop())
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("a timed-out run: %v after %s", err, time.Since(start))
	}
}

// A run leaves nothing behind: what the command started in the
// background and did not wait for ends with it.
func TestRunLeavesNothingBehind(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	out, err := Run(context.Background(), Command{Path: "/bin/sh", Args: []string{"-c", `sleep 60 & echo $! > "$0"; echo done`, pidFile}}, zap.NewNop())
	if err != nil || string(out) != "done\n" {
		t.Fatalf("run: %q, %v", out, err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid <= 1 {
		t.Fatalf("pid %q", data)
	}
	if d := time.Since(start); d > outputDrain+3*time.Second {
		t.Errorf("the run took %s", d)
	}
	for deadline := time.Now().Add(5 * time.Second); Alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the background process %d outlived its run", pid)
		}
	}
}

func TestManyDescriptorsReachTheChild(t *testing.T) {
	// a worker with hundreds of channels: more than one packet can carry
	var files []*os.File
	for i := 0; i < 300; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		files = append(files, w)
	}
	out, err := Run(context.Background(), Command{Path: "/bin/sh", Args: []string{"-c", "ls /proc/$$/fd | wc -l"}, ExtraFiles: files}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	// 0-2, the 300, and the directory ls reads (or sh's own)
	if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); n < 303 || n > 305 {
		t.Errorf("the child has %s descriptors, want 303 and the one ls reads", out)
	}
}

// TestQuickProcessesEndCleanly: a process that ends before its starter
// has seen its pid (the keeper reports both at once) is still reported
// with its own exit status, never as lost with the keeper.
func TestQuickProcessesEndCleanly(t *testing.T) {
	errs := make(chan error, 200)
	for g := 0; g < 4; g++ {
		go func() {
			for i := 0; i < 50; i++ {
				_, err := Run(context.Background(), Command{Path: "/bin/true"}, zap.NewNop())
				errs <- err
			}
		}()
	}
	for i := 0; i < 200; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("run %d of /bin/true: %v", i, err)
		}
	}
}

// TestChildGetsOnlyItsDescriptors: the keeper's socket to Caddy (its fd
// 3) reaches no child: one given no extra descriptors has 0, 1 and 2.
func TestChildGetsOnlyItsDescriptors(t *testing.T) {
	out, err := Run(context.Background(), Command{Path: "/bin/sh", Args: []string{"-c", "ls /proc/$$/fd"}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(string(out)), " "); got != "0 1 2" {
		t.Errorf("the child's descriptors: %s, want 0 1 2", got)
	}
}

// TestNoKeeperFromASecureExecution: a Caddy binary with file capabilities,
// run by another user under the keeper's name, refuses to act as one (it
// would start any program as any user).
func TestNoKeeperFromASecureExecution(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (setcap, setpriv)")
	}
	for _, tool := range []string{"setcap", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir makes its parent 0700
	self, _ := os.Executable()
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := dir + "/caddy-with-caps"
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("setcap", "cap_kill+ep", bin).CombinedOutput(); err != nil {
		t.Skipf("setcap on %s: %v %s", dir, err, out)
	}
	sock, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(sock[0])
	theirs := os.NewFile(uintptr(sock[1]), "keeper")
	defer theirs.Close()
	// a keeper that accepted would serve until its socket closes
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", `exec -a hearth-keeper "$0"`, bin)
	cmd.Env = []string{keeper.FDEnv + "=3"}
	cmd.ExtraFiles = []*os.File{theirs}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to run from a setuid, setgid or file-capability execution") {
		t.Errorf("a keeper from a file-capability binary: %v %s", err, out)
	}
}

// A command name may hold spaces and parentheses (a process may name
// itself anything): ProcStat reads the fields after it.
func TestProcStat(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "x) Z 1 (y")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	fields, err := ProcStat(cmd.Process.Pid)
	if err != nil || fields[0] == "Z" || fields[1] != strconv.Itoa(os.Getpid()) {
		t.Fatalf("ProcStat of %q: %q, %v", name, fields, err)
	}
	if !Alive(cmd.Process.Pid) {
		t.Error("a running process is not Alive")
	}
	cmd.Process.Kill()
	cmd.Process.Wait()
	if Alive(cmd.Process.Pid) {
		t.Error("a reaped process is Alive")
	}
	if _, err := ProcStat(cmd.Process.Pid); err == nil {
		t.Error("ProcStat of a process that is gone")
	}
}

// A command that writes more than Run keeps: its beginning and its end
// (the traceback that says why it failed) are kept, with a line between
// saying how much was left out.
func TestRunKeepsTheEndOfALongOutput(t *testing.T) {
	out, err := Run(context.Background(), Command{Path: "sh", Args: []string{"-c", `echo START; head -c 3000000 /dev/zero | tr '\0' x; echo; echo END >&2; exit 1`}}, zap.NewNop())
	if err == nil {
		t.Fatal("no error from exit 1")
	}
	text := string(out)
	if !strings.HasPrefix(text, "START\n") || !strings.HasSuffix(text, "x\nEND\n") {
		t.Errorf("output of %d bytes does not start with START and end with END: %q … %q", len(text), text[:min(len(text), 20)], text[max(0, len(text)-20):])
	}
	// 6 + 3,000,001 + 4 bytes written, maxRunOutput kept
	if want := fmt.Sprintf("[… %d bytes of output left out …]", 6+3000001+4-maxRunOutput); !strings.Contains(text, want) {
		t.Errorf("no %q in the output", want)
	}
	if len(text) > maxRunOutput+100 {
		t.Errorf("%d bytes kept, more than %d", len(text), maxRunOutput)
	}
}

func TestHeadTail(t *testing.T) {
	for _, tc := range []struct {
		writes []string
		want   string
	}{
		{[]string{"ab"}, "ab"},
		{[]string{"abcd"}, "abcd"},
		{[]string{"abcdef"}, "abcdef"},
		{[]string{"abcdefg"}, "abcdefg"},
		{[]string{"abcdefgh"}, "abcdefgh"},
		{[]string{"ab", "cd", "ef", "gh", "ij"}, "abcd\n[… 2 bytes of output left out …]\nghij"},
		{[]string{"abcdefghijklmnopq"}, "abcd\n[… 9 bytes of output left out …]\nnopq"},
		{[]string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, "abcd\n[… 1 bytes of output left out …]\nfghi"},
	} {
		h := headTail{half: 4}
		for _, w := range tc.writes {
			if n, err := h.Write([]byte(w)); n != len(w) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", w, n, err)
			}
		}
		if got := string(h.Bytes()); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.writes, got, tc.want)
		}
	}
}

// leavingGroup is a program that leaves its process group for its
// parent's (the keeper's) and writes its pid to the file it is given,
// keeping a child that ignores SIGTERM in the group it left, then sleeps.
const leavingGroup = `
import os, signal, sys, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
    os._exit(0)
os.setpgid(0, os.getpgid(os.getppid()))
with open(sys.argv[1], 'w') as f:
    f.write(str(os.getpid()))
time.sleep(60)
`

// TestALeaderThatLeftItsGroupIsStopped: a process that leaves the process
// group it was started in (setpgid to another group of its session, which
// any process may do) is still stopped, by its pid: Run past its timeout
// and Stop past its grace killed only the group, and then waited for the
// leader's end for good (a job's runs all skipped after, a reload that
// stops the service held).
func TestALeaderThatLeftItsGroupIsStopped(t *testing.T) {
	for _, how := range []string{"Run past its timeout", "Stop past its grace"} {
		t.Run(how, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			cmd := Command{Path: "/usr/bin/python3", Args: []string{"-c", leavingGroup, pidFile}}
			done := make(chan struct{})
			go func() {
				defer close(done)
				if how == "Run past its timeout" {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					_, _ = Run(ctx, cmd, zap.NewNop())
					return
				}
				p, err := Start(cmd, zap.NewNop())
				if err != nil {
					t.Error(err)
					return
				}
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					if data, _ := os.ReadFile(pidFile); len(data) > 0 {
						break
					}
				}
				p.Stop(syscall.SIGTERM, 300*time.Millisecond)
			}()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Errorf("%s did not return: it waits for a leader it did not kill", how)
			}
			data, err := os.ReadFile(pidFile)
			pid, _ := strconv.Atoi(string(data))
			if err != nil || pid <= 1 {
				t.Fatalf("the program's pid: %q %v", data, err)
			}
			for deadline := time.Now().Add(5 * time.Second); Alive(pid); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("the leader %d outlived %s", pid, how)
				}
			}
			<-done
		})
	}
}
