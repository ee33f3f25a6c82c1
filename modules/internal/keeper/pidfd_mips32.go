//go:build linux && (mips || mipsle)

package keeper

// mipsBase is where o32's system call numbers start.
const mipsBase = 4000
