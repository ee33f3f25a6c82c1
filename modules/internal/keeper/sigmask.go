//go:build linux

package keeper

import (
	"syscall"
	"unsafe"
)

// unblockSignals empties the calling thread's signal mask. A process
// forked from that thread starts with the mask emptied too (Go's fork
// restores the forking thread's mask in the child, and execve keeps it):
// without this, a signal Caddy was started with blocked would stay blocked
// in every process Hearth starts, so a service or process upstream would
// never see the SIGTERM that stops it (waiting out its stop timeout to
// be killed), nor a worker the SIGUSR1 that dumps its stacks. Go's
// runtime needs no signal blocked in a thread outside a fork.
func unblockSignals() error {
	var none [sigsetBytes]byte
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigSetmask, uintptr(unsafe.Pointer(&none[0])), 0, sigsetBytes, 0, 0); e != 0 {
		return e
	}
	return nil
}
