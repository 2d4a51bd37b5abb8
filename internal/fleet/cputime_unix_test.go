//go:build unix

package fleet_test

import (
	"syscall"
	"time"
)

// cpuTime is the process's CPU time so far (user and system, every thread), so that a
// benchmark can report its CPU cost per operation beside its rate: on a shared machine the
// rate follows the other tenants' load, the CPU cost much less.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
