//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package httpapi

import (
	"errors"
	"syscall"
)

// canWatch: the watch is the BSDs' and Linux's (a peek that does not read); elsewhere a parked
// connection has no watch: Park hands it back right after its answer, and a client gone
// before the answer is seen when the answer is written.
const canWatch = false

func waitReadable(syscall.RawConn) (bool, error) {
	return false, errors.ErrUnsupported
}
