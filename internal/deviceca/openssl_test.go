package deviceca_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// openssl returns the path of the openssl command; without it the test skips, or fails
// when CI=true.
func openssl(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl not found: %v", err)
		}
		t.Skipf("openssl not found: %v", err)
	}
	return path
}

// TestOpenSSLVerify checks device certificates with a verifier that is not Go's:
// `openssl verify -x509_strict -purpose sslclient`, at a fixed time (-attime). A device
// certificate verifies with its own tenant CA; it does not with another tenant's CA, or
// once expired.
func TestOpenSSLVerify(t *testing.T) {
	t.Parallel()
	bin := openssl(t)
	p := newPlatform(t)
	a := p.newCA(t, tenantA, caIDA)
	b := p.newCA(t, tenantB, caIDB)
	leaf := a.issue(t, newDevice(t))

	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	root := write("root.pem", p.rootPEM)
	caA := write("ca-a.pem", a.certPEM)
	caB := write("ca-b.pem", b.certPEM)
	leafPEM := write("leaf.pem", certPEM(leaf))

	verify := func(untrusted string, at time.Time) ([]byte, error) {
		cmd := exec.CommandContext(t.Context(), bin, "verify", "-x509_strict", "-attime", strconv.FormatInt(at.Unix(), 10),
			"-CAfile", root, "-untrusted", untrusted, "-purpose", "sslclient", leafPEM)
		return cmd.CombinedOutput()
	}
	at := t0.Add(time.Hour)
	if out, err := verify(caA, at); err != nil {
		t.Errorf("openssl verify with tenant A's CA = %v\n%s", err, out)
	}
	if out, err := verify(caB, at); err == nil {
		t.Errorf("openssl verify with tenant B's CA succeeded, want failure\n%s", out)
	}
	if out, err := verify(caA, t0.Add(certValidity+time.Minute)); err == nil {
		t.Errorf("openssl verify after expiry succeeded, want failure\n%s", out)
	}
}
