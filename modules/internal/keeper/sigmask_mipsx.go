//go:build linux && (mips || mipsle || mips64 || mips64le)

package keeper

const (
	sigSetmask  = 3  // SIG_SETMASK
	sigsetBytes = 16 // the kernel's sigset_t: _NSIG (128) bits
)
