package cli

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/keys"
)

// fileMode returns path's permission bits, failing the test if it cannot.
func fileMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestKey_GenerateEncryptedThenShow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	priv := filepath.Join(dir, "contoso-images.pem")
	const pass = "correct horse battery staple"

	u := newUser(t)
	u.vars[keys.EnvPassphrase] = pass
	gen := mustJSON[keyGenerated](u, "key", "generate", "--out", priv)
	pubKey, err := keys.ReadPublic(priv + ".pub")
	if err != nil {
		t.Fatalf("ReadPublic(the written .pub) = %v", err)
	}
	want := keyGenerated{KeyID: keys.KeyID(pubKey), Scheme: "ecdsa-sha2-nistp256", PrivateKeyFile: priv, PublicKeyFile: priv + ".pub", Encrypted: true}
	if gen != want {
		t.Errorf("key generate -o json = %+v, want %+v", gen, want)
	}
	if runtime.GOOS != "windows" {
		if m := fileMode(t, priv); m != 0o600 {
			t.Errorf("private key mode = %04o, want 0600", m)
		}
		if m := fileMode(t, priv+".pub"); m != 0o644 {
			t.Errorf("public key mode = %04o, want 0644", m)
		}
	}
	data, _ := os.ReadFile(priv)
	if !bytes.HasPrefix(data, []byte("-----BEGIN MOAT ENCRYPTED PRIVATE KEY-----\n")) || bytes.Contains(data, []byte(pass)) {
		t.Errorf("private key file = %q, want an encrypted key without the passphrase", data)
	}

	passFile := filepath.Join(dir, "passphrase.txt")
	wrongFile := filepath.Join(dir, "wrong.txt")
	if err := os.WriteFile(passFile, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongFile, []byte("Correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("public_needs_no_passphrase", func(t *testing.T) {
		t.Parallel()
		out := newUser(t).must("key", "show", priv+".pub")
		for _, w := range []string{gen.KeyID, "ecdsa-sha2-nistp256", "(public key)", "-----BEGIN PUBLIC KEY-----"} {
			if !strings.Contains(out, w) {
				t.Errorf("key show FILE.pub = %q, want %q in it", out, w)
			}
		}
	})
	t.Run("private_with_env", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		u.vars[keys.EnvPassphrase] = pass
		out := u.must("key", "show", priv)
		if !strings.Contains(out, gen.KeyID) || !strings.Contains(out, "private key, encrypted") {
			t.Errorf("key show FILE = %q, want the key ID and that it is an encrypted private key", out)
		}
	})
	t.Run("private_with_file_from_stdin", func(t *testing.T) {
		t.Parallel()
		r := newUser(t).runIn(pass+"\n", "key", "show", priv, "--passphrase-file", "-", "-o", "json")
		if r.code != 0 || !strings.Contains(r.stdout, `"key_id": "`+gen.KeyID+`"`) || !strings.Contains(r.stdout, `"encrypted": true`) {
			t.Errorf("key show --passphrase-file - = exit %d, %s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("private_with_file_beats_env", func(t *testing.T) {
		t.Parallel()
		u := newUser(t)
		u.vars[keys.EnvPassphrase] = "not it"
		if out := u.must("key", "show", priv, "--passphrase-file", passFile); !strings.Contains(out, gen.KeyID) {
			t.Errorf("key show --passphrase-file = %q, want the key ID", out)
		}
	})
	t.Run("private_without_passphrase", func(t *testing.T) {
		t.Parallel()
		r := newUser(t).want(ExitUsage, "key", "show", priv)
		if !strings.Contains(r.stderr, "--passphrase-file") || !strings.Contains(r.stderr, keys.EnvPassphrase) {
			t.Errorf("key show of an encrypted key without a passphrase: stderr = %q, want where a passphrase may come from", r.stderr)
		}
	})
	t.Run("private_wrong_passphrase", func(t *testing.T) {
		t.Parallel()
		r := newUser(t).want(ExitError, "key", "show", priv, "--passphrase-file", wrongFile)
		if !strings.Contains(r.stderr, "wrong passphrase") || r.stdout != "" {
			t.Errorf("key show with a wrong passphrase: stdout %q, stderr %q; want only the error", r.stdout, r.stderr)
		}
	})
}

func TestKey_GenerateNeedsPassphraseOrNoPassphrase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	priv := filepath.Join(dir, "ci.pem")
	passFile := filepath.Join(dir, "pass.txt")
	if err := os.WriteFile(passFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u := newUser(t)
	r := u.want(ExitUsage, "key", "generate", "--out", priv)
	if !strings.Contains(r.stderr, "--no-passphrase") || !strings.Contains(r.stderr, "--passphrase-file") {
		t.Errorf("key generate without a passphrase: stderr = %q, want both ways out", r.stderr)
	}
	u.want(ExitUsage, "key", "generate", "--out", priv, "--no-passphrase", "--passphrase-file", passFile)
	withEnv := newUser(t)
	withEnv.vars[keys.EnvPassphrase] = "secret"
	withEnv.want(ExitUsage, "key", "generate", "--out", priv, "--no-passphrase")
	for _, p := range []string{priv, priv + ".pub"} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a refused key generate left %s (stat: %v)", p, err)
		}
	}

	r = u.run("key", "generate", "--out", priv, "--no-passphrase")
	if r.code != 0 {
		t.Fatalf("key generate --no-passphrase = exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "not encrypted") {
		t.Errorf("key generate --no-passphrase: stderr = %q, want a warning", r.stderr)
	}
	pub, err := keys.ReadPublic(priv + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.stdout, "Key ID:") || !strings.Contains(r.stdout, keys.KeyID(pub)) {
		t.Errorf("key generate table = %q, want the key ID", r.stdout)
	}
	data, _ := os.ReadFile(priv)
	if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("unencrypted private key file = %q, want a PKCS#8 PRIVATE KEY block", data)
	}
	if runtime.GOOS != "windows" && fileMode(t, priv) != 0o600 {
		t.Errorf("unencrypted private key mode = %04o, want 0600", fileMode(t, priv))
	}
	out := u.must("key", "show", priv)
	if !strings.Contains(out, "private key, not encrypted") || !strings.Contains(out, keys.KeyID(pub)) {
		t.Errorf("key show of the unencrypted key = %q", out)
	}
}

// TestKey_GenerateNeverOverwrites: an existing private or public key file stops key generate
// before anything is written.
func TestKey_GenerateNeverOverwrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	u := newUser(t)
	priv := filepath.Join(dir, "root.pem")
	u.must("key", "generate", "--out", priv, "--no-passphrase")
	before, _ := os.ReadFile(priv)
	beforePub, _ := os.ReadFile(priv + ".pub")
	r := u.want(ExitError, "key", "generate", "--out", priv, "--no-passphrase")
	if !strings.Contains(r.stderr, "never overwritten") {
		t.Errorf("key generate over a key: stderr = %q, want it to say it never overwrites", r.stderr)
	}
	if after, _ := os.ReadFile(priv); !bytes.Equal(before, after) {
		t.Error("key generate over a key changed the private key")
	}
	if after, _ := os.ReadFile(priv + ".pub"); !bytes.Equal(beforePub, after) {
		t.Error("key generate over a key changed the public key")
	}

	// Only the .pub is there: still nothing is written.
	other := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(other+".pub", []byte("someone's key"), 0o644); err != nil {
		t.Fatal(err)
	}
	u.want(ExitError, "key", "generate", "--out", other, "--no-passphrase")
	if _, err := os.Lstat(other); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("key generate with an existing FILE.pub wrote FILE (stat: %v)", err)
	}
	if b, _ := os.ReadFile(other + ".pub"); string(b) != "someone's key" {
		t.Errorf("key generate changed an existing FILE.pub to %q", b)
	}
}

func TestKey_ShowRefusesExposedPrivateKey(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no Unix mode bits")
	}
	u := newUser(t)
	priv := filepath.Join(t.TempDir(), "k.pem")
	u.must("key", "generate", "--out", priv, "--no-passphrase")
	if err := os.Chmod(priv, 0o644); err != nil {
		t.Fatal(err)
	}
	r := u.want(ExitError, "key", "show", priv)
	if !strings.Contains(r.stderr, "chmod 600 "+priv) || r.stdout != "" {
		t.Errorf("key show of a world-readable key: stdout %q, stderr %q; want the chmod to run", r.stdout, r.stderr)
	}
}

func TestKey_BadInvocations(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	empty := filepath.Join(dir, "empty.txt")
	for p, content := range map[string]string{garbage: "not a key\n", empty: "\n"} {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	u := newUser(t)
	for _, tt := range []struct {
		code int
		args []string
	}{
		{ExitUsage, []string{"key", "generate"}},
		{ExitUsage, []string{"key", "generate", "--out", filepath.Join(dir, "a.pem"), "extra", "--no-passphrase"}},
		{ExitUsage, []string{"key", "generate", "--out", filepath.Join(dir, "a.pem"), "--passphrase", "secret"}},
		{ExitUsage, []string{"key", "show"}},
		{ExitUsage, []string{"key", "show", "a", "b"}},
		{ExitUsage, []string{"key", "frobnicate"}},
		{ExitError, []string{"key", "show", filepath.Join(dir, "missing.pem")}},
		{ExitError, []string{"key", "show", garbage}},
		{ExitError, []string{"key", "generate", "--out", filepath.Join(dir, "b.pem"), "--passphrase-file", empty}},
		{ExitError, []string{"key", "generate", "--out", filepath.Join(dir, "c.pem"), "--passphrase-file", filepath.Join(dir, "missing.txt")}},
	} {
		r := u.want(tt.code, tt.args...)
		if strings.Contains(r.stderr, "not logged in") {
			t.Errorf("moat %s: stderr = %q; key commands work offline", strings.Join(tt.args, " "), r.stderr)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("refused key commands left files: %v", ents)
	}
}
