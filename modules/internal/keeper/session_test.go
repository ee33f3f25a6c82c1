package keeper

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLeaveOOMProtection: a negative oom_score_adj becomes 0, any other
// is left as it is. (Setting a negative one for real needs
// CAP_SYS_RESOURCE, which the integration test's login wrapper may lack:
// TestWorkerIsolationSession checks it where it has it.)
func TestLeaveOOMProtection(t *testing.T) {
	for _, tc := range []struct{ had, want string }{
		{"-500\n", "0"},
		{"-1000\n", "0"},
		{"0\n", "0\n"},
		{"300\n", "300\n"},
	} {
		file := filepath.Join(t.TempDir(), "oom_score_adj")
		if err := os.WriteFile(file, []byte(tc.had), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := leaveOOMProtection(file); err != nil {
			t.Fatalf("%q: %v", tc.had, err)
		}
		if got, _ := os.ReadFile(file); string(got) != tc.want {
			t.Errorf("%q became %q, want %q", tc.had, got, tc.want)
		}
	}
	if err := leaveOOMProtection(filepath.Join(t.TempDir(), "absent")); err != nil {
		t.Errorf("without the file: %v", err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "oom_score_adj")
	if err := os.WriteFile(file, []byte("-17\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 { // root writes a read-only file
		if err := leaveOOMProtection(file); err == nil || !strings.Contains(err.Error(), "OOMScoreAdjust=") {
			t.Errorf("a value that cannot be raised: %v, want the error", err)
		}
	}
}
