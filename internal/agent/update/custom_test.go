package update

import (
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/target/targettest"
)

// TestUpdate_RejectsBadCustomMetadata: the update client reads a verified target's custom
// metadata as the server's catalog and verified boot do (they run the same suite).
func TestUpdate_RejectsBadCustomMetadata(t *testing.T) {
	t.Parallel()
	targettest.RunCustom(t, func(path string, tf *metadata.TargetFiles) error {
		_, err := repoTargetOf(path, tf)
		return err
	})
}
