package cli

import (
	"os"
	"testing"

	"github.com/moat-iot/moat/internal/agent/sandbox"
	"github.com/moat-iot/moat/internal/demo"
)

// TestMain lets this test binary play the parts the moat binary plays for the demo: the
// sandbox's init step and the DW100 app the demo's app images launch.
func TestMain(m *testing.M) {
	sandbox.MaybeInit()
	demo.MaybeRunApp()
	os.Exit(m.Run())
}
