package envelope_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"

	"github.com/moat-iot/moat/internal/envelope"
)

type doc struct {
	A string `json:"a"`
	B int    `json:"b"`
}

func TestOpen_RoundTripAndRefusals(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	body, _ := json.Marshal(doc{A: "x", B: 1})
	data, err := envelope.Seal(&key.PublicKey, body, func(d []byte) ([]byte, error) { return ecdsa.SignASN1(rand.Reader, key, d) })
	if err != nil {
		t.Fatal(err)
	}
	var got doc
	canon := func() ([]byte, error) { return json.Marshal(got) }
	if err := envelope.Open(data, &key.PublicKey, 1024, &got, canon); err != nil || got != (doc{A: "x", B: 1}) {
		t.Fatalf("Open = %+v, %v", got, err)
	}
	cases := []struct {
		name string
		data []byte
		pub  *ecdsa.PublicKey
		max  int
		want error
	}{
		{"other key", data, &other.PublicKey, 1024, envelope.ErrSignature},
		{"too large", data, &key.PublicKey, len(data) - 1, envelope.ErrTooLarge},
		{"trailing newline", append(append([]byte{}, data...), '\n'), &key.PublicKey, 1024, envelope.ErrNotCanonical},
		{"not JSON", []byte("{"), &key.PublicKey, 1024, envelope.ErrMalformed},
	}
	for _, c := range cases {
		var d doc
		err := envelope.Open(c.data, c.pub, c.max, &d, func() ([]byte, error) { return json.Marshal(d) })
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Open = %v, want %v", c.name, err, c.want)
		}
	}
}

// TestOpenKey_SameAsOpen: a Key opens what its public key opens and refuses what it refuses
// (another signer's envelope); the zero Key and a key that is not P-256 open nothing.
func TestOpenKey_SameAsOpen(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	body, _ := json.Marshal(doc{A: "x", B: 1})
	data, err := envelope.Seal(&key.PublicKey, body, func(d []byte) ([]byte, error) { return ecdsa.SignASN1(rand.Reader, key, d) })
	if err != nil {
		t.Fatal(err)
	}
	k, err := envelope.NewKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := envelope.KeyID(&key.PublicKey); k.ID() != id || !k.Public().Equal(&key.PublicKey) {
		t.Errorf("NewKey = %s, want ID %s and the key", k.ID(), id)
	}
	var got doc
	if err := envelope.OpenKey(data, k, 1024, &got, func() ([]byte, error) { return json.Marshal(got) }); err != nil || got != (doc{A: "x", B: 1}) {
		t.Fatalf("OpenKey = %+v, %v", got, err)
	}
	ko, _ := envelope.NewKey(&other.PublicKey)
	var d doc
	if err := envelope.OpenKey(data, ko, 1024, &d, func() ([]byte, error) { return json.Marshal(d) }); !errors.Is(err, envelope.ErrSignature) {
		t.Errorf("OpenKey(other key) = %v, want ErrSignature", err)
	}
	if err := envelope.OpenKey(data, envelope.Key{}, 1024, &d, func() ([]byte, error) { return json.Marshal(d) }); err == nil {
		t.Error("OpenKey(zero Key) = nil, want an error")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := envelope.NewKey(&p384.PublicKey); err == nil {
		t.Error("NewKey(P-384) = nil error, want one")
	}
}
