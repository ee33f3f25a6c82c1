package tests

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcessSocketDirectoryRefusedWhenHostile: the unix sockets of
// `dynamic process … { socket }` live in hearth-sockets-<Caddy's uid> in
// the temporary directory. Made by another local user first, that user
// could replace a socket and receive the requests: the upstream is
// refused, naming the directory, and no instance starts. Made by Caddy,
// it is Caddy's, mode 0711, and serves.
func TestProcessSocketDirectoryRefusedWhenHostile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory of another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody on this machine: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	base := t.TempDir()
	started := filepath.Join(base, "started")
	config := fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy {
		dynamic process /usr/bin/gunicorn --bind unix:{socket} --workers 1 --pid %s hello:application {
			dir {APPS}
			socket
			# gunicorn's master waits its own 30 s for a worker that got
			# SIGTERM while booting (a race of its own); the harness does not
			stop_timeout 5s
		}
	}
}`, freePort(t), started)
	socketDir := fmt.Sprintf("hearth-sockets-%d", os.Geteuid())

	tmp := filepath.Join(base, "tmp")
	os.Mkdir(tmp, 0o777)
	os.Chmod(tmp, os.ModeSticky|0o777)
	dir := filepath.Join(tmp, socketDir)
	os.Mkdir(dir, 0o777)
	os.Chmod(dir, 0o777)
	os.Chown(dir, uid, -1)
	t.Setenv("TMPDIR", tmp)
	log := refused(t, config)
	if !strings.Contains(log, dir+" is owned by nobody") || !strings.Contains(log, "rm -rf") {
		t.Errorf("the refusal does not name the directory and the fix:\n%s", tail(log, 5))
	}
	if _, err := os.Stat(started); err == nil {
		t.Errorf("an instance started with its socket in nobody's directory")
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("something was put in nobody's directory: %v", entries)
	}

	// Caddy's own: made with mode 0711, and it serves
	os.RemoveAll(dir)
	c := launchCaddy(t, config)
	waitFor(t, 60*time.Second, "the instance", func() bool { _, err := os.Stat(started); return err == nil })
	info, err := os.Lstat(dir)
	if err != nil || info.Mode().Perm() != 0o711 || info.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the sockets' directory: %v %v", info, err)
	}
	c.stop()
}
