package linkfs

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOtherMountNamespace: the app's account makes a user and mount
// namespace of its own, in which served/x is the whole root file system,
// and links served/x to /proc/<its pid>/root/<served>/x. Through that
// link served/x/<Caddy's key> is Caddy's key, and the kernel names it by
// that very path: the check by name alone (openSameName) would serve it.
// Where openat2 is refused (as under the unit), Caddy as root (which may
// follow any process's /proc links) walks the path instead, and a Caddy
// without CAP_SYS_PTRACE (the unit's) is refused the link by the kernel:
// the key is read in neither.
func TestOtherMountNamespace(t *testing.T) {
	if name := os.Getenv("LINKFS_WITHOUT_PTRACE"); name != "" {
		withoutPtrace(t, name, os.Getenv("LINKFS_PLAIN"))
		return
	}
	tr := makeTree(t)
	for _, tool := range []string{"setpriv", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s here (util-linux)", tool)
		}
	}
	attacker := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"unshare", "-Urm", "sh", "-c",
		"mount -t tmpfs none "+tr.served+" && mkdir "+tr.served+"/x && mount --rbind / "+tr.served+"/x && echo ready && exec sleep 60")
	out, err := attacker.StdoutPipe()
	must(t, err)
	var stderr strings.Builder
	attacker.Stderr = &stderr
	must(t, attacker.Start())
	t.Cleanup(func() { attacker.Process.Kill(); attacker.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Skipf("no mount namespace for an unprivileged account here: %q %s", line, stderr.String())
	}
	symlink(t, "/proc/"+strconv.Itoa(attacker.Process.Pid)+"/root"+tr.served+"/x", filepath.Join(tr.served, "x"), appUID)
	name := tr.served + "/x" + tr.secret

	// the attack is real: by name alone, the key
	resolving(t, withSameName)
	if b, err := (FS{}).ReadFile(name); err != nil || !strings.Contains(string(b), "PRIVATE") {
		t.Fatalf("the check by name alone did not reach the key (%q, %v): the test tests nothing", b, err)
	}

	// as root, openat2 refused: walked
	resolving(t, withOpenat2)
	openat2Refused.Store(true)
	t.Cleanup(func() { openat2Refused.Store(false) })
	if sameNameSafe() {
		t.Fatal("root holds CAP_SYS_PTRACE, and the check by name is said to be safe")
	}
	refusedKey(t, name)

	// without CAP_SYS_PTRACE, as the unit's Caddy: by name, refused by
	// the kernel at the link
	child := exec.Command("setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace",
		os.Args[0], "-test.run=^TestOtherMountNamespace$", "-test.v")
	child.Env = append(os.Environ(), "LINKFS_WITHOUT_PTRACE="+name, "LINKFS_PLAIN="+filepath.Join(tr.served, "app.css"))
	if out, err := child.CombinedOutput(); err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Errorf("without CAP_SYS_PTRACE (%v):\n%s", err, out)
	}
}

// withoutPtrace is the test's part in a process without CAP_SYS_PTRACE.
func withoutPtrace(t *testing.T, name, plain string) {
	if !sameNameSafe() {
		t.Fatal("without CAP_SYS_PTRACE, the check by name is not used: the test tests nothing")
	}
	openat2Refused.Store(true)
	fd, err := openSameName(plain)
	if err != nil {
		t.Fatalf("the check by name does not reach a plain file: %v", err)
	}
	unix.Close(fd)
	if _, err := openNoLinks(name); !errors.Is(err, errNoOpenat2) {
		t.Errorf("through the other namespace, by name: %v, want the walk", err)
	}
	refusedKey(t, name)
}

func refusedKey(t *testing.T, name string) {
	t.Helper()
	f, err := FS{}.Open(name)
	if err == nil {
		b, _ := io.ReadAll(f)
		f.Close()
		t.Fatalf("read %q through another mount namespace", b)
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("through another mount namespace: %v, want permission denied", err)
	}
}
