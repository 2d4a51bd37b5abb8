package agent

import "syscall"

// processAttr: the app is its own process group (the agent stops all of it) and dies with
// the agent (a killed agent leaves no app behind that still holds the peripherals).
func processAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
