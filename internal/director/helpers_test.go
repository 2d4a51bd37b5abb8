package director_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/director"
)

const (
	deviceA = "dev_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f"
	deviceB = "dev_0193f1c2a4b57d0e9c1f2a3b4c5d6e80"
	tenantA = "ten_0193f1c2a4b50000000000000000000a"
	tenantB = "ten_0193f1c2a4b50000000000000000000b"
)

// issuedAt is when the test assignments are issued; fuzz seeds are verified at issuedAt+1h.
var issuedAt = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fixedKey derives a P-256 key from a fixed scalar, so that committed fuzz seeds signed by
// it stay valid.
func fixedKey(tb testing.TB, fill byte) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func directorKey(tb testing.TB) *ecdsa.PrivateKey { return fixedKey(tb, 0x11) }
func otherKey(tb testing.TB) *ecdsa.PrivateKey    { return fixedKey(tb, 0x22) }

func validAssignment() director.Assignment {
	return director.Assignment{
		Version:   director.Format,
		DeviceID:  deviceA,
		TenantID:  tenantA,
		Counter:   7,
		IssuedAt:  issuedAt,
		ExpiresAt: issuedAt.Add(24 * time.Hour),
		Images: []director.Image{
			{Kind: "os", Path: "os/moat-os/3.1.0", SHA256: strings.Repeat("ab", 32), Length: 48 << 20, Version: "3.1.0", SecurityVersion: 4},
			{Kind: "app", Path: "apps/dw100/1.2.0", SHA256: strings.Repeat("0f", 32), Length: 3 << 20, Version: "1.2.0", SecurityVersion: 2},
		},
	}
}

func expectA() director.Expect {
	return director.Expect{DeviceID: deviceA, TenantID: tenantA, Now: issuedAt.Add(time.Hour), LastCounter: 6}
}

func mustIssue(tb testing.TB, key *ecdsa.PrivateKey, a director.Assignment) []byte {
	tb.Helper()
	env, err := director.Issue(key, a)
	if err != nil {
		tb.Fatalf("Issue(%+v) = %v", a, err)
	}
	return env
}

func keyID(tb testing.TB, key *ecdsa.PrivateKey) string {
	tb.Helper()
	kid, err := director.KeyID(&key.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return kid
}

func sign(tb testing.TB, key *ecdsa.PrivateKey, signed []byte) director.Signature {
	tb.Helper()
	sum := sha256.Sum256(signed)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		tb.Fatal(err)
	}
	return director.Signature{KeyID: keyID(tb, key), Sig: base64.StdEncoding.EncodeToString(sig)}
}

// envelope writes signed verbatim (json.Marshal would compact it) with the given signatures.
func envelope(tb testing.TB, signed []byte, sigs ...director.Signature) []byte {
	tb.Helper()
	if sigs == nil {
		sigs = []director.Signature{}
	}
	s, err := json.Marshal(sigs)
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Appendf(nil, `{"signed":%s,"signatures":%s}`, signed, s)
}

// resigned is an envelope of signed, signed by the director key.
func resigned(tb testing.TB, signed []byte) []byte {
	tb.Helper()
	return envelope(tb, signed, sign(tb, directorKey(tb), signed))
}

// signedOf returns the signed bytes of an envelope.
func signedOf(tb testing.TB, env []byte) []byte {
	tb.Helper()
	var s director.Signed
	if err := json.Unmarshal(env, &s); err != nil {
		tb.Fatal(err)
	}
	return s.Signed
}

// marshal is the canonical encoding of a, written without Validate (for invalid content).
func marshal(tb testing.TB, a director.Assignment) []byte {
	tb.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func replaceOnce(tb testing.TB, b []byte, old, new string) []byte {
	tb.Helper()
	if !bytes.Contains(b, []byte(old)) {
		tb.Fatalf("%q not in %s", old, b)
	}
	return bytes.Replace(b, []byte(old), []byte(new), 1)
}
