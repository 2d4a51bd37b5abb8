package update

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/atomicfile"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// tufFetcher is go-tuf's metadata fetcher with the Client's HTTP client, a context and a size
// bound: it reads at most min(maxLength, limit)+1 bytes of a response.
//
// With roots set, it also keeps every N.root.json it downloads in that directory
// (StateDir/tuf/roots): go-tuf keeps only the newest root it trusts, and a device's boot
// bundle needs the whole chain from the pinned root (Client.Bundle). A root is kept before
// go-tuf has checked it; Bundle uses only the ones that chain, by signature, from the pinned
// root to the root go-tuf trusts, and removes those above it.
type tufFetcher struct {
	ctx   context.Context
	hc    *http.Client
	limit int64
	roots string
}

func (f tufFetcher) DownloadFile(url string, maxLength int64, _ time.Duration) ([]byte, error) {
	maxLength = min(maxLength, f.limit)
	req, err := http.NewRequestWithContext(f.ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := f.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		// go-tuf's root update loop stops at a 404 (or 403): keep its type.
		return nil, &metadata.ErrDownloadHTTP{StatusCode: res.StatusCode, URL: url}
	}
	if res.ContentLength > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: %d bytes, more than %d", url, res.ContentLength, maxLength)}
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, maxLength+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s: more than %d bytes", url, maxLength)}
	}
	if v, ok := rootVersion(url); ok && f.roots != "" {
		if err := saveRoot(f.roots, v, data); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// rootVersion returns N when rawURL names N.root.json, as go-tuf asks for the next root.
func rootVersion(rawURL string) (int64, bool) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, false
	}
	n, ok := strings.CutSuffix(path.Base(u.Path), "."+metadata.ROOT+".json")
	if !ok || n == "" || n[0] == '0' {
		return 0, false
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil || v < 1 {
		return 0, false
	}
	return v, true
}

// saveRoot keeps a downloaded root as dir/N.root.json.
func saveRoot(dir string, version int64, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keep root version %d: %w", version, err)
	}
	return atomicfile.Write(dir, rootName(version), data)
}

func rootName(version int64) string {
	return strconv.FormatInt(version, 10) + "." + metadata.ROOT + ".json"
}
