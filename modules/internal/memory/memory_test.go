package memory

import (
	"runtime/debug"
	"testing"
)

// TestTotal: the machine's memory, or Go's memory limit when that is less.
func TestTotal(t *testing.T) {
	machine := Total()
	if machine <= 0 {
		t.Fatalf("Total() = %d on a machine whose memory the kernel reports", machine)
	}
	old := debug.SetMemoryLimit(machine / 2)
	defer debug.SetMemoryLimit(old)
	if got := Total(); got != machine/2 {
		t.Errorf("with a memory limit of %d, Total() = %d", machine/2, got)
	}
}
