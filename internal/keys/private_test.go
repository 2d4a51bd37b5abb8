package keys

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// testKDF keeps tests fast: 1/128 of the default work. One test uses the defaults.
var testKDF = kdfParams{N: 1 << 10, R: 8, P: 1}

// passphraseFunc returns a passphrase source that counts its calls.
func passphraseFunc(p string, calls *int) func() ([]byte, error) {
	return func() ([]byte, error) {
		*calls++
		return []byte(p), nil
	}
}

// noPassphrase fails the test when a passphrase is asked for.
func noPassphrase(t *testing.T) func() ([]byte, error) {
	return func() ([]byte, error) {
		t.Error("passphrase asked for; want the file refused before")
		return []byte("x"), nil
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestGenerate_IsP256(t *testing.T) {
	t.Parallel()
	a, b := newKey(t), newKey(t)
	if a.Curve != elliptic.P256() {
		t.Errorf("Generate() curve = %s, want P-256", curveName(a.Curve))
	}
	if a.Equal(b) {
		t.Error("Generate() returned the same key twice")
	}
}

func TestPrivate_RoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		passphrase []byte
		kdf        kdfParams
		wantType   string
		wantCalls  int
	}{
		{"unencrypted", nil, defaultKDF, "PRIVATE KEY", 0},
		{"encrypted_test_params", []byte("correct horse battery staple"), testKDF, "MOAT ENCRYPTED PRIVATE KEY", 1},
		// The real parameters, once: what WritePrivate writes, ReadPrivate reads.
		{"encrypted_defaults", []byte("pässphrase with spaces "), defaultKDF, "MOAT ENCRYPTED PRIVATE KEY", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := newKey(t)
			path := filepath.Join(t.TempDir(), "key.pem")
			var err error
			if tt.kdf.N == defaultKDF.N {
				err = WritePrivate(path, key, tt.passphrase)
			} else {
				err = writePrivate(path, key, tt.passphrase, tt.kdf)
			}
			if err != nil {
				t.Fatalf("WritePrivate = %v", err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
				t.Errorf("private key mode = %04o, want 0600", st.Mode().Perm())
			}
			data, _ := os.ReadFile(path)
			if b, _ := pem.Decode(data); b == nil || b.Type != tt.wantType {
				t.Fatalf("private key file = %q, want a %s block", data, tt.wantType)
			}
			if tt.passphrase != nil && bytes.Contains(data, tt.passphrase) {
				t.Error("encrypted key file contains the passphrase")
			}
			if tt.kdf.N == defaultKDF.N && tt.passphrase != nil && !bytes.Contains(data, []byte("KDF-N: 131072")) {
				t.Errorf("encrypted key file does not record N = 2^17:\n%s", data)
			}

			calls := 0
			got, err := ReadPrivate(path, passphraseFunc(string(tt.passphrase), &calls))
			if err != nil {
				t.Fatalf("ReadPrivate = %v", err)
			}
			if !got.Equal(key) {
				t.Error("ReadPrivate returned another key than was written")
			}
			if calls != tt.wantCalls {
				t.Errorf("ReadPrivate asked for the passphrase %d times, want %d", calls, tt.wantCalls)
			}
			info, err := Inspect(path, passphraseFunc(string(tt.passphrase), &calls))
			if err != nil || !info.Private || info.Encrypted != (tt.passphrase != nil) || !info.Public.Equal(&key.PublicKey) {
				t.Errorf("Inspect = %+v, %v; want the private key, encrypted %v", info, err, tt.passphrase != nil)
			}
		})
	}
}

func TestWritePrivate_RefusesEmptyPassphrase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := WritePrivate(path, newKey(t), []byte{}); err == nil {
		t.Fatal("WritePrivate with an empty non-nil passphrase = nil, want an error")
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WritePrivate with an empty passphrase left a file (stat: %v)", err)
	}
}

func TestReadPrivate_Passphrase(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := writePrivate(path, key, []byte("right"), testKDF); err != nil {
		t.Fatal(err)
	}
	errSource := errors.New("terminal gone")
	tests := []struct {
		name       string
		passphrase func() ([]byte, error)
		want       error
	}{
		{"wrong", func() ([]byte, error) { return []byte("wrong"), nil }, ErrWrongPassphrase},
		{"prefix", func() ([]byte, error) { return []byte("righ"), nil }, ErrWrongPassphrase},
		{"trailing_newline", func() ([]byte, error) { return []byte("right\n"), nil }, ErrWrongPassphrase},
		{"nil_source", nil, ErrNoPassphrase},
		{"empty", func() ([]byte, error) { return nil, nil }, ErrNoPassphrase},
		{"source_fails", func() ([]byte, error) { return nil, errSource }, errSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ReadPrivate(path, tt.passphrase)
			if !errors.Is(err, tt.want) || got != nil {
				t.Errorf("ReadPrivate = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// mutate re-encodes the one PEM block of data after change.
func mutate(t *testing.T, data []byte, change func(b *pem.Block)) []byte {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	h := map[string]string{}
	for k, v := range b.Headers {
		h[k] = v
	}
	b.Headers = h
	b.Bytes = bytes.Clone(b.Bytes)
	change(b)
	return pem.EncodeToMemory(b)
}

func otherBase64(t *testing.T, s string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	raw[0] ^= 1
	return base64.StdEncoding.EncodeToString(raw)
}

// TestReadPrivate_RejectsTampering changes each part of an encrypted key file; each change
// is refused, never yields a key.
func TestReadPrivate_RejectsTampering(t *testing.T) {
	t.Parallel()
	const pass = "right"
	orig, err := encodePrivatePEM(newKey(t), []byte(pass), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	set := func(k, v string) func(b *pem.Block) { return func(b *pem.Block) { b.Headers[k] = v } }
	flip := func(k string) func(b *pem.Block) {
		return func(b *pem.Block) { b.Headers[k] = otherBase64(t, b.Headers[k]) }
	}
	body := func(f func([]byte) []byte) func(b *pem.Block) { return func(b *pem.Block) { b.Bytes = f(b.Bytes) } }
	tests := []struct {
		name   string
		change func(b *pem.Block) // of the PEM block; else data is the file
		data   []byte
		want   error
		called bool // the passphrase is asked for: the headers were well-formed
	}{
		{name: "ciphertext_bit", change: body(func(c []byte) []byte { c[0] ^= 1; return c }), want: ErrWrongPassphrase, called: true},
		{name: "tag_bit", change: body(func(c []byte) []byte { c[len(c)-1] ^= 0x80; return c }), want: ErrWrongPassphrase, called: true},
		{name: "ciphertext_truncated", change: body(func(c []byte) []byte { return c[:len(c)-1] }), want: ErrWrongPassphrase, called: true},
		{name: "ciphertext_extended", change: body(func(c []byte) []byte { return append(c, 0) }), want: ErrWrongPassphrase, called: true},
		{name: "ciphertext_shorter_than_tag", change: body(func(c []byte) []byte { return c[:15] }), want: ErrMalformed},
		{name: "salt", change: flip(hdrSalt), want: ErrWrongPassphrase, called: true},
		{name: "nonce", change: flip(hdrNonce), want: ErrWrongPassphrase, called: true},
		{name: "n_lowered", change: set(hdrN, "512"), want: ErrWrongPassphrase, called: true},
		{name: "n_raised", change: set(hdrN, "2048"), want: ErrWrongPassphrase, called: true},
		{name: "r", change: set(hdrR, "4"), want: ErrWrongPassphrase, called: true},
		{name: "p", change: set(hdrP, "2"), want: ErrWrongPassphrase, called: true},
		{name: "n_leading_zero", change: set(hdrN, "01024"), want: ErrMalformed},
		{name: "n_signed", change: set(hdrN, "+1024"), want: ErrMalformed},
		{name: "n_not_power_of_two", change: set(hdrN, "1000"), want: ErrMalformed},
		{name: "salt_short", change: set(hdrSalt, "AAAAAAAAAAAAAAAAAAAA"), want: ErrMalformed},
		{name: "salt_unpadded", change: func(b *pem.Block) { b.Headers[hdrSalt] = strings.TrimRight(b.Headers[hdrSalt], "=") }, want: ErrMalformed},
		{name: "nonce_long", change: set(hdrNonce, "AAAAAAAAAAAAAAAAAAAAAAAA"), want: ErrMalformed},
		{name: "version", change: set(hdrVersion, "2"), want: ErrMalformed},
		{name: "kdf", change: set(hdrKDF, "argon2id"), want: ErrMalformed},
		{name: "cipher", change: set(hdrCipher, "AES-128-GCM"), want: ErrMalformed},
		{name: "header_missing", change: func(b *pem.Block) { delete(b.Headers, hdrP) }, want: ErrMalformed},
		{name: "header_added", change: set("Comment", "hi"), want: ErrMalformed},
		{name: "type_plain", change: func(b *pem.Block) { b.Type = pemPrivate }, want: ErrMalformed},
		{name: "type_other", change: func(b *pem.Block) { b.Type = "MOAT PRIVATE KEY" }, want: ErrMalformed},
		{name: "text_before", data: append([]byte("note\n"), orig...), want: ErrMalformed},
		{name: "text_after", data: append(bytes.Clone(orig), "note\n"...), want: ErrMalformed},
		{name: "second_block", data: append(bytes.Clone(orig), orig...), want: ErrMalformed},
		{name: "truncated_file", data: orig[:len(orig)/2], want: ErrMalformed},
		{name: "empty_file", data: []byte{}, want: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "key.pem")
			data := tt.data
			if tt.change != nil {
				data = mutate(t, orig, tt.change)
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			calls := 0
			got, err := ReadPrivate(path, passphraseFunc(pass, &calls))
			if !errors.Is(err, tt.want) || got != nil {
				t.Errorf("ReadPrivate(%s) = %v, %v; want %v", tt.name, got, err, tt.want)
			}
			if called := calls > 0; called != tt.called {
				t.Errorf("ReadPrivate(%s) asked for the passphrase: %v, want %v", tt.name, called, tt.called)
			}
		})
	}
}

// TestReadPrivate_RejectsHostileKDFParams gives parameters that would make scrypt allocate
// gigabytes or run for minutes: each is refused before the passphrase is asked for and
// without allocating more than a little. Not parallel, so that the allocation count is ours.
func TestReadPrivate_RejectsHostileKDFParams(t *testing.T) {
	orig, err := encodePrivatePEM(newKey(t), []byte("x"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ n, r, p string }{
		{"1073741824", "8", "1"}, // 128 GiB
		{"1048576", "8", "1"},    // 1 GiB
		{"524288", "8", "1"},     // 512 MiB: twice the memory bound
		{"131072", "8", "8"},     // the default memory, 8 times its work
		{"131072", "32", "1"},    // 512 MiB
		{"2", "1073741823", "1"},
		{"2", "1", "1073741823"},
		{"1024", "33", "1"},
		{"1024", "8", "17"},
		{"2147483648", "8", "1"}, // 2^31: not even a number we read
		{"18446744073709551616", "1", "1"},
		{"0", "8", "1"},
		{"1", "8", "1"},
		{"1024", "0", "1"},
		{"1024", "8", "0"},
		{"-1024", "8", "1"},
	}
	for _, tt := range tests {
		data := mutate(t, orig, func(b *pem.Block) {
			b.Headers[hdrN], b.Headers[hdrR], b.Headers[hdrP] = tt.n, tt.r, tt.p
		})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		key, _, err := decodePrivatePEM(data, noPassphrase(t), readLimits)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrMalformed) || key != nil {
			t.Errorf("decodePrivatePEM(N=%s r=%s p=%s) = %v, %v; want ErrMalformed", tt.n, tt.r, tt.p, key, err)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Errorf("decodePrivatePEM(N=%s r=%s p=%s) allocated %d bytes, want under 1 MiB", tt.n, tt.r, tt.p, d)
		}
	}
	// The bounds leave room to raise the defaults.
	for _, kp := range []kdfParams{defaultKDF, {N: 1 << 18, R: 8, P: 1}, {N: 1 << 17, R: 8, P: 4}} {
		kp.Salt = make([]byte, saltLen)
		if err := readLimits.check(kp); err != nil {
			t.Errorf("readLimits.check(N=%d r=%d p=%d) = %v, want nil", kp.N, kp.R, kp.P, err)
		}
	}
}

func TestReadPrivate_RefusesExposedFile(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no Unix mode bits")
	}
	for _, mode := range []fs.FileMode{0o640, 0o604, 0o644, 0o660, 0o601, 0o666} {
		path := filepath.Join(t.TempDir(), "key.pem")
		if err := writePrivate(path, newKey(t), []byte("x"), testKDF); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		key, err := ReadPrivate(path, noPassphrase(t))
		if !errors.Is(err, ErrExposed) || key != nil {
			t.Errorf("ReadPrivate(mode %04o) = %v, %v; want ErrExposed", mode, key, err)
		} else if !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("ReadPrivate(mode %04o) = %q, want it to say to run chmod 600", mode, err)
		}
		if _, err := Inspect(path, noPassphrase(t)); !errors.Is(err, ErrExposed) {
			t.Errorf("Inspect(mode %04o) = %v, want ErrExposed", mode, err)
		}
	}
	// Owner-only modes narrower than 0600 are fine.
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := writePrivate(path, newKey(t), nil, testKDF); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivate(path, nil); err != nil {
		t.Errorf("ReadPrivate(mode 0400) = %v, want nil", err)
	}
	if _, err := ReadPrivate(t.TempDir(), nil); err == nil {
		t.Error("ReadPrivate(a directory) = nil, want an error")
	}
}

// TestWrite_NeverOverwrites puts a file, a dangling symlink and a directory where a key is to
// be written: each write fails with fs.ErrExist and leaves what was there.
func TestWrite_NeverOverwrites(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	writers := map[string]func(path string) error{
		"private_plain":     func(p string) error { return WritePrivate(p, key, nil) },
		"private_encrypted": func(p string) error { return writePrivate(p, key, []byte("x"), testKDF) },
		"public":            func(p string) error { return WritePublic(p, &key.PublicKey) },
	}
	for name, write := range writers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			file := filepath.Join(dir, "file")
			if err := os.WriteFile(file, []byte("old key"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := write(file); !errors.Is(err, fs.ErrExist) {
				t.Errorf("write over a file = %v, want fs.ErrExist", err)
			}
			if b, _ := os.ReadFile(file); string(b) != "old key" {
				t.Errorf("write over a file changed it to %q", b)
			}
			link := filepath.Join(dir, "link")
			if runtime.GOOS != "windows" {
				if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
					t.Fatal(err)
				}
				if err := write(link); !errors.Is(err, fs.ErrExist) {
					t.Errorf("write to a dangling symlink = %v, want fs.ErrExist", err)
				}
				if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
					t.Error("write to a dangling symlink created its target")
				}
			}
			if err := write(dir); !errors.Is(err, fs.ErrExist) {
				t.Errorf("write over a directory = %v, want fs.ErrExist", err)
			}
			// A fresh path works, and nothing but what we made is left in the directory.
			if err := write(filepath.Join(dir, "new")); err != nil {
				t.Fatalf("write to a new path = %v", err)
			}
			ents, _ := os.ReadDir(dir)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			want := "file link new"
			if runtime.GOOS == "windows" {
				want = "file new"
			}
			if strings.Join(names, " ") != want {
				t.Errorf("directory holds %q, want %q (no temporary files)", names, want)
			}
		})
	}
}

func TestWrite_MissingDirectoryLeavesNothing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "no", "such", "key.pem")
	if err := WritePrivate(path, newKey(t), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("WritePrivate into a missing directory = %v, want fs.ErrNotExist", err)
	}
}

// foreignPKCS8 returns PKCS#8 DER of keys moat does not use.
func foreignPKCS8(t *testing.T) map[string][]byte {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for name, k := range map[string]any{"rsa": rsaKey, "ed25519": edKey, "p384": p384, "x25519": x25519} {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = der
	}
	return out
}

func TestReadPrivate_RejectsOtherKeyTypes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, der := range foreignPKCS8(t) {
		for _, encrypted := range []bool{false, true} {
			data := pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der})
			if encrypted {
				var err error
				if data, err = sealDER(der, []byte("x"), testKDF); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, name+map[bool]string{false: ".pem", true: ".enc.pem"}[encrypted])
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			calls := 0
			if key, err := ReadPrivate(path, passphraseFunc("x", &calls)); !errors.Is(err, ErrUnsupportedKey) || key != nil {
				t.Errorf("ReadPrivate(%s) = %v, %v; want ErrUnsupportedKey", path, key, err)
			}
		}
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err := WritePrivate(filepath.Join(dir, "p384-new.pem"), p384, nil); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("WritePrivate(P-384) = %v, want ErrUnsupportedKey", err)
	}
	if _, err := Signer(p384); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("Signer(P-384) = %v, want ErrUnsupportedKey", err)
	}
	if _, err := Signer(nil); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("Signer(nil) = %v, want ErrUnsupportedKey", err)
	}

	// Other PEM types: named, never guessed at.
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	sec1, _ := x509.MarshalECPrivateKey(newKey(t))
	for _, tt := range []struct {
		block *pem.Block
		want  error
	}{
		{&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}, ErrUnsupportedKey},
		{&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: []byte("openssh-key-v1")}, ErrUnsupportedKey},
		{&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}, ErrMalformed},
		{&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{0x30, 0}}, ErrMalformed},
		{&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}, ErrMalformed},
		{&pem.Block{Type: pemPrivate, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: sec1}, ErrMalformed},
		{&pem.Block{Type: pemPrivate, Bytes: append(mustPKCS8(t, newKey(t)), 0)}, ErrMalformed},
		{&pem.Block{Type: pemPrivate, Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x00}}, ErrMalformed},
	} {
		if key, _, err := decodePrivatePEM(pem.EncodeToMemory(tt.block), noPassphrase(t), readLimits); !errors.Is(err, tt.want) || key != nil {
			t.Errorf("decodePrivatePEM(%s) = %v, %v; want %v", tt.block.Type, key, err, tt.want)
		}
	}
}

func mustPKCS8(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestAdditionalData_IsDocumented keeps docs/keys.md's description of the authenticated
// header lines true, byte for byte.
func TestAdditionalData_IsDocumented(t *testing.T) {
	t.Parallel()
	kp := defaultKDF
	kp.Salt = []byte("0123456789abcdef")
	got := string(additionalData(kp))
	doc, err := os.ReadFile("../../docs/keys.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), got) {
		t.Errorf("docs/keys.md does not show the additional data for salt %q:\n%s", kp.Salt, got)
	}
}

// TestDocumentedExample_Decrypts decrypts the example key in docs/keys.md with its
// documented passphrase and checks its documented key ID, so the format description and
// the code cannot drift apart.
func TestDocumentedExample_Decrypts(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/keys.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "-----BEGIN MOAT ENCRYPTED PRIVATE KEY-----", "-----END MOAT ENCRYPTED PRIVATE KEY-----\n"
	i, j := bytes.Index(doc, []byte(begin)), bytes.Index(doc, []byte(end))
	if i < 0 || j < i {
		t.Fatal("docs/keys.md has no example encrypted key")
	}
	calls := 0
	key, enc, err := decodePrivatePEM(doc[i:j+len(end)], passphraseFunc("correct horse battery staple", &calls), readLimits)
	if err != nil || !enc {
		t.Fatalf("decoding the example of docs/keys.md = %v, encrypted %v", err, enc)
	}
	id := KeyID(&key.PublicKey)
	if !bytes.Contains(doc, []byte("its key ID is\n`"+id+"`")) {
		t.Errorf("docs/keys.md does not give the example's key ID %s", id)
	}
}
