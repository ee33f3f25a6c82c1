//go:build linux && !mips && !mipsle && !mips64 && !mips64le

package keeper

// pidfd_open and pidfd_send_signal (this package keeps to the standard
// library, whose syscall package does not name them).
const (
	sysPidfdOpen       = 434
	sysPidfdSendSignal = 424
)
