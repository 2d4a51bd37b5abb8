package tuf

import (
	"crypto/ecdsa"
	"errors"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func TestVerifySignedByAny(t *testing.T) {
	t.Parallel()
	signerKey, other := newKey(t), newKey(t)
	data, err := SignApps(signerOf(t, signerKey), 1, time.Now().Add(time.Hour), map[string]TargetFile{
		"apps/a/1.0.0": {Length: 1, SHA256: "aa00000000000000000000000000000000000000000000000000000000000000", Custom: map[string]any{"security_version": float64(3)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := metadata.Targets().FromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignedByAny(m, []*ecdsa.PublicKey{&other.PublicKey, &signerKey.PublicKey}); err != nil {
		t.Errorf("VerifySignedByAny(signer among keys) = %v", err)
	}
	if err := VerifySignedByAny(m, []*ecdsa.PublicKey{&other.PublicKey}); !errors.Is(err, ErrSignature) {
		t.Errorf("VerifySignedByAny(other key) = %v, want ErrSignature", err)
	}
	if err := VerifySignedByAny(m, nil); !errors.Is(err, ErrSignature) {
		t.Errorf("VerifySignedByAny(no keys) = %v, want ErrSignature", err)
	}
	files, err := TargetFilesOf(m)
	if err != nil || files["apps/a/1.0.0"].Length != 1 || files["apps/a/1.0.0"].Custom["security_version"] != float64(3) {
		t.Errorf("TargetFilesOf = %+v, %v", files, err)
	}
}
