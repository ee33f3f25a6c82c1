package tests

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rootWarning is the log's line for what runs as root because a root
// Caddy's block names no account.
const rootWarning = "runs as root: Caddy runs as root and its block names no other account"

func TestWorkersRunAsUser(t *testing.T) {
	t.Parallel()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody on this machine: %v", err)
	}
	// an app directory the other user can read
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	writeFile(t, filepath.Join(dir, "whoami.py"), "import os\n\ndef application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [('%d %d' % (os.getuid(), os.getgid())).encode()]\n")
	os.Chmod(filepath.Join(dir, "whoami.py"), 0o644)
	config := func(options string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi whoami:application {
		dir %s
		python {PYTHON}
		workers 1
		guard enforce {
			allow HG-ADMIN-01 # the harness's admin API is on TCP
		}
		%s
	}
}`, freePort(t), dir, options)
	}
	if os.Geteuid() != 0 {
		// Caddy is not root: it cannot switch, and says so
		c := launchCaddy(t, config("user nobody"))
		if code := c.waitExit(30 * time.Second); code == 0 || !strings.Contains(c.log.String(), "cannot start processes as nobody") {
			t.Errorf("user nobody without root: exit %d\n%s", code, tail(c.log.String(), 5))
		}
		return
	}
	c := startCaddy(t, config("user nobody"))
	apps := c.mustApps()
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", apps[0].Workers[0].Pid))
	if !strings.Contains(string(data), "Uid:\t"+nobody.Uid+"\t") {
		t.Errorf("the worker does not run as nobody (%s):\n%s", nobody.Uid, data)
	}
	if strings.Contains(c.log.String(), rootWarning) {
		t.Errorf("an app with a user is said to run as root:\n%s", c.log.String())
	}
	// no user under a root Caddy: root, never silently
	c0 := startCaddy(t, config(""))
	if log := c0.log.String(); !strings.Contains(log, rootWarning) || !strings.Contains(log, `"what":"app whoami"`) {
		t.Errorf("an app running as root is not said to:\n%s", tail(c0.log.String(), 10))
	}
	// root is refused unless allowed
	c2 := launchCaddy(t, config("user root"))
	if code := c2.waitExit(30 * time.Second); code == 0 || !strings.Contains(c2.log.String(), "user root is root") {
		t.Errorf("user root accepted: exit %d\n%s", code, tail(c2.log.String(), 5))
	}
	startCaddy(t, config("user root\n\t\tallow_root"))
}

// TestRuntimeDirectoryOfOthersNeverUsed: with `user`, the worker runtime
// lives in a directory of the temporary directory that the workers can
// read. Another local user who made that directory first (owning it, or
// making it a symbolic link to theirs, or leaving it writable), with a
// runtime and a json.py of their own in it (Python puts the script's
// directory first on sys.path), never gets their code run, and cannot keep
// the app from starting either (that refused the pool before): the runtime
// goes to a directory of Caddy's beside it, and the log names the directory refused, now or when a running pool starts
// workers after the directory was swapped. The name earlier versions used
// (hearth-runtime) is planted too: it is no longer used at all. Under a
// temporary directory others can write without the sticky bit, no
// directory is safe: the pool is refused, naming it.
func TestRuntimeDirectoryOfOthersNeverUsed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs workers as another user: nothing is written for other users")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody on this machine: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	base := t.TempDir() // before TMPDIR changes: Caddy's own files stay here
	for d := base; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	appDir := filepath.Join(base, "app")
	os.Mkdir(appDir, 0o755)
	writeFile(t, filepath.Join(appDir, "whoami.py"), "import os\n\ndef application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [str(os.getuid()).encode()]\n")
	markers := filepath.Join(base, "markers") // where planted code, run as nobody, would write
	os.Mkdir(markers, 0o777)
	os.Chmod(markers, 0o777)
	version := "000000000000" // the binary's runtime version, learnt below
	// plant fills dir (as nobody would) with a runtime, its package and a
	// json module that leave a marker
	plant := func(dir, tag string) {
		code := fmt.Sprintf("open(%q, 'a').write('ran')\n", filepath.Join(markers, tag))
		for _, name := range []string{filepath.Join(version, "hearth_worker.py"), filepath.Join(version, "hearth_runtime", "__init__.py"), "json.py"} {
			for d := filepath.Dir(filepath.Join(dir, name)); d != dir; d = filepath.Dir(d) {
				os.MkdirAll(d, 0o777)
				os.Chown(d, uid, gid)
			}
			writeFile(t, filepath.Join(dir, name), code)
			os.Chown(filepath.Join(dir, name), uid, gid)
		}
	}
	hostileDir := func(path, tag string, owner int, mode os.FileMode) {
		if err := os.Mkdir(path, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, mode)
		os.Chown(path, owner, gid)
		plant(path, tag)
	}
	port := freePort(t)
	config := fmt.Sprintf(`
http://127.0.0.1:%d {
	bind 127.0.0.1
	wsgi whoami:application {
		dir %s
		python {PYTHON}
		workers 1
		user nobody
		guard enforce {
			allow HG-ADMIN-01 # the harness's admin API is on TCP
		}
	}
}`, port, appDir)
	runtimeDir := fmt.Sprintf("hearth-runtime-%d", os.Geteuid())
	newTmp := func(name string, mode os.FileMode) string {
		tmp := filepath.Join(base, name)
		os.Mkdir(tmp, mode)
		os.Chmod(tmp, mode)
		hostileDir(filepath.Join(tmp, "hearth-runtime"), name+"-legacy", uid, 0o777) // the old name
		return tmp
	}
	t.Run("made by Caddy, then swapped while the pool runs", func(t *testing.T) {
		tmp := newTmp("swapped", os.ModeSticky|0o777)
		t.TempDir()
		t.Setenv("TMPDIR", tmp)
		c := startCaddy(t, config)
		if _, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); body != nobody.Uid {
			t.Fatalf("the worker answered %q, not nobody's uid", body)
		}
		dir := filepath.Join(tmp, runtimeDir)
		info, err := os.Lstat(dir)
		if err != nil || !info.IsDir() || info.Mode().Perm() != 0o755 || info.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Fatalf("the runtime's directory: %v %v", info, err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*", "hearth_worker.py"))
		if len(files) != 1 {
			t.Fatalf("the runtime's directory holds %v", files)
		}
		version = filepath.Base(filepath.Dir(files[0]))
		pkg, _ := filepath.Glob(filepath.Join(dir, version, "hearth_runtime", "*.py"))
		if len(pkg) < 2 {
			t.Fatalf("the runtime's package holds %v", pkg)
		}
		for _, path := range append(pkg, files[0]) {
			if info, err := os.Lstat(path); err != nil || info.Mode().Perm() != 0o644 || info.Sys().(*syscall.Stat_t).Uid != 0 {
				t.Fatalf("the runtime file %s: %v %v", path, info, err)
			}
		}
		for _, path := range []string{filepath.Join(dir, version), filepath.Join(dir, version, "hearth_runtime")} {
			if info, err := os.Lstat(path); err != nil || !info.IsDir() || info.Mode().Perm() != 0o755 || info.Sys().(*syscall.Stat_t).Uid != 0 {
				t.Fatalf("the runtime directory %s: %v %v", path, info, err)
			}
		}
		// a tmp cleaner removed it; nobody made it again, with their code
		os.RemoveAll(dir)
		hostileDir(dir, "swapped", uid, 0o755)
		resp, err := http.Post("http://"+c.admin+"/hearth/apps/whoami/restart", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(c.log.String(), "the worker runtime's usual directory cannot be used") || !strings.Contains(c.log.String(), "is owned by nobody") {
			t.Errorf("a restart with a swapped runtime directory: %d %s\n%s", resp.StatusCode, body, tail(c.log.String(), 10))
		}
		if _, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); body != nobody.Uid {
			t.Errorf("after the restart the worker answered %q, not nobody's uid", body)
		}
	})
	for _, tc := range []struct {
		name  string
		setup func(tmp string)
		want  string
	}{
		{"owned by nobody", func(tmp string) {
			hostileDir(filepath.Join(tmp, runtimeDir), "owned", uid, 0o755)
		}, "is owned by nobody"},
		{"a symbolic link to nobody's directory", func(tmp string) {
			hostileDir(filepath.Join(tmp, "theirs"), "symlink", uid, 0o755)
			os.Symlink(filepath.Join(tmp, "theirs"), filepath.Join(tmp, runtimeDir))
			os.Lchown(filepath.Join(tmp, runtimeDir), uid, gid)
		}, "is a symbolic link"},
		{"Caddy's but writable by others", func(tmp string) {
			hostileDir(filepath.Join(tmp, runtimeDir), "writable", 0, 0o777)
		}, "is writable by group or others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := newTmp(strings.ReplaceAll(tc.name, " ", "-"), os.ModeSticky|0o777)
			tc.setup(tmp)
			t.TempDir() // Caddy's files: in the real temporary directory
			t.Setenv("TMPDIR", tmp)
			c := startCaddy(t, config)
			if _, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); body != nobody.Uid {
				t.Fatalf("the worker answered %q, not nobody's uid", body)
			}
			log := c.log.String()
			if !strings.Contains(log, "the worker runtime's usual directory cannot be used") || !strings.Contains(log, filepath.Join(tmp, runtimeDir)) || !strings.Contains(log, tc.want) || !strings.Contains(log, "rm -rf") {
				t.Errorf("the log does not name the directory refused, the reason (%q) and the fix:\n%s", tc.want, tail(log, 10))
			}
			used, _ := filepath.Glob(filepath.Join(tmp, runtimeDir+"-*", "*", "hearth_worker.py"))
			if len(used) != 1 {
				t.Errorf("the runtime's new directory: %v", used)
			} else if info, err := os.Lstat(filepath.Dir(filepath.Dir(used[0]))); err != nil || info.Sys().(*syscall.Stat_t).Uid != 0 || info.Mode().Perm() != 0o755 {
				t.Errorf("the runtime's new directory %s: %v %v", used[0], info, err)
			}
			c.stop()
		})
	}
	t.Run("under a temporary directory others can write without the sticky bit", func(t *testing.T) {
		tmp := newTmp("no-sticky", 0o777)
		t.TempDir()
		t.Setenv("TMPDIR", tmp)
		if log := refused(t, config); !strings.Contains(log, tmp+" is writable by group or others without the sticky bit") {
			t.Errorf("the refusal does not name the temporary directory:\n%s", tail(log, 10))
		}
	})
	if planted, _ := os.ReadDir(markers); len(planted) > 0 {
		t.Errorf("planted code ran: %v", planted)
	}
}
