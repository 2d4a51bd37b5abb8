package agent_test

import (
	"os"
	"testing"

	"github.com/moat-iot/moat/internal/agent/sandbox"
)

// TestMain lets the test binary run the sandbox's init step, as moat and moat-agent do.
func TestMain(m *testing.M) {
	sandbox.MaybeInit()
	os.Exit(m.Run())
}
