package boot

import "github.com/moat-iot/moat/internal/image"

// SetFault makes every later filesystem change of s call fault first; an error from fault
// stops the operation there, as a power cut would (the crash tests).
func SetFault(s *Slots, fault func(op string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = fault
}

// VerifyBundle runs Verify's metadata checks on the bytes of a bundle.json and returns the
// signed target's path, SHA-256 and length, and the metadata versions.
func VerifyBundle(pinnedRoot, raw []byte, kind image.Kind, want Installed) (path, sha string, length int64, v Versions, err error) {
	t, v, err := verifyBundle(pinnedRoot, raw, kind, want)
	return t.path, t.sha256, t.length, v, err
}

// EncodeBundle is bundle.json for a bundle planned at path p.
var EncodeBundle = encodeBundle
