package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

// TestSigningKey_GenerateAddListRevoke walks the offline-key flow: generate a key, register
// its public half, list it, refuse the private half, revoke it.
func TestSigningKey_GenerateAddListRevoke(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	u := newUser(t)
	u.login(s, s.OperatorToken)
	u.must("tenant", "create", "--name", "Contoso")
	u.must("tenant", "select", "Contoso")

	key := filepath.Join(t.TempDir(), "release.key")
	u.must("key", "generate", "--out", key, "--no-passphrase")
	k := mustJSON[client.SigningKey](u, "tenant", "signing-key", "add", "--name", "release", "--public-key", key+".pub")
	if k.Name != "release" || len(k.TUFKeyID) != 64 || k.RevokedAt != nil {
		t.Errorf("signing-key add = %+v, want release with a TUF key ID", k)
	}
	if out := u.must("key", "show", key+".pub"); !strings.Contains(out, k.TUFKeyID) {
		t.Errorf("key show does not print the key ID the server computed (%s):\n%s", k.TUFKeyID, out)
	}

	// The private key is refused, and its material is not echoed.
	r := u.want(ExitInvalid, "tenant", "signing-key", "add", "--name", "oops", "--public-key", key)
	if strings.Contains(r.stderr+r.stdout, "PRIVATE KEY") {
		t.Errorf("refusing a private key echoed it:\n%s%s", r.stdout, r.stderr)
	}
	// Registering the same key twice is a conflict.
	u.want(ExitConflict, "tenant", "signing-key", "add", "--name", "again", "--public-key", key+".pub")

	if out := u.must("tenant", "signing-key", "list"); !strings.Contains(out, k.ID) || !strings.Contains(out, "release") {
		t.Errorf("signing-key list lacks %s:\n%s", k.ID, out)
	}
	revoked := mustJSON[client.SigningKey](u, "tenant", "signing-key", "revoke", k.ID)
	if revoked.RevokedAt == nil {
		t.Errorf("signing-key revoke = %+v, want revoked_at", revoked)
	}
	u.want(ExitNotFound, "tenant", "signing-key", "revoke", "key_0000000000000000000000000000dead")
	u.want(ExitUsage, "tenant", "signing-key", "add", "--name", "x")
}
