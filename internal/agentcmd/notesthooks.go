//go:build !moat_testhooks

package agentcmd

import (
	"io"

	"github.com/moat-iot/moat/internal/agent"
)

// testHooks does nothing in the shipped build; testhooks.go has the fault-injection hooks
// that tests compile in with the moat_testhooks tag.
func testHooks(*agent.Config, io.Writer) {}
