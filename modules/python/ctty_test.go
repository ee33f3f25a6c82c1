package python

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/python/engine"
)

// TestSettingsLookupOpensNoTerminal: looking for the settings module an
// app's wsgi module names (what `settings overlay` does at every start,
// as Caddy) never opens what the app's account linked there. Caddy under
// systemd is a session leader without a terminal; `mysite/wsgi/__init__.py`
// linked to the account's own terminal made it Caddy's controlling
// terminal when Caddy opened it, so a Ctrl-C typed there stopped Caddy.
// The lookup runs in a child of the test in a session of its own, as
// Caddy under systemd, which then says whether it gained a terminal.
func TestSettingsLookupOpensNoTerminal(t *testing.T) {
	if dir := os.Getenv("HEARTH_TEST_CTTY_DIR"); dir != "" {
		_, err := projectSettingsModule(&poolSpec{Options: engine.Options{App: "mysite.wsgi:application", Dir: dir}})
		stat, _ := os.ReadFile("/proc/self/stat")
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		fmt.Printf("tty_nr=%s err=%v\n", fields[4], err)
		os.Exit(0)
	}
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "mysite", "wsgi"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/pts/"+strconv.Itoa(n), filepath.Join(dir, "mysite", "wsgi", "__init__.py")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSettingsLookupOpensNoTerminal$")
	cmd.Env = append(os.Environ(), "HEARTH_TEST_CTTY_DIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the child: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "tty_nr=0 ") || !strings.Contains(string(out), "err=<nil>") {
		t.Fatalf("the settings lookup, in a session without a terminal, gained one or failed: %s", out)
	}
}
