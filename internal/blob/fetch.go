package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrStalled: the server sent no byte for FetchOptions.StallTimeout. What arrived is
	// kept; the next Fetch resumes.
	ErrStalled = errors.New("blob download stalled")
	// ErrTimeout: the download took longer than FetchOptions.Timeout. What arrived is kept;
	// the next Fetch resumes.
	ErrTimeout = errors.New("blob download took too long")
)

// DefaultStallTimeout is the StallTimeout of a zero FetchOptions.
const DefaultStallTimeout = 30 * time.Second

// FetchOptions bound a download in time.
type FetchOptions struct {
	// StallTimeout ends the download when no byte (and, before the response, no header)
	// arrives for this long. Zero means DefaultStallTimeout.
	StallTimeout time.Duration
	// Timeout ends the download when it has taken this long in all. Zero means no limit
	// beyond ctx's; a server that trickles one byte per StallTimeout is then held off only
	// by ctx, so set one of them.
	Timeout time.Duration
	// Progress, optional, is called as bytes arrive with how many of the blob the .part
	// file holds (a resumed prefix included), from the goroutine that called Fetch. It
	// must be cheap: the caller throttles what it does with it.
	Progress func(have int64)
}

// Fetch downloads the blob want of size bytes from url into the file dst, and succeeds only
// if dst then holds exactly that content.
//
// It downloads into dst+".part". If that file exists from an interrupted Fetch, it asks
// only for the rest, with "Range: bytes=N-" and an If-Range of the blob's ETag; a server
// that answers with the whole blob (200) is read from the start, and one that answers 206
// with any other Content-Range than the rest is asked again for the whole blob. It reads at
// most size+1 bytes of a response, so an endless one is cut off with ErrTooLarge. It gives
// up with ErrStalled or ErrTimeout as FetchOptions say. Finally it checks the SHA-256 of the
// whole file, the resumed prefix included, then syncs it and renames it to dst (mode 0600)
// and syncs dst's directory.
//
// On ErrTooLarge and ErrDigestMismatch the .part file is removed and no dst is written. On
// other errors (a cut connection, a stall, a timeout, ctx) what arrived is kept in the
// .part file, and calling Fetch again resumes. A 404 or 410 is ErrNotFound. Bytes written just before a
// crash may not be on disk: a .part damaged that way fails the final check, is removed, and
// the Fetch after that starts over.
//
// A .part file is taken to be a prefix of want: one left by a Fetch of another blob to the
// same dst fails the final check and costs one download. Fetch trusts neither the server
// nor the network, only the caller's want and size. Concurrent Fetches must use different
// dst files.
func Fetch(ctx context.Context, hc *http.Client, url string, want Digest, size int64, dst string, opts FetchOptions) error {
	if size < 0 {
		return fmt.Errorf("fetch blob %s: negative size %d", want, size)
	}
	if hc == nil {
		return fmt.Errorf("fetch blob %s: no HTTP client", want)
	}
	if err := fetch(ctx, hc, url, want, size, dst, opts); err != nil {
		return fmt.Errorf("fetch blob %s from %s: %w", want, url, err)
	}
	return nil
}

func fetch(ctx context.Context, hc *http.Client, url string, want Digest, size int64, dst string, opts FetchOptions) (err error) {
	part := dst + ".part"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	d := &download{f: f, h: sha256.New(), size: size}
	defer func() {
		if f != nil {
			f.Close()
		}
		// Keep what a later Fetch can resume from; nothing that is known to be wrong.
		if err != nil && (d.have == 0 || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrDigestMismatch)) {
			os.Remove(part)
		}
	}()

	if err := d.hashPrefix(); err != nil {
		return err
	}
	if d.have < size {
		if err := d.get(ctx, hc, url, want, opts); err != nil {
			return err
		}
	}
	if got := Digest(d.h.Sum(nil)); got != want {
		return fmt.Errorf("downloaded content is %s: %w", got, ErrDigestMismatch)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	err = f.Close()
	f = nil
	if err != nil {
		return err
	}
	if err := os.Rename(part, dst); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// download is the state of one Fetch: the .part file, the hash of what it holds so far,
// and how much it holds.
type download struct {
	f    *os.File
	h    hash.Hash
	have int64
	size int64
}

// hashPrefix hashes what an interrupted Fetch left in the .part file and leaves the file
// positioned after it. A file longer than the blob is not a prefix of it and is emptied.
func (d *download) hashPrefix() error {
	fi, err := d.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > d.size {
		return d.restart()
	}
	n, err := io.Copy(d.h, d.f)
	if err != nil {
		return fmt.Errorf("read partial download: %w", err)
	}
	d.have = n
	return nil
}

// restart empties the .part file.
func (d *download) restart() error {
	d.h.Reset()
	d.have = 0
	if err := d.f.Truncate(0); err != nil {
		return err
	}
	_, err := d.f.Seek(0, io.SeekStart)
	return err
}

// get requests the rest of the blob (or all of it) and appends it to the .part file.
func (d *download) get(ctx context.Context, hc *http.Client, url string, want Digest, opts FetchOptions) error {
	stall := opts.StallTimeout
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if opts.Timeout > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeoutCause(ctx, opts.Timeout, fmt.Errorf("%w: more than %v", ErrTimeout, opts.Timeout))
		defer cancelTimeout()
	}
	// The stall timer cancels the request; every byte that arrives winds it up again.
	stalled := fmt.Errorf("%w: no data for %v", ErrStalled, stall)
	timer := time.AfterFunc(stall, func() { cancel(stalled) })
	defer timer.Stop()

	err := d.try(ctx, hc, url, want, timer, stall, opts.Progress)
	if errors.Is(err, errRestart) {
		// The server would not resume as asked: start over, asking for the whole blob.
		if err = d.restart(); err == nil {
			err = d.try(ctx, hc, url, want, timer, stall, opts.Progress)
		}
	}
	if err != nil && ctx.Err() != nil {
		// The request failed because it was cut off: say why, not how.
		return context.Cause(ctx)
	}
	return err
}

var errRestart = errors.New("server did not resume the download")

// try makes one request and appends its body to the .part file. It returns errRestart when
// the server answers a range request in a way that does not continue the .part file.
func (d *download) try(ctx context.Context, hc *http.Client, url string, want Digest, timer *time.Timer, stall time.Duration, progress func(int64)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// No transfer encoding: the bytes on the wire are the bytes hashed and resumed.
	req.Header.Set("Accept-Encoding", "identity")
	resuming := d.have > 0
	if resuming {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(d.have, 10)+"-")
		// A blob's ETag is known in advance (see ETag); a server or cache with another
		// one answers 200 with the whole blob, which is read from the start.
		req.Header.Set("If-Range", ETag(want))
	}
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()

	switch {
	case res.StatusCode == http.StatusOK:
		if resuming {
			if err := d.restart(); err != nil {
				return err
			}
		}
	case res.StatusCode == http.StatusPartialContent && resuming:
		if start, end, total, ok := parseContentRange(res.Header.Get("Content-Range")); !ok ||
			start != d.have || end != d.size-1 || total != d.size {
			return errRestart
		}
	case res.StatusCode == http.StatusRequestedRangeNotSatisfiable && resuming:
		return errRestart
	case res.StatusCode == http.StatusNotFound || res.StatusCode == http.StatusGone:
		return fmt.Errorf("status %s: %w", res.Status, ErrNotFound)
	default:
		return fmt.Errorf("unexpected status %s", res.Status)
	}
	if res.ContentLength > d.size-d.have {
		return fmt.Errorf("response of %d bytes for %d: %w", res.ContentLength, d.size-d.have, ErrTooLarge)
	}

	// At most one byte past the blob's end is read: enough to know it does not end.
	body := io.LimitReader(&progressReader{r: res.Body, timer: timer, stall: stall, have: d.have, progress: progress}, d.size-d.have+1)
	n, err := io.Copy(io.MultiWriter(d.f, d.h), body)
	d.have += n
	switch {
	case d.have > d.size:
		return fmt.Errorf("response longer than %d bytes: %w", d.size, ErrTooLarge)
	case err != nil:
		return err
	case d.have < d.size:
		return fmt.Errorf("response ended after %d of %d bytes: %w", d.have, d.size, io.ErrUnexpectedEOF)
	}
	return nil
}

// progressReader winds up the stall timer whenever bytes arrive.
// It also tells FetchOptions.Progress how much of the blob has arrived.
type progressReader struct {
	r        io.Reader
	timer    *time.Timer
	stall    time.Duration
	have     int64
	progress func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.timer.Reset(p.stall)
		p.have += int64(n)
		if p.progress != nil {
			p.progress(p.have)
		}
	}
	return n, err
}

// parseContentRange parses "bytes START-END/TOTAL" (RFC 9110, 14.4) with a known total.
func parseContentRange(s string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	span, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	first, last, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, 0, false
	}
	start, err1 := parseDecimal(first)
	end, err2 := parseDecimal(last)
	total, err3 := parseDecimal(tot)
	if err1 != nil || err2 != nil || err3 != nil || start > end || end >= total {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

// parseDecimal parses digits only: no sign, no spaces, as RFC 9110 writes them.
func parseDecimal(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	return strconv.ParseInt(s, 10, 64)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	df, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer df.Close()
	return df.Sync()
}
