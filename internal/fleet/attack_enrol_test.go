package fleet_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/api/mgmt"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestEnrol_OnlyFullyAuthorizedEvidenceIssues is ATTACKS row 6 (step-ca CVE-2026-30836: an
// unsupported enrolment message type issued certificates): every route a device without a
// certificate can call (AuthDeviceProof), every device route (AuthDevice, called without a
// certificate), and enrolment paths moat does not have (EST, SCEP, ACME, CSR, renew), each
// sent every message: other message types, CSRs, unsigned, forged, replayed, mixed up and
// random bodies. None of them issues a certificate; only the device's fresh, genuine,
// fully authorized evidence on POST /device/attestations does, once.
func TestEnrol_OnlyFullyAuthorizedEvidenceIssues(t *testing.T) {
	t.Parallel()
	// Every nonce-bearing message is built with a fresh nonce for each send, far more than
	// a device's budget per minute: the budget is raised so that it does not decide.
	f := newFleetWith(t, testenv.WithConfig(func(c *server.Config) { c.AttestationNoncesPerMinute = 1 << 16 }))
	ctx := t.Context()
	d := f.NewDevice(true, "DW100/Production")
	other := f.NewDevice(true, "DW100/Production")
	good := []attest.Measurement{f.os.Measurement(), f.app.Measurement()}

	// Messages, built fresh for each send where they use a nonce.
	replayed := f.Evidence(d, false, good...)
	if _, err := f.Anon().Attest(ctx, f.Evidence(other, false, good...)); err != nil {
		t.Fatal(err)
	}
	csr := deviceCSR(t, d)
	messages := map[string]func() []byte{
		"empty":         func() []byte { return nil },
		"empty object":  func() []byte { return []byte(`{}`) },
		"null":          func() []byte { return []byte(`null`) },
		"array":         func() []byte { return []byte(`[{"signed":{}}]`) },
		"nonce request": func() []byte { return []byte(`{"device_id":"` + d.ID + `"}`) },
		"csr pem":       func() []byte { return csr },
		"csr json": func() []byte {
			return mustJSON(t, map[string]string{"type": "csr", "device_id": d.ID, "csr": string(csr)})
		},
		"renew":    func() []byte { return mustJSON(t, map[string]string{"type": "renew", "device_id": d.ID}) },
		"recovery": func() []byte { return mustJSON(t, map[string]string{"type": "recovery", "device_id": d.ID}) },
		"attestation type": func() []byte {
			return mustJSON(t, map[string]any{"type": "tpm2-quote", "device_id": d.ID, "quote": "AAAA"})
		},
		"est simpleenroll": func() []byte { return []byte("MIIB" + strings.Repeat("A", 200)) },
		"acme new-order": func() []byte {
			return mustJSON(t, map[string]any{"protected": "e30", "payload": "e30", "signature": "AA"})
		},
		"unsigned evidence": func() []byte {
			var env map[string]any
			_ = json.Unmarshal(f.Evidence(d, false, good...), &env)
			env["signatures"] = []any{}
			return mustJSON(t, env)
		},
		"evidence signed twice, once by another device": func() []byte {
			var env, env2 map[string]any
			_ = json.Unmarshal(f.Evidence(d, false, good...), &env)
			_ = json.Unmarshal(f.Evidence(other, false, good...), &env2)
			env["signatures"] = env2["signatures"]
			return mustJSON(t, env)
		},
		"evidence with an unknown field": func() []byte {
			var env map[string]any
			_ = json.Unmarshal(f.Evidence(d, false, good...), &env)
			env["type"] = "renew"
			return mustJSON(t, env)
		},
		"forged: another device's key": func() []byte {
			n, err := f.Anon().CreateAttestationNonce(ctx, client.NonceRequest{DeviceID: d.ID})
			if err != nil {
				t.Fatal(err)
			}
			ev, err := attest.Sign(other.Key, attest.Evidence{DeviceID: other.ID, Nonce: n.Nonce, Time: time.Now(), Measurements: good})
			if err != nil {
				t.Fatal(err)
			}
			return bytes.ReplaceAll(ev, []byte(other.ID), []byte(d.ID))
		},
		"replayed evidence": func() []byte { return replayed },
		"development mode":  func() []byte { return f.Evidence(d, true, good...) },
		"nothing measured":  func() []byte { return f.Evidence(d, false) },
	}
	rng := mrand.New(mrand.NewPCG(6, 30836)) // reproducible random bodies
	for i := range 12 {
		b := make([]byte, rng.IntN(4096))
		for j := range b {
			b[j] = byte(rng.UintN(256))
		}
		if i%2 == 1 { // random JSON-looking bodies too
			b = []byte(`{"signed":` + strings.ToValidUTF8(string(b), "") + `}`)
		}
		messages["random "+string(rune('a'+i))] = func() []byte { return b }
	}
	if _, err := f.Anon().Attest(ctx, replayed); err != nil { // its first, legitimate use
		t.Fatalf("first use of the evidence: %v", err)
	}
	before := certificates(t, f, d)

	// Every route a device may call without a certificate, every device route, and paths
	// of other enrolment protocols.
	type target struct{ method, path string }
	var targets []target
	for _, rt := range mgmt.Routes() {
		if (rt.Auth == mgmt.AuthDeviceProof || rt.Auth == mgmt.AuthDevice) && !strings.Contains(rt.Pattern, "{") {
			targets = append(targets, target{rt.Method, rt.Pattern})
		}
	}
	for _, p := range []string{"/api/v1/device/certificates", "/api/v1/device/enroll", "/api/v1/device/csr", "/api/v1/device/renew",
		"/api/v1/device/attestations/renew", "/api/v1/device/attestation", "/.well-known/est/simpleenroll", "/.well-known/est/simplereenroll",
		"/scep", "/acme/new-order", "/api/v1/device/recovery"} {
		targets = append(targets, target{"POST", p}, target{"PUT", p})
	}
	anon := f.Server.HTTPClient(t)
	anon.Timeout = 30 * time.Second
	for _, tg := range targets {
		for name, msg := range messages {
			body := msg()
			req, err := http.NewRequestWithContext(ctx, tg.method, f.Server.URL+tg.path, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			res, err := anon.Do(req)
			if err != nil {
				t.Fatalf("%s %s with %s: %v", tg.method, tg.path, name, err)
			}
			var out bytes.Buffer
			_, _ = out.ReadFrom(res.Body)
			res.Body.Close()
			// A nonce request for the nonce route is the one message answered with success.
			nonce := tg.path == "/api/v1/device/attestation/nonces" && name == "nonce request"
			if (!nonce && res.StatusCode < 400) || res.StatusCode >= 500 || bytes.Contains(out.Bytes(), []byte("CERTIFICATE")) {
				t.Errorf("%s %s with %s = %d %.200s, want a 4xx refusal and no certificate", tg.method, tg.path, name, res.StatusCode, out.Bytes())
			}
		}
	}
	if got := certificates(t, f, d); got != before {
		t.Fatalf("the device has %d certificates after the messages, %d before: one was issued", got, before)
	}

	// The fully authorized path issues, once; and the server still serves.
	is, err := f.Anon().Attest(ctx, f.Evidence(d, false, good...))
	if err != nil || !strings.Contains(is.ChainPEM, "CERTIFICATE") {
		t.Fatalf("fresh genuine evidence: %v", err)
	}
	if got := certificates(t, f, d); got != before+1 {
		t.Errorf("the device has %d certificates after its genuine attestation, want %d", got, before+1)
	}
}

// certificates counts the certificates the server issued to d.
func certificates(t *testing.T, f *fleet, d testenv.Device) int {
	t.Helper()
	cs, err := f.Admin.ListDeviceCertificates(context.Background(), f.Tenant, d.ID, client.ListOptions{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return len(cs.Items)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deviceCSR is a PKCS #10 request signed by d's identity key, naming d.
func deviceCSR(t *testing.T, d testenv.Device) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: d.ID}}, identity.CryptoSigner(d.Key))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
