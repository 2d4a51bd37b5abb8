package repo

import (
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/target/targettest"
)

// TestCatalog_RejectsBadCustomMetadata: the server's catalog reads the signed custom
// metadata of a target as the device does (internal/agent/update and boot run the same
// suite). It once read a missing security_version as 0, which devices refuse.
func TestCatalog_RejectsBadCustomMetadata(t *testing.T) {
	t.Parallel()
	targettest.RunCustom(t, func(path string, tf *metadata.TargetFiles) error {
		md := metadata.Targets(time.Now().Add(time.Hour))
		md.Signed.Targets[path] = tf
		images := map[string]Image{}
		if err := addImages(images, md, path[:strings.IndexByte(path, '/')+1]); err != nil {
			return err
		}
		if len(images) != 1 {
			t.Fatalf("addImages listed %d images, want 1", len(images))
		}
		return nil
	})
}
