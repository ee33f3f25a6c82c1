//go:build !cgo && linux

package keeper

import (
	"syscall"
	"unsafe"
)

// dropInheritableCaps clears the inheritable set (and so the ambient set)
// of every thread of Caddy, keeping the permitted and effective sets.
func dropInheritableCaps() {
	hdr := capHeader{version: capVersion}
	var data [2]capData
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return
	}
	if data[0].inheritable == 0 && data[1].inheritable == 0 {
		return
	}
	data[0].inheritable, data[1].inheritable = 0, 0
	hdr.pid = 0
	syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
}
