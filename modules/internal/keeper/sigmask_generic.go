//go:build linux && !mips && !mipsle && !mips64 && !mips64le

package keeper

const (
	sigSetmask  = 2 // SIG_SETMASK
	sigsetBytes = 8 // the kernel's sigset_t: _NSIG (64) bits
)
