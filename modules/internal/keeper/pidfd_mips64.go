//go:build linux && (mips64 || mips64le)

package keeper

// mipsBase is where n64's system call numbers start.
const mipsBase = 5000
