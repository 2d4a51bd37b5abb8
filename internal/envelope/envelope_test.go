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
