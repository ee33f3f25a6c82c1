package hearth

import "testing"

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
	} {
		got, err := parseMaxProcesses(tc.setting)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %d, %v; want %d (accepted: %v)", tc.setting, got, err, tc.want, tc.ok)
		}
	}
}
