package tuf

import (
	"crypto/ecdsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/target/targettest"
)

func TestVerifySignedByAny(t *testing.T) {
	t.Parallel()
	signerKey, other := newKey(t), newKey(t)
	data, err := SignApps(signerOf(t, signerKey), 1, time.Now().Add(time.Hour), map[string]TargetFile{
		"apps/a/1.0.0": {Length: 1, SHA256: "aa00000000000000000000000000000000000000000000000000000000000000", Custom: withSecurityVersion(customFor("apps/a/1.0.0"), 3)},
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
	if err != nil || files["apps/a/1.0.0"].Length != 1 || files["apps/a/1.0.0"].Custom.SecurityVersion != 3 {
		t.Errorf("TargetFilesOf = %+v, %v", files, err)
	}
}

func withSecurityVersion(c target.Custom, v uint32) target.Custom {
	c.SecurityVersion = v
	return c
}

// TestTargetFilesOf_RejectsBadCustomMetadata: the server and the CLI read signed custom
// metadata (TargetFilesOf) as devices do: the same suite runs in internal/agent.
func TestTargetFilesOf_RejectsBadCustomMetadata(t *testing.T) {
	t.Parallel()
	targettest.RunCustom(t, func(path string, tf *metadata.TargetFiles) error {
		md := metadata.Targets(time.Now().Add(time.Hour))
		md.Signed.Targets[path] = tf
		_, err := TargetFilesOf(md)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("TargetFilesOf = %v, want ErrMalformed", err)
		}
		return err
	})
}

// TestSignApps_RejectsBadCustomMetadata: nothing a reader would refuse is signed.
func TestSignApps_RejectsBadCustomMetadata(t *testing.T) {
	t.Parallel()
	c := customFor("apps/a/1.0.0")
	c.Product = ""
	_, err := SignApps(signerOf(t, newKey(t)), 1, time.Now().Add(time.Hour), map[string]TargetFile{
		"apps/a/1.0.0": {Length: 1, SHA256: strings.Repeat("aa", 32), Custom: c},
	})
	if !errors.Is(err, ErrMalformed) || !errors.Is(err, target.ErrBadCustom) {
		t.Errorf("SignApps(app without product) = %v, want ErrMalformed and target.ErrBadCustom", err)
	}
}
