package hearth

import (
	"testing"

	"go.uber.org/zap"

	"github.com/hearth-dev/hearth/modules/supervisor"
)

func TestParseMaxProcesses(t *testing.T) {
	for _, tc := range []struct {
		setting string
		want    uint64
		ok      bool
	}{
		{"", 1024, true},
		{"off", 0, true},
		{"128", 128, true},
		{"4096", 4096, true},
		{"127", 0, false},
		{"0", 0, false},
		{"-1", 0, false},
		{"1e3", 0, false},
		{" 200", 0, false},
		{"Off", 0, false},
		{"99999999999999999999", 0, false},
		{"4194304", 4194304, true},
		{"4194305", 0, false},
	} {
		got, err := parseMaxProcesses(tc.setting)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %d, %v; want %d (accepted: %v)", tc.setting, got, err, tc.want, tc.ok)
		}
	}
}

// The newest started config's limit is in force; a config stopped after
// a newer one started leaves the newer's, and one stopped because the
// rest of its config failed to start gives back the one it replaced.
func TestMaxProcessesAcrossReloads(t *testing.T) {
	before := supervisor.MaxProcesses()
	t.Cleanup(func() { supervisor.SetMaxProcesses(before) })
	app := func(setting string) *App { return &App{MaxProcesses: setting, logger: zap.NewNop()} }
	a1, a2, a3 := app("300"), app("off"), app("500")
	a1.applyMaxProcesses()
	a2.applyMaxProcesses()
	a1.releaseMaxProcesses() // the reload's old config stops
	if got := supervisor.MaxProcesses(); got != 0 {
		t.Errorf("after a reload to off: %d", got)
	}
	a3.applyMaxProcesses()
	a3.releaseMaxProcesses() // another app of its config failed to start
	if got := supervisor.MaxProcesses(); got != 0 {
		t.Errorf("after a reload that failed: %d, want the running config's (off)", got)
	}
}
