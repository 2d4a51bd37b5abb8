package attest_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/attest"
)

// BenchmarkVerify measures Verify of two-measurement evidence and reports it as a ratio to
// a raw ecdsa.VerifyASN1 of the same signature, measured in the same run: the rest of
// Verify (strict decoding, canonical re-encoding, checks) is what the ratio shows above 1.
func BenchmarkVerify(b *testing.B) {
	key := keyA(b)
	env := mustSign(b, key, validEvidence(b))
	s := envelopeOf(b, env)
	sig, err := base64.StdEncoding.DecodeString(s.Signatures[0].Sig)
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(s.Signed)

	const baseN = 2000
	start := time.Now()
	for range baseN {
		if !ecdsa.VerifyASN1(&key.PublicKey, sum[:], sig) {
			b.Fatal("baseline signature does not verify")
		}
	}
	baseNs := float64(time.Since(start).Nanoseconds()) / baseN

	want := expectA(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := attest.Verify(env, &key.PublicKey, want); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(baseNs, "baseline-ns/op")
	b.ReportMetric(ns/baseNs, "x-baseline")
}
