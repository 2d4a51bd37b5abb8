package mgmt_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

// TestAPI_SigningKeys registers, lists and revokes a tenant's offline public keys, and
// refuses anything that is not one ECDSA P-256 public key.
func TestAPI_SigningKeys(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		base := "/api/v1/tenants/" + w.a.tenant + "/signing-keys"
		pemText := newPublicKeyPEM(t)
		var k struct {
			ID        string  `json:"id"`
			TUFKeyID  string  `json:"tuf_key_id"`
			Algorithm string  `json:"algorithm"`
			RevokedAt *string `json:"revoked_at"`
		}
		w.a.admin.must(201, "POST", base, map[string]string{"name": "ci", "public_key_pem": pemText}).decode(t, &k)
		if len(k.TUFKeyID) != 64 || k.Algorithm != "ecdsa-p256" || k.RevokedAt != nil {
			t.Errorf("registered key = %+v, want a 64-hex TUF key ID, ecdsa-p256, not revoked", k)
		}
		// Readers see keys, only Administrators register or revoke them.
		w.readerA.must(200, "GET", base+"/"+k.ID, nil)
		w.readerA.must(403, "POST", base, map[string]string{"name": "r", "public_key_pem": newPublicKeyPEM(t)})
		w.contribA.must(403, "DELETE", base+"/"+k.ID, nil)

		// The same public key twice, even under another name, is a conflict.
		if p := w.a.admin.must(409, "POST", base, map[string]string{"name": "ci2", "public_key_pem": pemText}).problem(t); p.Code != "name_taken" {
			t.Errorf("duplicate key: code %q, want name_taken", p.Code)
		}

		priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		p384DER, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
		rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
		rsaDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
		privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
		for name, bad := range map[string]string{
			"private key": privPEM,
			"P-384":       string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: p384DER})),
			"RSA":         string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})),
			"garbage":     "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
			"two keys":    pemText + newPublicKeyPEM(t),
			"not PEM":     "ssh-ed25519 AAAA",
		} {
			r := w.a.admin.must(400, "POST", base, map[string]string{"name": "bad", "public_key_pem": bad})
			if p := r.problem(t); p.Code != "invalid_public_key" || p.Field != "public_key_pem" {
				t.Errorf("%s: code %q field %q, want invalid_public_key on public_key_pem", name, p.Code, p.Field)
			}
			if strings.Contains(string(r.Body), "PRIVATE") {
				t.Errorf("%s: the response echoes the key material", name)
			}
		}

		w.a.admin.must(200, "DELETE", base+"/"+k.ID, nil).decode(t, &k)
		if k.RevokedAt == nil {
			t.Error("revoked key has no revoked_at")
		}
		var l struct {
			Items []struct{ ID string } `json:"items"`
		}
		w.readerA.must(200, "GET", base, nil).decode(t, &l)
		if len(l.Items) != 2 { // the fixture's release key and the revoked ci key
			t.Errorf("listed %d keys, want 2 (revoked keys stay on record)", len(l.Items))
		}
	})
}
