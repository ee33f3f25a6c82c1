package keeper

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// TestLeaveOOMProtection: a negative oom_score_adj becomes 0, any other
// is left as it is. A file accepts the old value back, as the kernel does
// when a privileged process set it (systemd's OOMScoreAdjust=): that is
// warned about. (Setting a negative value for real needs
// CAP_SYS_RESOURCE, which the integration test's login wrapper may lack:
// TestWorkerIsolationSession checks it where it has it.)
func TestLeaveOOMProtection(t *testing.T) {
	for _, tc := range []struct{ had, want, warning string }{
		{"-500\n", "0", "any of them may set theirs back down to -500"},
		{"-1000\n", "0", "back down to -1000"},
		{"0\n", "0\n", ""},
		{"300\n", "300\n", ""},
	} {
		file := filepath.Join(t.TempDir(), "oom_score_adj")
		if err := os.WriteFile(file, []byte(tc.had), 0o600); err != nil {
			t.Fatal(err)
		}
		warning := leaveOOMProtection(file)
		if got, _ := os.ReadFile(file); string(got) != tc.want {
			t.Errorf("%q became %q, want %q", tc.had, got, tc.want)
		}
		if tc.warning == "" && warning != "" || !strings.Contains(warning, tc.warning) || tc.warning != "" && !strings.Contains(warning, "OOMScoreAdjust=") {
			t.Errorf("%q: warning %q, want one with %q", tc.had, warning, tc.warning)
		}
	}
	if w := leaveOOMProtection(filepath.Join(t.TempDir(), "absent")); w != "" {
		t.Errorf("without the file: %q", w)
	}
	if os.Geteuid() != 0 { // root writes a read-only file
		file := filepath.Join(t.TempDir(), "oom_score_adj")
		if err := os.WriteFile(file, []byte("-17\n"), 0o400); err != nil {
			t.Fatal(err)
		}
		if w := leaveOOMProtection(file); !strings.Contains(w, "could not raise the oom_score_adj -17") {
			t.Errorf("a value that cannot be raised: %q, want the warning", w)
		}
	}
}

// TestSessionKeyringCannotBeLinkedElsewhere: the session keyring a child
// gets is charged to Caddy's account; its possessor (the app's process)
// may not link it into a keyring of its own, where it would outlive the
// process and hold a key of Caddy's quota for good, nor give itself that
// permission back.
func TestSessionKeyringCannotBeLinkedElsewhere(t *testing.T) {
	runtime.LockOSThread() // the keyring is the thread's: this one ends with the test
	if err := LeaveSessionKeyring(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	session := keySpecSessionKeyring
	n, _, e := syscall.Syscall6(syscall.SYS_KEYCTL, keyctlDescribe, uintptr(session), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e == syscall.ENOSYS || e == syscall.EPERM || e == syscall.EACCES {
		t.Skipf("no kernel keys here: %v", e)
	}
	if e != 0 {
		t.Fatal(e)
	}
	// "keyring;uid;gid;perm;name"
	fields := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), ";")
	if len(fields) < 4 {
		t.Fatalf("describe: %q", buf[:n])
	}
	perm, err := strconv.ParseUint(fields[3], 16, 32)
	if err != nil {
		t.Fatal(err)
	}
	const posLink, posSetattr = 0x10000000, 0x20000000
	if perm&(posLink|posSetattr) != 0 || perm&0x0f000000 != 0x0f000000 {
		t.Errorf("the session keyring's permissions are %08x: its possessor may link it elsewhere or change them (want %08x)", perm, sessionKeyringPerm)
	}
}
