package boot

import (
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/target/targettest"
)

// TestVerify_RejectsBadCustomMetadata: verified boot reads a signed target's custom
// metadata as the server's catalog and the update client do (they run the same suite).
func TestVerify_RejectsBadCustomMetadata(t *testing.T) {
	t.Parallel()
	targettest.RunCustom(t, func(path string, tf *metadata.TargetFiles) error {
		_, err := targetOf(path, tf)
		return err
	})
}
