package hearth

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		floor, live uint64
		baseline    int
		want        int
	}{
		{32 * mib, 4 * mib, 100, 700},  // 4 MiB grows by 700% to 32 MiB
		{32 * mib, 16 * mib, 100, 100}, // doubling already reaches the floor
		{32 * mib, 20 * mib, 100, 100}, // never below the baseline
		{32 * mib, 64 * mib, 100, 100}, // past the floor: Go's default
		{32 * mib, 8 * mib, 400, 400},  // a higher baseline stays
		{32 * mib, 0, 100, 3100},       // no collection yet: counted as 1 MiB
		{1 << 40, 2 * mib, 100, 10000}, // bounded
		{0, 4 * mib, 100, 100},         // off
		{32 * mib, 4 * mib, -1, -1},    // collection off stays off
		{32 * mib, 31 * mib, 100, 100}, // rounding down never goes below
		{33 * mib, 3 * mib, 50, 1000},  // 3 → 33 MiB
	}
	for _, tt := range tests {
		if got := gcPercentFor(tt.floor, tt.live, tt.baseline); got != tt.want {
			t.Errorf("gcPercentFor(%d, %d, %d) = %d, want %d", tt.floor, tt.live, tt.baseline, got, tt.want)
		}
	}
}

func TestParseCaddyGCFloor(t *testing.T) {
	for setting, want := range map[string]uint64{"off": 0, "64MiB": 64 << 20, "100MB": 100e6, "1GiB": 1 << 30} {
		if got, err := parseCaddyGCFloor(setting); err != nil || got != want {
			t.Errorf("parseCaddyGCFloor(%q) = %d, %v; want %d", setting, got, err, want)
		}
	}
	for _, bad := range []string{"0", "-5MB", "lots", "OFF", "Auto", "32 parsecs"} {
		if _, err := parseCaddyGCFloor(bad); err == nil {
			t.Errorf("parseCaddyGCFloor(%q) accepted it", bad)
		}
	}
}

func TestAutoGCFloor(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		memoryLimit int64
		want        uint64
	}{
		{math.MaxInt64, 64 * mib}, // no limit
		{24 << 30, 64 * mib},
		{8 << 30, 64 * mib},
		{4 << 30, 32 * mib},
		{1 << 30, 8 * mib}, // a small board or container
		{256 * mib, 2 * mib},
		{0, 0},
	}
	for _, tt := range tests {
		if got := autoGCFloor(tt.memoryLimit); got != tt.want {
			t.Errorf("autoGCFloor(%d) = %d, want %d", tt.memoryLimit, got, tt.want)
		}
	}
	for _, setting := range []string{"", "auto"} {
		if got, err := parseCaddyGCFloor(setting); err != nil || got != autoGCFloor(debug.SetMemoryLimit(-1)) {
			t.Errorf("parseCaddyGCFloor(%q) = %d, %v; want the auto floor", setting, got, err)
		}
	}
}
