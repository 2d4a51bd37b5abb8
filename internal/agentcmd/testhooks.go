//go:build moat_testhooks

package agentcmd

import (
	"fmt"
	"io"
	"os"

	"github.com/moat-iot/moat/internal/agent"
)

// PauseEnv names the update step (downloaded, installed, trial, committed) at which an
// agent started for a fault-injection test announces itself on stderr ("PAUSED <step>")
// and stops until it is killed, as a power cut there would.
//
// Test-only: this file is compiled only with the moat_testhooks build tag, which
// internal/agent's process tests pass when they build moat-agent; a device build has no
// such hook (TestShippedBinaries_HaveNoTestHook).
const PauseEnv = "MOAT_AGENT_TEST_PAUSE"

func testHooks(cfg *agent.Config, stderr io.Writer) {
	if step := os.Getenv(PauseEnv); step != "" {
		cfg.Step = pauseAt(step, stderr)
	}
}

func pauseAt(want string, stderr io.Writer) func(string) {
	return func(step string) {
		if step != want {
			return
		}
		fmt.Fprintf(stderr, "PAUSED %s\n", step)
		select {} // until SIGKILL
	}
}
