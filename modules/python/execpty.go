package python

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/internal/termsafe"
)

// A command of `caddy hearth exec` or `manage` that runs as the app's
// account must not hold the terminal of whoever runs it (root, usually):
// a process it leaves behind could go on reading that terminal after the
// command ends (the next password typed into the shell) and writing to
// it (a fake prompt). So such a command gets a pseudo-terminal of its own
// in place of each standard stream that is a terminal, as its controlling
// terminal in its own session, and this process relays between the two
// while the command runs. Once the command has ended the pseudo-terminal
// is closed: whatever still holds it reads end-of-file and writes
// nothing, and the kernel hangs up its session.

// ptyRelay relays between this process's terminal and a command's
// pseudo-terminal.
type ptyRelay struct {
	master, slave *os.File
	real          *os.File // the first standard stream that is this process's terminal
	terminal      *os.File // where the command's output goes: stdout, stderr or stdin, the first that is the terminal
	input         bool     // stdin is the terminal: keystrokes are relayed, and it is in raw mode
	saved         *unix.Termios
	// closing stopInput (a pipe's write end; stopRead its read end) ends
	// the input relay at once, without taking keys typed after it
	stopInput, stopRead *os.File
	winch               chan os.Signal
	// closed when the relays have ended (nil: not started)
	inputDone, outputDone, winchDone chan struct{}
}

// outputDrain bounds how long, once the command has ended, its last output
// is relayed: a process it left behind may hold the pseudo-terminal open.
const outputDrain = 100 * time.Millisecond

// attachPTY gives cmd a pseudo-terminal in place of each of os.Stdin,
// os.Stdout and os.Stderr that is a terminal (none: nil), as the
// controlling terminal of its session (cmd.SysProcAttr must set Setsid).
// The caller starts cmd, calls started, and calls finish once cmd has
// ended.
func attachPTY(cmd *exec.Cmd) (*ptyRelay, error) {
	streams := []*os.File{os.Stdin, os.Stdout, os.Stderr}
	tty := -1 // the first standard stream that is a terminal
	for i, f := range streams {
		if isTerminal(f) {
			tty = i
			break
		}
	}
	if tty < 0 {
		return nil, nil
	}
	if cmd.SysProcAttr == nil || !cmd.SysProcAttr.Setsid {
		return nil, errors.New("a command given a pseudo-terminal of its own must run in a session of its own")
	}
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening a pseudo-terminal for the command: %w", err)
	}
	r := &ptyRelay{master: os.NewFile(uintptr(fd), "/dev/ptmx")} // non-blocking: deadlines work
	fail := func(what string, err error) (*ptyRelay, error) {
		r.master.Close()
		if r.slave != nil {
			r.slave.Close()
		}
		if r.stopInput != nil {
			r.stopInput.Close()
			r.stopRead.Close()
		}
		return nil, fmt.Errorf("setting up the command's pseudo-terminal: %s: %w", what, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlocking it", err)
	}
	// the slave, by the master's descriptor: no path lookup to race
	peer, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	sfd := int(peer)
	if errno != 0 { // a kernel before 4.13
		n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
		if err != nil {
			return fail("finding its other end", err)
		}
		if sfd, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err != nil {
			return fail("opening its other end", err)
		}
	}
	r.slave = os.NewFile(uintptr(sfd), "pseudo-terminal")
	// the command's terminal starts as this one is set, at its size
	r.real = streams[tty]
	saved, err := unix.IoctlGetTermios(int(r.real.Fd()), unix.TCGETS)
	if err != nil {
		return fail("reading this terminal's settings", err)
	}
	if err := unix.IoctlSetTermios(sfd, unix.TCSETS, saved); err != nil {
		return fail("copying this terminal's settings", err)
	}
	r.copySize()
	r.input = tty == 0
	r.terminal = os.Stdin // (a terminal is opened for reading and writing)
	if isTerminal(os.Stdout) {
		r.terminal = os.Stdout
	} else if isTerminal(os.Stderr) {
		r.terminal = os.Stderr
	}
	for i, f := range streams {
		if !isTerminal(f) {
			continue
		}
		switch i {
		case 0:
			cmd.Stdin = r.slave
		case 1:
			cmd.Stdout = r.slave
		case 2:
			cmd.Stderr = r.slave
		}
	}
	cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, tty
	if r.input {
		if r.stopRead, r.stopInput, err = os.Pipe(); err != nil {
			return fail("a pipe to stop relaying input", err)
		}
		// raw: every keystroke (Ctrl-C too) goes to the command's terminal,
		// whose own settings (those of this one) handle them
		raw := *saved
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag &^= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(int(os.Stdin.Fd()), unix.TCSETS, &raw); err != nil {
			return fail("putting this terminal in raw mode", err)
		}
		r.saved = saved
	}
	return r, nil
}

// copySize gives the command's terminal the size of this one.
func (r *ptyRelay) copySize() {
	if ws, err := unix.IoctlGetWinsize(int(r.real.Fd()), unix.TIOCGWINSZ); err == nil {
		_ = unix.IoctlSetWinsize(int(r.master.Fd()), unix.TIOCSWINSZ, ws)
	}
}

// started begins relaying, once the command holds its terminal.
func (r *ptyRelay) started() {
	r.slave.Close() // the command's now; the master reads EIO once it and its children are gone
	r.outputDone = make(chan struct{})
	go func() {
		defer close(r.outputDone)
		// as a terminal shows it, without what acts beyond the screen
		// (the clipboard, the title, a multiplexer's passthrough): the
		// command runs as the app's account, the terminal is root's often
		_, _ = io.Copy(termsafe.NewFilter(r.terminal), r.master)
	}()
	if r.input {
		r.inputDone = make(chan struct{})
		go r.relayInput()
	}
	r.winch, r.winchDone = make(chan os.Signal, 1), make(chan struct{})
	signal.Notify(r.winch, syscall.SIGWINCH)
	go func() {
		defer close(r.winchDone)
		for range r.winch {
			r.copySize()
		}
	}()
}

// relayInput passes what is typed on this terminal to the command's,
// reading only what is there when stopRead has not been closed: once the
// command has ended, keys typed next stay in this terminal for the shell.
func (r *ptyRelay) relayInput() {
	defer close(r.inputDone)
	in := int(os.Stdin.Fd())
	fds := []unix.PollFd{{Fd: int32(in), Events: unix.POLLIN}, {Fd: int32(r.stopRead.Fd()), Events: unix.POLLIN}}
	buf := make([]byte, 4096)
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err == unix.EINTR {
			continue
		} else if err != nil || fds[1].Revents != 0 {
			return
		}
		n, err := unix.Read(in, buf)
		if n > 0 {
			if _, err := r.master.Write(buf[:n]); err != nil {
				return
			}
		}
		if n == 0 && err == nil || err != nil && err != unix.EINTR && err != unix.EAGAIN {
			return // this terminal is gone
		}
	}
}

// finish stops relaying input, relays the command's last output, closes
// its terminal (whatever still holds it reads end-of-file) and gives this
// terminal its settings back.
func (r *ptyRelay) finish() {
	if r.stopInput != nil {
		r.stopInput.Close()
		if r.inputDone != nil {
			_ = r.master.SetWriteDeadline(time.Now()) // a write the command's terminal had no room for
			<-r.inputDone
		}
		r.stopRead.Close()
	}
	if r.winch != nil {
		signal.Stop(r.winch)
		close(r.winch)
		<-r.winchDone
	}
	drained := false
	if r.outputDone != nil {
		_ = r.master.SetReadDeadline(time.Now().Add(outputDrain))
		select {
		case <-r.outputDone:
			drained = true
		case <-time.After(2 * outputDrain): // a write to this terminal that does not return (output stopped)
		}
	}
	r.master.Close()
	r.slave.Close() // (if the command never started)
	if drained {
		// the modes the command may have left set (mouse reports that
		// would be typed into the shell, hidden text, the alternate screen)
		_, _ = io.WriteString(r.terminal, termsafe.ModesReset)
	}
	if r.saved != nil {
		_ = unix.IoctlSetTermios(int(os.Stdin.Fd()), unix.TCSETS, r.saved)
	}
}
