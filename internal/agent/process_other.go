//go:build !linux

package agent

import "syscall"

// processAttr: the app is its own process group, which the agent stops as a whole.
func processAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
