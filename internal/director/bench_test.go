package director_test

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/director"
)

// BenchmarkVerify measures Verify of a two-image assignment and reports it as a ratio to a
// raw ecdsa.VerifyASN1 of the same signature, measured in the same run: the rest of Verify
// (strict decoding, canonical re-encoding, checks) is what the ratio shows above 1.
func BenchmarkVerify(b *testing.B) {
	key := directorKey(b)
	env := mustIssue(b, key, validAssignment())
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

	want := expectA()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := director.Verify(env, &key.PublicKey, want); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(baseNs, "baseline-ns/op")
	b.ReportMetric(ns/baseNs, "x-baseline")
}

// BenchmarkIssueParallel is the director's signing rate: director.Issue of a two-image
// assignment, as the server signs one per update check (internal/fleet/assignment.go),
// on every CPU at once. scripts/load.sh runs it with -benchtime Nx for the N devices of a
// load run: N divided by its assignments/s is the ideal update latency the run's p50 and
// p99 are compared with (docs/performance.md, "Load").
func BenchmarkIssueParallel(b *testing.B) {
	key := directorKey(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		a := validAssignment()
		for pb.Next() {
			a.Counter++
			if _, err := director.Issue(key, a); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "assignments/s")
}
