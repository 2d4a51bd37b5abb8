package deviceca_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
)

// BenchmarkIssue measures Issue of one device certificate and reports it as a ratio to a
// raw P-256 signature (ecdsa.SignASN1 of a SHA-256 digest with the CA key), measured in
// the same run: what the ratio shows above 1 is building, encoding and self-checking the
// certificate (x509.CreateCertificate verifies the signature it made).
func BenchmarkIssue(b *testing.B) {
	p := newPlatform(b)
	ca := p.newCA(b, tenantA, caIDA)
	req := ca.request(newDevice(b))

	const baseN = 2000
	digest := sha256.Sum256([]byte("baseline"))
	start := time.Now()
	for range baseN {
		if _, err := ecdsa.SignASN1(rand.Reader, ca.key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
	baseNs := float64(time.Since(start).Nanoseconds()) / baseN

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := deviceca.Issue(ca.cert, ca.key, req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(baseNs, "baseline-ns/op")
	b.ReportMetric(ns/baseNs, "x-baseline")
}
