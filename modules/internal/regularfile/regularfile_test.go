package regularfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hearth-dev/hearth/modules/internal/leasetest"
)

// TestOpen: a regular file opens (links followed) and reads whole;
// anything else is a *NotRegularError, never opened.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "settings.py")
	if err := os.WriteFile(file, []byte("DEBUG = False\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(file, filepath.Join(dir, "link.py")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, kind string }{
		{"settings.py", ""}, {"link.py", ""}, {"fifo", "a named pipe (FIFO)"}, {".", "a directory"},
	} {
		f, err := Open(filepath.Join(dir, tc.name))
		var notRegular *NotRegularError
		switch {
		case tc.kind == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.kind == "":
			data := make([]byte, 64)
			n, _ := f.Read(data)
			f.Close()
			if string(data[:n]) != "DEBUG = False\n" {
				t.Errorf("%s read %q", tc.name, data[:n])
			}
		case !errors.As(err, &notRegular) || notRegular.Kind != tc.kind:
			t.Errorf("%s: %v, want %s", tc.name, err, tc.kind)
		}
	}
	if _, err := Open("/dev/null"); err == nil || !strings.Contains(err.Error(), "a device") {
		t.Errorf("/dev/null: %v", err)
	}
}

// TestOpenRefusesTheKernelsFiles: files of procfs and sysfs look regular,
// but are the kernel's: a read of /proc/kmsg (root's) waits for the
// kernel's next message, so a link to it from an app's directory held
// Caddy's start, and /proc/1/environ is another process's secrets. Open
// refuses them, through a link too, and opens nothing.
func TestOpenRefusesTheKernelsFiles(t *testing.T) {
	link := filepath.Join(t.TempDir(), "wsgi.py")
	if err := os.Symlink("/proc/self/environ", link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, fs string }{
		{"/proc/self/environ", "proc"},
		{link, "proc"},
		{"/proc/kmsg", "proc"}, // (opened by root, then read, it would wait)
		{"/proc/self/status", "proc"},
		{"/sys/devices/system/cpu/online", "sysfs"},
	} {
		if _, err := os.Stat(tc.path); err != nil {
			t.Logf("%s: %v (not on this machine)", tc.path, err)
			continue
		}
		f, err := Open(tc.path)
		var notRegular *NotRegularError
		if err == nil {
			f.Close()
		}
		if !errors.As(err, &notRegular) || notRegular.Kind != "a file of the kernel's "+tc.fs+" file system" {
			t.Errorf("%s: %v, want it refused as the kernel's %s", tc.path, err, tc.fs)
		}
	}
}

// TestOpenDoesNotWaitOnALease: a file another process holds a write lease
// on (F_SETLEASE, which a file's owner may take) fails at once: a blocking
// open waited lease-break-time (45 s), and an app's account could so hold
// its app's start (the settings lookup reads its wsgi.py) each time.
func TestOpenDoesNotWaitOnALease(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give the file to the account that takes the lease")
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	name := filepath.Join(dir, "wsgi.py")
	if err := os.WriteFile(name, []byte("x = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(name, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	leasetest.Hold(t, name, 65534)
	leasetest.Refused(t, func() (io.Closer, error) { return Open(name) })
}
