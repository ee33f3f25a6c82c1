package engine

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/protocol"
	"github.com/hearth-dev/hearth/modules/supervisor"
)

// startGroup starts a shell, in a process group of its own, that starts a
// sleeping child and waits for it; it returns the shell and the child's pid.
func startGroup(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & echo $!; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	line := make([]byte, 32)
	n, _ := out.Read(line)
	child, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
	if err != nil {
		t.Fatalf("the shell's child: %q", line[:n])
	}
	return cmd, child
}

// fakeForkServer stands for a fork server whose process is server (a
// child of the test): it answers each fork request with the frames
// answer gives for the request's number, after closing the channel ends.
func fakeForkServer(t *testing.T, server int, answer func(request uint32) []byte) *Pool {
	t.Helper()
	conn, fc := channelPair(t)
	app := fc.(*net.UnixConn)
	go func() {
		buf, oob := make([]byte, 64), make([]byte, 256)
		for {
			n, oobn, _, _, err := app.ReadMsgUnix(buf, oob)
			if err != nil || n < protocol.HeaderSize {
				return
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
			h, _ := protocol.ParseHeader(buf[:protocol.HeaderSize])
			if _, err := app.Write(answer(h.Stream)); err != nil {
				return
			}
		}
	}()
	p := New(Options{Name: "forked", Kind: "wsgi", Threads: 1, Preload: true, StartTimeout: 2 * time.Second}, zap.NewNop())
	pinned, err := supervisor.Pin(server)
	if err != nil {
		t.Fatal(err)
	}
	p.forkServer = &forkServer{proc: adoptChild(t, server), pid: server, pinned: pinned, control: conn.(*pairConn).UnixConn, frames: protocol.NewReader(conn)}
	return p
}

// channelPair is a channel's two ends: Caddy's and the worker's.
func channelPair(t *testing.T) (caddy, worker net.Conn) {
	t.Helper()
	caddy, peer, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Close() })
	worker, err = net.FileConn(peer)
	peer.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { worker.Close() })
	return caddy, worker
}

// adoptChild watches pid, a child of the test, as Caddy watches a forked
// worker (with no output).
func adoptChild(t *testing.T, pid int) *supervisor.Process {
	t.Helper()
	r1, w1, _ := os.Pipe()
	r2, w2, _ := os.Pipe()
	w1.Close()
	w2.Close()
	parent, err := supervisor.Pin(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	proc, err := supervisor.Adopt(pid, parent, r1, r2, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return proc
}

func forkAnswer(request uint32, pid int) []byte {
	return protocol.AppendFrame(nil, protocol.Fork, 0, request, []byte(strconv.Itoa(pid)))
}

// TestForkedPidMustBeTheForkServersChild: the pid a fork server answers is
// the app's word. Caddy takes it only for a living child of the fork
// server, so a hostile app cannot have Caddy signal another process group
// when the worker fails, is recycled or stops (pid 1 would be kill(-1)).
func TestForkedPidMustBeTheForkServersChild(t *testing.T) {
	server, _ := startGroup(t)
	victim, victimChild := startGroup(t)
	const notOne, notChild = "named as a new worker, is not one: refused", "is not its child"
	for _, tc := range []struct {
		name string
		pid  int
		err  string
	}{
		{"pid 1", 1, notOne},
		{"Caddy", os.Getpid(), notOne},
		{"the fork server itself", server.Process.Pid, notOne},
		{"a process group of someone else's", victim.Process.Pid, notChild},
		{"a process of someone else's", victimChild, notChild},
		{"no such process", 1 << 30, "no such process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fakeForkServer(t, server.Process.Pid, func(request uint32) []byte { return forkAnswer(request, tc.pid) })
			_, err := p.spawnWorker()
			if err == nil || !strings.Contains(err.Error(), fmt.Sprint(tc.pid)) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("spawnWorker with pid %d: %v, want %q", tc.pid, err, tc.err)
			}
		})
	}
	for _, pid := range []int{victim.Process.Pid, victimChild, server.Process.Pid} {
		if !running(pid) {
			t.Errorf("process %d was killed", pid)
		}
	}
}

// running reports whether a process exists and is not a zombie.
func running(pid int) bool { return supervisor.Alive(pid) }

// TestForkAnswerOfAnEarlierRequest: an answer carries its request's
// number; one that arrives for an earlier request (one that timed out)
// is passed over, not taken as the worker of the request after it.
func TestForkAnswerOfAnEarlierRequest(t *testing.T) {
	server, child := startGroup(t)
	victim, _ := startGroup(t)
	p := fakeForkServer(t, server.Process.Pid, func(request uint32) []byte {
		return append(forkAnswer(request-1, victim.Process.Pid), forkAnswer(request, child)...)
	})
	_, err := p.spawnWorker()
	// the right answer names a real child of the fork server that never
	// greets: the worker fails at its hello, not at its pid
	if err == nil || strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), strconv.Itoa(child)) {
		t.Fatalf("spawnWorker: %v, want the hello of process %d to fail", err, child)
	}
	if !running(victim.Process.Pid) {
		t.Errorf("the process named in the earlier answer was killed")
	}
	// starting a worker counts as its busy time (importing the app takes
	// a CPU), success or not, and ends with the start
	if b := p.BusyTime(); b <= 0 || b != p.BusyTime() {
		t.Errorf("after a worker's start failed: BusyTime %v, then %v; want the start's time, still", b, p.BusyTime())
	}
}
