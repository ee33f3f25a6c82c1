package engine

import (
	"syscall"

	"go.uber.org/zap"
)

// Scheduling policies of <linux/sched.h>, as sched_getscheduler returns
// them (without SCHED_RESET_ON_FORK).
const (
	schedOther       = 0
	schedBatch       = 3
	schedIdle        = 5
	schedResetOnFork = 0x40000000
)

// cpuPolicies maps cpu_policy's values to the policy a worker sets itself
// (hearth_worker.py, set_cpu_policy).
var cpuPolicies = map[string]int{"batch": schedBatch, "normal": schedOther}

// checkCPUPolicy reads the policy of a worker that has greeted Caddy
// (it sets its own before it imports the app) and logs, once per pool,
// that it is not the one cpu_policy asks for. A worker switches only
// between SCHED_OTHER and SCHED_BATCH (SCHED_IDLE, Caddy's
// administrator's choice, is kept), so a worker under the other of those
// two was refused the change: by a system call filter, as systemd's
// SystemCallFilter=~@resources does. It serves all the same.
func (p *Pool) checkCPUPolicy(pid int) {
	want, ok := cpuPolicies[p.opts.CPUPolicy]
	if !ok || p.policyWarned.Load() {
		return
	}
	got, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETSCHEDULER, uintptr(pid), 0, 0)
	if e != 0 { // gone already: its end is reported elsewhere
		return
	}
	got &^= schedResetOnFork
	if int(got) == want || got != schedOther && got != schedBatch || !p.policyWarned.CompareAndSwap(false, true) {
		return
	}
	p.logger.Warn("the workers run under the scheduling policy they inherited from Caddy, not the one cpu_policy asks for: "+
		"something refuses them sched_setscheduler, most likely a system call filter (systemd's SystemCallFilter=~@resources "+
		"refuses it unless it is allowed again, as in the unit `caddy hearth systemd` writes: SystemCallFilter=sched_setscheduler). "+
		"They serve as before; logged once per pool",
		zap.String("cpu_policy", p.opts.CPUPolicy), zap.Int("pid", pid), zap.String("policy", policyName(int(got))))
}

// policyName names the two policies a worker can be found under here.
func policyName(policy int) string {
	if policy == schedBatch {
		return "SCHED_BATCH"
	}
	return "SCHED_OTHER"
}
