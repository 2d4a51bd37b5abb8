package update

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// tufFetcher is go-tuf's metadata fetcher with the Client's HTTP client, a context and a size
// bound: it reads at most min(maxLength, limit)+1 bytes of a response.
type tufFetcher struct {
	ctx   context.Context
	hc    *http.Client
	limit int64
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
	return data, nil
}
