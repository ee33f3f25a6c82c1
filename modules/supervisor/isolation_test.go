package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/hearth-dev/hearth/modules/internal/keeper"
)

func TestParseUmask(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		err  string
	}{
		{"", DefaultUmask, ""},
		{"0027", 0o027, ""},
		{"027", 0o027, ""},
		{"0022", 0o022, ""},
		{"0077", 0o077, ""},
		{"0002", 0o002, ""},
		{"77", 0o077, ""},
		{"0777", 0o777, ""},
		{"0000", 0, "would let every account"},
		{"0020", 0, "would let every account"},
		{"0005", 0, "would let every account"},
		{"0028", 0, "not an octal"},
		{"00027", 0, "not an octal"},
		{"1777", 0, "not an octal"},
		{"-27", 0, "not an octal"},
		{"0o27", 0, "not an octal"},
		{"u=rwx", 0, "not an octal"},
	} {
		got, err := ParseUmask(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseUmask(%q) = %o, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseUmask(%q) = %o, %v; want %o", tc.in, got, err, tc.want)
		}
	}
	if s := FormatUmask(0o27); s != "0027" {
		t.Errorf("FormatUmask: %s", s)
	}
}

// childUmask runs a shell that prints its umask, started with mask.
func childUmask(t *testing.T, mask uint32) string {
	t.Helper()
	out, err := Run(context.Background(), Command{Path: "/bin/sh", Args: []string{"-c", "umask"}, Umask: mask}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func TestChildUmask(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		mask uint32
		want string
	}{{0, "0027"}, {0o077, "0077"}, {0o022, "0022"}, {0o002, "0002"}} {
		if got := childUmask(t, tc.mask); got != tc.want {
			t.Errorf("umask %04o: the child has %s, want %s", tc.mask, got, tc.want)
		}
	}
	// Caddy's own umask is untouched: its main thread's (what
	// /proc/<pid>/status shows) and every other thread's
	status, _ := os.ReadFile("/proc/self/status")
	if !strings.Contains(string(status), "Umask:\t0022\n") {
		t.Errorf("the main thread's umask changed:\n%s", status)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "caddy-file"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if info, _ := os.Stat(f.Name()); info.Mode().Perm() != 0o644 {
		t.Errorf("a file Caddy creates after starting children has mode %o, want 644", info.Mode().Perm())
	}
}

func TestInheritedDescriptorsNotPassedOn(t *testing.T) {
	// a descriptor as Caddy may inherit it: without close-on-exec
	f, err := os.Open("/etc/hostname")
	if err != nil {
		f, err = os.Open("/")
		if err != nil {
			t.Fatal(err)
		}
	}
	defer f.Close()
	fd := int(f.Fd())
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		t.Fatal(err)
	}
	keeper.MarkInheritedCloseOnExec()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("fd %d is not close-on-exec after the sweep (flags %d, %v)", fd, flags, err)
	}
	// still usable by Caddy
	if _, err := f.Stat(); err != nil {
		t.Errorf("the descriptor is no longer usable: %v", err)
	}
	// a child started like Hearth's has 0-2 and its ExtraFiles only
	core, logs := observer.New(zap.InfoLevel)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := Start(Command{Path: "/bin/sh", Args: []string{"-c", "ls /proc/$$/fd"}, ExtraFiles: []*os.File{w}}, zap.New(core))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	var out strings.Builder
	for _, e := range logs.FilterField(zap.String("stream", "stdout")).All() {
		out.WriteString(e.Message + " ")
	}
	fds := strings.Fields(out.String())
	want := []string{"0", "1", "2", "3"}
	if strings.Join(fds, " ") != strings.Join(want, " ") {
		t.Errorf("the child's descriptors: %v, want %v (fd %d is the inherited one)", fds, want, fd)
	}
}
