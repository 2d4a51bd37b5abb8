package image

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Reader reads one package: its manifest at once, its payload as a stream.
type Reader struct {
	m       Manifest
	payload *payloadReader
}

// Open reads the header and the manifest of the package that r streams, and checks them.
// The payload is read through Payload.
func Open(r io.Reader) (*Reader, error) {
	var h [headerLen]byte
	if err := readFull(r, h[:], "header"); err != nil {
		return nil, err
	}
	if string(h[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("header starts with %q: %w", h[:len(Magic)], ErrBadMagic)
	}
	if v := binary.BigEndian.Uint32(h[8:12]); v != FormatVersion {
		return nil, fmt.Errorf("header names format %d, this reader knows %d: %w", v, FormatVersion, ErrUnsupportedVersion)
	}
	n := binary.BigEndian.Uint32(h[12:16])
	if n > MaxManifestBytes {
		return nil, fmt.Errorf("header declares a manifest of %d bytes, at most %d allowed: %w", n, MaxManifestBytes, ErrTooLarge)
	}
	raw := make([]byte, n)
	if err := readFull(r, raw, "manifest"); err != nil {
		return nil, err
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	want, _ := hex.DecodeString(m.Payload.SHA256) // checked by ParseManifest
	return &Reader{m: m, payload: &payloadReader{r: r, length: m.Payload.Length, remaining: m.Payload.Length, h: sha256.New(), want: want}}, nil
}

// readFull fills b from r; a short read is ErrTruncated.
func readFull(r io.Reader, b []byte, section string) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("file ends inside the %s: %w", section, ErrTruncated)
		}
		return fmt.Errorf("read %s: %w", section, err)
	}
	return nil
}

// Manifest returns the package's manifest.
func (r *Reader) Manifest() Manifest { return r.m.clone() }

// Payload returns the payload, the zstd-compressed tar, as a stream of exactly
// Manifest().Payload.Length bytes. The bytes are unverified until the stream ends: at its
// end it returns io.EOF only if the length and SHA-256 match and nothing follows;
// otherwise ErrTruncated, ErrPayloadMismatch or ErrTrailingData, and the same error on every
// later call. Every call returns the same stream.
func (r *Reader) Payload() io.Reader { return r.payload }

// payloadReader passes through exactly remaining bytes, hashing them, and checks the hash
// and the end of the file when they are used up.
type payloadReader struct {
	r         io.Reader
	length    int64 // declared
	remaining int64
	h         hash.Hash
	want      []byte
	err       error // sticky: returned by every Read once set
}

func (p *payloadReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.remaining == 0 {
		p.err = p.finish()
		return 0, p.err
	}
	if int64(len(b)) > p.remaining {
		b = b[:p.remaining]
	}
	n, err := p.r.Read(b)
	p.h.Write(b[:n])
	p.remaining -= int64(n)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && p.remaining > 0:
		p.err = fmt.Errorf("file ends %d bytes before the end of the payload: %w", p.remaining, ErrTruncated)
	case errors.Is(err, io.EOF):
		p.err = p.verify()
	default:
		p.err = fmt.Errorf("read payload: %w", err)
	}
	if n > 0 {
		return n, nil // the error, if any, comes with the next call
	}
	return 0, p.err
}

// finish checks that the file ends where the payload does, then verifies the hash.
// Enforces ATTACKS row 12 (endless data) at the package level: nothing beyond the declared
// length is read but one byte, to see that there is none.
func (p *payloadReader) finish() error {
	var one [1]byte
	n, err := io.ReadFull(p.r, one[:])
	switch {
	case n > 0:
		return fmt.Errorf("file continues after the declared %d-byte payload: %w", p.length, ErrTrailingData)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("read payload: %w", err)
	}
	return p.verify()
}

func (p *payloadReader) verify() error {
	if got := p.h.Sum(nil); string(got) != string(p.want) {
		return fmt.Errorf("payload sha256 is %x, manifest declares %x: %w", got, p.want, ErrPayloadMismatch)
	}
	return io.EOF
}
