//go:build !linux

package sandbox

import (
	"context"
	"errors"
	"syscall"
)

// errUnsupported: the sandbox needs Linux (process groups, prctl, namespaces).
var errUnsupported = errors.New("the application sandbox runs on Linux only")

func namespacesAvailable() bool { return false }

func signalGroup(int, syscall.Signal) error { return errUnsupported }

func start(context.Context, Spec, string) (*Process, error) { return nil, errUnsupported }

// MaybeInit returns at once: there is no init step off Linux.
func MaybeInit() {}
