package update

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// rootsDir holds, under StateDir/tuf, every N.root.json the client downloaded (tufFetcher).
const rootsDir = "roots"

// Bundle is the signed TUF metadata the client trusts, for a device's verified boot
// (internal/agent/boot verifies a slot with it, from the pinned root, at every boot). It has
// the fields of boot.Bundle, so one converts to the other: boot.Bundle(b).
type Bundle struct {
	// Roots are the roots after the pinned one, up to the trusted one, in order.
	Roots [][]byte
	// Targets is the trusted targets.json.
	Targets []byte
	// Apps is the trusted apps.json; nil until a Check looked up an app.
	Apps []byte
}

// Bundle returns the metadata the last Check trusted: the root chain from the pinned root
// to the root go-tuf trusts, targets.json and apps.json, as go-tuf stored them. Call it after
// Check and Download, before another Check, so that it signs the planned images.
//
// Every root of the chain is checked here as go-tuf checked it: one version after the last,
// signed by a threshold of the previous root's keys and of its own; the last must be the
// root go-tuf trusts, byte for byte. A kept root that does not chain (damaged, or one go-tuf
// refused and a later download did not replace) is downloaded again; kept roots above the
// trusted version, which go-tuf did not accept, are removed. A downloaded root proves nothing
// by itself: boot.Verify checks the whole chain again from the pinned root.
func (c *Client) Bundle(ctx context.Context) (Bundle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.Memory != nil {
		return Bundle{}, errors.New("bundle: a client with memory state keeps no root chain")
	}
	dir := filepath.Join(c.cfg.StateDir, tufDir)
	trustedRaw, err := os.ReadFile(filepath.Join(dir, metadata.ROOT+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Bundle{}, errors.New("bundle: no trusted metadata yet; Check first")
	}
	if err != nil {
		return Bundle{}, fmt.Errorf("bundle: read trusted root: %w", err)
	}
	trusted, err := metadata.Root().FromBytes(trustedRaw)
	if err != nil {
		return Bundle{}, fmt.Errorf("bundle: trusted root: %w", err)
	}
	cur, err := metadata.Root().FromBytes(c.cfg.Root)
	if err != nil {
		return Bundle{}, fmt.Errorf("bundle: pinned root: %w", err)
	}
	curRaw := c.cfg.Root
	var b Bundle
	for v := cur.Signed.Version + 1; v <= trusted.Signed.Version; v++ {
		raw, next, err := c.chainRoot(ctx, dir, cur, v)
		if err != nil {
			return Bundle{}, fmt.Errorf("bundle: %w", err)
		}
		b.Roots = append(b.Roots, raw)
		cur, curRaw = next, raw
	}
	if !bytes.Equal(curRaw, trustedRaw) {
		return Bundle{}, fmt.Errorf("bundle: the root chain ends in a root version %d other than the trusted one", cur.Signed.Version)
	}
	if err := pruneRoots(filepath.Join(dir, rootsDir), trusted.Signed.Version); err != nil {
		return Bundle{}, fmt.Errorf("bundle: %w", err)
	}
	if b.Targets, err = os.ReadFile(filepath.Join(dir, metadata.TARGETS+".json")); err != nil {
		return Bundle{}, fmt.Errorf("bundle: read trusted targets: %w", err)
	}
	switch b.Apps, err = os.ReadFile(filepath.Join(dir, appsRole+".json")); {
	case errors.Is(err, fs.ErrNotExist):
		b.Apps = nil
	case err != nil:
		return Bundle{}, fmt.Errorf("bundle: read trusted apps: %w", err)
	}
	return b, nil
}

// appsRole is the delegated role the tenant's keys hold; go-tuf stores it as apps.json.
const appsRole = "apps"

// chainRoot returns root version v, kept or else downloaded, checked against cur.
func (c *Client) chainRoot(ctx context.Context, dir string, cur *metadata.Metadata[metadata.RootType], v int64) ([]byte, *metadata.Metadata[metadata.RootType], error) {
	roots := filepath.Join(dir, rootsDir)
	raw, err := os.ReadFile(filepath.Join(roots, rootName(v)))
	if err == nil {
		if next, err := chains(cur, raw, v); err == nil {
			return raw, next, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("read root version %d: %w", v, err)
	}
	f := tufFetcher{ctx: ctx, hc: c.cfg.HTTPClient, limit: c.cfg.MaxMetadataBytes, roots: roots}
	raw, err = f.DownloadFile(c.cfg.MetadataURL+rootName(v), c.cfg.MaxMetadataBytes, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("download root version %d: %w", v, err)
	}
	next, err := chains(cur, raw, v)
	if err != nil {
		return nil, nil, err
	}
	return raw, next, nil
}

// chains parses raw as root version v signed by a threshold of cur's root keys and of its
// own.
func chains(cur *metadata.Metadata[metadata.RootType], raw []byte, v int64) (next *metadata.Metadata[metadata.RootType], err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("root version %d: malformed: %v", v, p)
		}
	}()
	next, err = metadata.Root().FromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("root version %d: %w", v, err)
	}
	if next.Signed.Version != v {
		return nil, fmt.Errorf("root version %d: file holds version %d", v, next.Signed.Version)
	}
	if err := cur.VerifyDelegate(metadata.ROOT, next); err != nil {
		return nil, fmt.Errorf("root version %d: not signed by the keys of version %d: %w", v, cur.Signed.Version, err)
	}
	if err := next.VerifyDelegate(metadata.ROOT, next); err != nil {
		return nil, fmt.Errorf("root version %d: not signed by its own keys: %w", v, err)
	}
	return next, nil
}

// pruneRoots removes kept roots above version trusted: go-tuf did not accept them.
func pruneRoots(dir string, trusted int64) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list kept roots: %w", err)
	}
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), "."+metadata.ROOT+".json")
		if !ok {
			continue
		}
		if v, err := strconv.ParseInt(n, 10, 64); err == nil && v > trusted {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove untrusted root version %d: %w", v, err)
			}
		}
	}
	return nil
}
