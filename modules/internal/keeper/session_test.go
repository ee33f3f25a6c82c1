package keeper

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
