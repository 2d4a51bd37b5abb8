package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the seed corpora in testdata/fuzz")

// fuzzPassphrase and fuzzLimits keep each FuzzDecodePrivatePEM run fast: scrypt with N·r at
// most 1024 costs 128 KiB and well under a millisecond.
var (
	fuzzPassphrase = []byte("fuzz")
	fuzzLimits     = kdfLimits{maxNR: 1 << 10, maxNRP: 1 << 11, maxR: 8, maxP: 2}
	fuzzKDF        = kdfParams{N: 1 << 7, R: 8, P: 1}
)

// FuzzParsePublicPEM: no panic; every error is classified; a parsed key re-encodes to a
// form that parses to the same key and re-encodes the same, with the same KeyID.
func FuzzParsePublicPEM(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := ParsePublicPEM(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedKey) {
				t.Fatalf("ParsePublicPEM error %v is neither ErrMalformed nor ErrUnsupportedKey", err)
			}
			return
		}
		enc, err := EncodePublicPEM(pub)
		if err != nil {
			t.Fatalf("EncodePublicPEM(parsed key) = %v", err)
		}
		again, err := ParsePublicPEM(enc)
		if err != nil || !again.Equal(pub) {
			t.Fatalf("ParsePublicPEM(EncodePublicPEM(k)) = %v, %v; want k", again, err)
		}
		if enc2, _ := EncodePublicPEM(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable:\n%s\n%s", enc, enc2)
		}
		if KeyID(pub) != KeyID(again) {
			t.Fatal("KeyID changed across a round trip")
		}
	})
}

// FuzzDecodePrivatePEM: no panic, bounded work (fuzzLimits); every error is classified; a
// decoded key is P-256 and round-trips unencrypted and encrypted.
func FuzzDecodePrivatePEM(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		key, _, err := decodePrivatePEM(data, func() ([]byte, error) { return fuzzPassphrase, nil }, fuzzLimits)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedKey) && !errors.Is(err, ErrWrongPassphrase) {
				t.Fatalf("decodePrivatePEM error %v is not classified", err)
			}
			return
		}
		if key.Curve != elliptic.P256() {
			t.Fatalf("decodePrivatePEM returned a %s key", curveName(key.Curve))
		}
		for _, pass := range [][]byte{nil, fuzzPassphrase} {
			enc, err := encodePrivatePEM(key, pass, fuzzKDF)
			if err != nil {
				t.Fatalf("encodePrivatePEM(decoded key) = %v", err)
			}
			again, _, err := decodePrivatePEM(enc, func() ([]byte, error) { return fuzzPassphrase, nil }, fuzzLimits)
			if err != nil || !again.Equal(key) {
				t.Fatalf("decodePrivatePEM(encodePrivatePEM(k)) = %v, %v; want k", again, err)
			}
		}
	})
}

// seedCorpora are the seed inputs of the fuzz targets, by file name. Names starting with
// "valid" must decode; the others must be refused.
func seedCorpora(t *testing.T) map[string]map[string][]byte {
	key := newKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p8 := func(k any) []byte { return must(x509.MarshalPKCS8PrivateKey(k)) }
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	pub := must(EncodePublicPEM(&key.PublicKey))
	plain := must(encodePrivatePEM(key, nil, fuzzKDF))
	return map[string]map[string][]byte{
		"FuzzParsePublicPEM": {
			"valid_p256":     pub,
			"valid_crlf":     bytes.ReplaceAll(pub, []byte("\n"), []byte("\r\n")),
			"rsa":            block("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&rsaKey.PublicKey))),
			"ed25519":        block("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(edPub))),
			"p384":           block("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&p384.PublicKey))),
			"private":        plain,
			"two_blocks":     append(bytes.Clone(pub), pub...),
			"headers":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"A": "b"}, Bytes: must(x509.MarshalPKIXPublicKey(&key.PublicKey))}),
			"truncated":      pub[:len(pub)/2],
			"not_pem":        []byte("ecdsa-sha2-nistp256 AAAA"),
			"empty_block":    []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"),
			"trailing_bytes": block("PUBLIC KEY", append(must(x509.MarshalPKIXPublicKey(&key.PublicKey)), 0)),
		},
		"FuzzDecodePrivatePEM": {
			"valid_plain":        plain,
			"valid_encrypted":    must(encodePrivatePEM(key, fuzzPassphrase, fuzzKDF)),
			"encrypted_defaults": must(encodePrivatePEM(key, fuzzPassphrase, kdfParams{N: 1 << 17, R: 8, P: 1})), // over fuzzLimits: refused
			"wrong_passphrase":   must(encodePrivatePEM(key, []byte("other"), fuzzKDF)),
			"encrypted_rsa":      must(sealDER(p8(rsaKey), fuzzPassphrase, fuzzKDF)),
			"rsa":                block("PRIVATE KEY", p8(rsaKey)),
			"ed25519":            block("PRIVATE KEY", p8(edKey)),
			"p384":               block("PRIVATE KEY", p8(p384)),
			"sec1":               block("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(key))),
			"public":             pub,
			"truncated":          plain[:len(plain)-30],
			"empty":              {},
		},
	}
}

// TestFuzzSeeds checks that the committed seed corpora still mean what their names say;
// with -update it writes them anew.
func TestFuzzSeeds(t *testing.T) {
	t.Parallel()
	if *update {
		for target, seeds := range seedCorpora(t) {
			dir := filepath.Join("testdata", "fuzz", target)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, data := range seeds {
				content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	decoders := map[string]func([]byte) error{
		"FuzzParsePublicPEM": func(b []byte) error { _, err := ParsePublicPEM(b); return err },
		"FuzzDecodePrivatePEM": func(b []byte) error {
			_, _, err := decodePrivatePEM(b, func() ([]byte, error) { return fuzzPassphrase, nil }, fuzzLimits)
			return err
		},
	}
	for target, decode := range decoders {
		dir := filepath.Join("testdata", "fuzz", target)
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) < 5 {
			t.Fatalf("seed corpus %s: %d files, %v; want several (run with -update)", dir, len(ents), err)
		}
		for _, e := range ents {
			raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			lit, ok := strings.CutPrefix(strings.TrimSpace(string(raw)), "go test fuzz v1\n[]byte(")
			lit, ok2 := strings.CutSuffix(lit, ")")
			s, err := strconv.Unquote(lit)
			if !ok || !ok2 || err != nil {
				t.Errorf("%s/%s: not a []byte seed: %v", dir, e.Name(), err)
				continue
			}
			err = decode([]byte(s))
			if valid := strings.HasPrefix(e.Name(), "valid"); valid != (err == nil) {
				t.Errorf("%s/%s decodes with error %v; its name says valid = %v", dir, e.Name(), err, valid)
			}
		}
	}
}
