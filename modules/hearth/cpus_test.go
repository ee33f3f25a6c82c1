package hearth

import "testing"

func TestCaddyCPUsFor(t *testing.T) {
	tests := []struct {
		setting string
		all     int
		running bool
		want    int
	}{
		{"", 2, true, 1},
		{"auto", 2, true, 1},
		{"auto", 1, true, 1},
		{"auto", 3, true, 1},
		{"auto", 8, true, 4},
		{"auto", 8, false, 8}, // no pools: nothing to leave CPUs to
		{"all", 8, true, 8},
		{"3", 8, true, 3},
		{"3", 8, false, 3},
		{"16", 8, true, 8}, // never more than there are
	}
	for _, tt := range tests {
		if got := caddyCPUsFor(tt.setting, tt.all, tt.running); got != tt.want {
			t.Errorf("caddyCPUsFor(%q, %d, %v) = %d, want %d", tt.setting, tt.all, tt.running, got, tt.want)
		}
	}
}

func TestParseCaddyCPUs(t *testing.T) {
	for _, ok := range []string{"", "auto", "all", "1", "12"} {
		if err := parseCaddyCPUs(ok); err != nil {
			t.Errorf("parseCaddyCPUs(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"0", "-2", "half", "1.5", "ALL"} {
		if err := parseCaddyCPUs(bad); err == nil {
			t.Errorf("parseCaddyCPUs(%q) accepted it", bad)
		}
	}
}
