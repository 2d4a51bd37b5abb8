package update

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/image"
)

// maxDiscardResponseBytes bounds what DownloadDiscard reads of an error response.
const maxDiscardResponseBytes = 4 << 10

// DownloadDiscard fetches the planned image as Download does and checks it the same way
// (it must hash to the signed SHA-256 and length, blob.VerifyingReader, and be a
// well-formed package whose manifest states the planned kind, name, version and security
// version), but keeps none of it: it streams through memory and is discarded. It is for
// devices that hold no image (simulated ones, `moat sim`); a nil error means the whole
// image arrived and passed every check. It does not resume: a failed download starts over.
// FetchOptions.Timeout bounds it.
func (c *Client) DownloadDiscard(ctx context.Context, p PlannedImage) error {
	if err := c.downloadDiscard(ctx, p); err != nil {
		return fmt.Errorf("download %s: %w", p.Path, err)
	}
	return nil
}

func (c *Client) downloadDiscard(ctx context.Context, p PlannedImage) error {
	want, err := blob.ParseDigest(p.SHA256)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchOptions.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return err
	}
	res, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxDiscardResponseBytes))
		return fmt.Errorf("HTTP %d", res.StatusCode)
	}
	vr := blob.VerifyingReader(res.Body, want, p.Length)
	if err := checkStream(vr, p); err != nil {
		return err
	}
	// The package reader stops at the payload's end; the verdict on the whole blob comes
	// at the verifying reader's end.
	if _, err := io.Copy(io.Discard, vr); err != nil {
		return err
	}
	if c.cfg.Progress != nil {
		c.cfg.Progress(p, p.Length)
	}
	return nil
}

// checkStream reads a package from r and compares its manifest with p, as checkPackage
// does for a file.
func checkStream(r io.Reader, p PlannedImage) error {
	pkg, err := image.Open(r)
	if err != nil {
		return err
	}
	m := pkg.Manifest()
	prefix := "apps/"
	if p.Kind == director.KindOS {
		prefix = "os/"
	}
	if string(m.Kind) != p.Kind || m.Version != p.Version || m.SecurityVersion != p.SecurityVersion ||
		p.Path != prefix+m.Name+"/"+m.Version {
		return fmt.Errorf("%w: package holds %s %s %s security version %d, plan %s security version %d",
			ErrManifestMismatch, m.Kind, m.Name, m.Version, m.SecurityVersion, p.Path, p.SecurityVersion)
	}
	_, err = io.Copy(io.Discard, pkg.Payload())
	return err
}
