//go:build linux && (mips || mipsle || mips64 || mips64le)

package keeper

// pidfd_open and pidfd_send_signal (this package keeps to the standard
// library, whose syscall package does not name them): MIPS numbers its
// system calls from 4000 (o32) or 5000 (n64).
const (
	sysPidfdOpen       = mipsBase + 434
	sysPidfdSendSignal = mipsBase + 424
)
