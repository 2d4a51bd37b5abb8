//go:build linux || darwin || freebsd || netbsd || openbsd

package httpapi

import (
	"errors"
	"syscall"
)

// canWatch: a parked connection is watched (park.go).
const canWatch = true

// waitReadable waits, without reading, until the socket has data (data true) or the
// client closed it (data false), or until its read deadline or its close (err). It peeks
// at one byte: readiness alone cannot tell data from a stale wake-up of the poller.
func waitReadable(rc syscall.RawConn) (data bool, err error) {
	var b [1]byte
	var n int
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(perr, syscall.EAGAIN) && !errors.Is(perr, syscall.EINTR)
	})
	if err != nil {
		return false, err
	}
	if perr != nil {
		return false, perr
	}
	return n > 0, nil
}
