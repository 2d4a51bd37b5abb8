package attest_test

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

	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/identity"
)

// attestedAt is the device time in the test evidence; the server verifies at attestedAt+1m.
var attestedAt = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var (
	nonceA = base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xa1}, 32))
	nonceB = base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xb2}, 32))
)

// fixedKey derives a P-256 key from a fixed scalar, so that committed fuzz seeds and the
// docs example signed by it stay valid.
func fixedKey(tb testing.TB, fill byte) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func keyA(tb testing.TB) *ecdsa.PrivateKey { return fixedKey(tb, 0x11) }
func keyB(tb testing.TB) *ecdsa.PrivateKey { return fixedKey(tb, 0x22) }

func idOf(k *ecdsa.PrivateKey) string { return string(identity.IDFromPublicKey(&k.PublicKey)) }

// keySigner is an in-memory identity.Signer, as a TPM backend would present one.
type keySigner struct{ k *ecdsa.PrivateKey }

func (s keySigner) Public() *ecdsa.PublicKey { return &s.k.PublicKey }
func (s keySigner) Sign(d []byte) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, s.k, d)
}

func validEvidence(tb testing.TB) attest.Evidence {
	return attest.Evidence{
		Format:   attest.Format,
		DeviceID: idOf(keyA(tb)),
		Nonce:    nonceA,
		Time:     attestedAt,
		Measurements: []attest.Measurement{
			{Kind: "os", Path: "os/moat-os/3.1.0", SHA256: strings.Repeat("ab", 32), Version: "3.1.0", SecurityVersion: 4},
			{Kind: "app", Path: "apps/dw100/1.2.0", SHA256: strings.Repeat("0f", 32), Version: "1.2.0", SecurityVersion: 2},
		},
	}
}

func expectA(tb testing.TB) attest.Expect {
	return attest.Expect{DeviceID: idOf(keyA(tb)), Nonce: nonceA, Now: attestedAt.Add(time.Minute)}
}

func mustSign(tb testing.TB, key *ecdsa.PrivateKey, e attest.Evidence) []byte {
	tb.Helper()
	env, err := attest.Sign(keySigner{key}, e)
	if err != nil {
		tb.Fatalf("Sign(%+v) = %v", e, err)
	}
	return env
}

func sign(tb testing.TB, key *ecdsa.PrivateKey, signed []byte) attest.Signature {
	tb.Helper()
	sum := sha256.Sum256(signed)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		tb.Fatal(err)
	}
	return attest.Signature{KeyID: idOf(key), Sig: base64.StdEncoding.EncodeToString(sig)}
}

// envelope writes signed verbatim (json.Marshal would compact it) with the given signatures.
func envelope(tb testing.TB, signed []byte, sigs ...attest.Signature) []byte {
	tb.Helper()
	if sigs == nil {
		sigs = []attest.Signature{}
	}
	s, err := json.Marshal(sigs)
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Appendf(nil, `{"signed":%s,"signatures":%s}`, signed, s)
}

// resigned is an envelope of signed, signed by device A's key.
func resigned(tb testing.TB, signed []byte) []byte {
	tb.Helper()
	return envelope(tb, signed, sign(tb, keyA(tb), signed))
}

func envelopeOf(tb testing.TB, env []byte) attest.Signed {
	tb.Helper()
	var s attest.Signed
	if err := json.Unmarshal(env, &s); err != nil {
		tb.Fatal(err)
	}
	return s
}

func signedOf(tb testing.TB, env []byte) []byte { tb.Helper(); return envelopeOf(tb, env).Signed }

// marshal is the canonical encoding of e, written without Validate (for invalid content).
func marshal(tb testing.TB, e attest.Evidence) []byte {
	tb.Helper()
	if e.Measurements == nil {
		e.Measurements = []attest.Measurement{}
	}
	b, err := json.Marshal(e)
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

func indent(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
