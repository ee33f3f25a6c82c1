// Package supervisor starts, watches and stops child processes for Hearth:
// every child runs in its own process group, is killed by the kernel when
// Caddy dies (even on SIGKILL), has its stdout and stderr forwarded line by
// line into Caddy's structured log, and is stopped with a signal followed by
// SIGKILL after a grace period. Restart policy (Backoff) lives here too, so
// every kind of pool supervises its processes the same way.
package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Command describes a process to launch.
type Command struct {
	// Path is the program; Args excludes it.
	Path string
	Args []string
	// Dir is the working directory.
	Dir string
	// Env is the complete environment ("KEY=value").
	Env []string
	// ExtraFiles become fds 3, 4, … in the child; the caller closes its
	// copies after Start returns.
	ExtraFiles []*os.File
}

// Process is a running child process.
type Process struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	logs    sync.WaitGroup
	exitErr error
}

// Start launches cmd in its own process group with a parent-death signal,
// forwarding its output to logger (fields "pid" and "stream" are added).
func Start(c Command, logger *zap.Logger) (*Process, error) {
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	cmd.ExtraFiles = c.ExtraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // its own group: signals reach it and its children only
		Pdeathsig: syscall.SIGKILL, // dies with Caddy, even when Caddy is SIGKILLed
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", c.Path, err)
	}
	p := &Process{cmd: cmd, started: time.Now(), done: make(chan struct{})}
	plog := logger.With(zap.Int("pid", cmd.Process.Pid))
	p.logs.Add(2)
	go p.forward(stdout, plog.With(zap.String("stream", "stdout")))
	go p.forward(stderr, plog.With(zap.String("stream", "stderr")))
	go func() {
		p.logs.Wait() // Wait closes the pipes: read them to the end first
		p.exitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// maxLogLine bounds one log entry; longer output lines are split.
const maxLogLine = 16 << 10

func (p *Process) forward(r io.Reader, logger *zap.Logger) {
	defer p.logs.Done()
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			logger.Info(string(line))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// Pid is the process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// StartedAt is when the process was launched.
func (p *Process) StartedAt() time.Time { return p.started }

// Done is closed once the process has exited and its output is drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitDescription describes how the process ended ("exit status 1",
// "signal: killed"); valid after Done is closed.
func (p *Process) ExitDescription() string {
	if p.exitErr == nil {
		return "exit status 0"
	}
	return p.exitErr.Error()
}

// Signal sends sig to the process's whole group.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	err := syscall.Kill(-p.Pid(), sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Stop sends sig to the process group, waits up to grace for the process to
// exit, then kills the group with SIGKILL and waits for the exit.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) {
	_ = p.Signal(sig)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		// the leader is gone; make sure nothing of its group lingers
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return
	case <-timer.C:
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
}
