package keys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// specKeyID computes a TUF key ID from the specification, independently of go-tuf: the
// SHA-256 of the OLPC canonical JSON of the key object (keys sorted, no white space, strings
// escaping only backslash and quote, so the PEM's newlines stay as they are).
func specKeyID(t *testing.T, pub *ecdsa.PublicKey) string {
	t.Helper()
	pemBytes, err := EncodePublicPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	canonical := `{"keytype":"ecdsa","keyval":{"public":"` + string(pemBytes) + `"},"scheme":"ecdsa-sha2-nistp256"}`
	sum := sha256.Sum256([]byte(canonical))
	return hex.EncodeToString(sum[:])
}

func TestKeyID_IsTUFKeyID(t *testing.T) {
	t.Parallel()
	for range 3 {
		pub := &newKey(t).PublicKey
		id := KeyID(pub)
		k, err := metadata.KeyFromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		tufID, err := k.ID()
		if err != nil {
			t.Fatal(err)
		}
		if id != tufID {
			t.Errorf("KeyID = %s, want go-tuf's %s", id, tufID)
		}
		if spec := specKeyID(t, pub); id != spec {
			t.Errorf("KeyID = %s, want %s computed from the TUF specification", id, spec)
		}
		if k.Type != KeyType || k.Scheme != KeyScheme {
			t.Errorf("go-tuf key type, scheme = %s, %s; want %s, %s", k.Type, k.Scheme, KeyType, KeyScheme)
		}
		if again := KeyID(pub); again != id {
			t.Errorf("KeyID twice = %s, %s", id, again)
		}
	}
}

// TestKeyID_Stable pins the ID of a fixed key, so that a go-tuf upgrade that changed how
// IDs are computed (and so orphaned every registered key) fails here first.
func TestKeyID_Stable(t *testing.T) {
	t.Parallel()
	pub, err := ReadPublic("testdata/p256.pub")
	if err != nil {
		t.Fatal(err)
	}
	const want = "59ccb5ae47251cf50d8eda3091028338a73d06070549d2494d63fe8f63ec87cf"
	if got := KeyID(pub); got != want {
		t.Errorf("KeyID(testdata/p256.pub) = %s, want %s", got, want)
	}
}

func TestKeyID_PanicsOnOtherCurves(t *testing.T) {
	t.Parallel()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	defer func() {
		if recover() == nil {
			t.Error("KeyID(P-384) did not panic")
		}
	}()
	KeyID(&p384.PublicKey)
}

// TestSigner_VerifiesWithGoTUF signs targets metadata with Signer and verifies it the way a
// TUF client does, through the delegating root's VerifyDelegate, also after a trip through
// bytes; another key's signature and a change after signing are refused.
func TestSigner_VerifiesWithGoTUF(t *testing.T) {
	t.Parallel()
	key, other := newKey(t), newKey(t)
	expires := time.Now().Add(24 * time.Hour)

	root := metadata.Root(expires)
	tufKey, err := metadata.KeyFromPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Signed.AddKey(tufKey, metadata.TARGETS); err != nil {
		t.Fatal(err)
	}
	if _, ok := root.Signed.Keys[KeyID(&key.PublicKey)]; !ok {
		t.Fatalf("root keys = %v, want KeyID %s among them", root.Signed.Keys, KeyID(&key.PublicKey))
	}

	sign := func(k *ecdsa.PrivateKey) *metadata.Metadata[metadata.TargetsType] {
		targets := metadata.Targets(expires)
		s, err := Signer(k)
		if err != nil {
			t.Fatalf("Signer = %v", err)
		}
		sig, err := targets.Sign(s)
		if err != nil {
			t.Fatalf("Sign = %v", err)
		}
		if sig.KeyID != KeyID(&k.PublicKey) {
			t.Errorf("signature key ID = %s, want KeyID %s", sig.KeyID, KeyID(&k.PublicKey))
		}
		return targets
	}

	targets := sign(key)
	if err := root.VerifyDelegate(metadata.TARGETS, targets); err != nil {
		t.Errorf("VerifyDelegate(targets signed by the key) = %v, want nil", err)
	}
	data, err := targets.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := metadata.Targets().FromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := root.VerifyDelegate(metadata.TARGETS, parsed); err != nil {
		t.Errorf("VerifyDelegate(targets after ToBytes/FromBytes) = %v, want nil", err)
	}

	if err := root.VerifyDelegate(metadata.TARGETS, sign(other)); err == nil {
		t.Error("VerifyDelegate(targets signed by another key) = nil, want an error")
	}
	parsed.Signed.Version++
	if err := root.VerifyDelegate(metadata.TARGETS, parsed); err == nil {
		t.Error("VerifyDelegate(targets changed after signing) = nil, want an error")
	}
}
