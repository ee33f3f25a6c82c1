//go:build cgo && linux

package keeper

/*
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

// Runs before the Go runtime starts a second thread: clearing the
// inheritable set (and so the ambient set) here clears it for every thread
// Caddy will have. The permitted and effective sets are kept.
__attribute__((constructor)) static void hearth_drop_inheritable_caps(void) {
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) != 0) {
		return;
	}
	if (data[0].inheritable != 0 || data[1].inheritable != 0) {
		data[0].inheritable = 0;
		data[1].inheritable = 0;
		syscall(SYS_capset, &hdr, data);
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}
*/
import "C"

// dropInheritableCaps: the constructor above did it.
func dropInheritableCaps() {}
