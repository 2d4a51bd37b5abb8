package cli

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/testenv"
)

type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// TestPlatform_InitAndTargetsSign walks the offline root of trust: the operator creates the
// platform keys and the first root, Contoso registers a key, the operator delegates
// Contoso's apps to it, and a go-tuf client pinned to the written 1.root.json verifies
// Contoso's view through the API.
func TestPlatform_InitAndTargetsSign(t *testing.T) {
	t.Parallel()
	s := testenv.StartServer(t)
	op := newUser(t)
	op.login(s, s.OperatorToken)
	op.must("tenant", "create", "--name", "Contoso")
	mc := mustJSON[client.MemberCreated](op, "member", "create", "--tenant", "Contoso", "--name", "contoso-admin", "--role", "Administrator")
	contoso := newUser(t)
	contoso.login(s, mc.Secret)

	keyDir := filepath.Join(t.TempDir(), "platform")
	// A tenant administrator is not a platform operator.
	contoso.want(ExitForbidden, "platform", "init", "--out", filepath.Join(t.TempDir(), "x"), "--no-passphrase")
	op.want(ExitUsage, "platform", "init", "--out", keyDir)
	out := op.must("platform", "init", "--out", keyDir, "--no-passphrase")
	if !strings.Contains(out, "Trust anchor") {
		t.Errorf("platform init output lacks the trust anchor:\n%s", out)
	}
	for _, f := range []string{"root.key", "os.key"} {
		if st, err := os.Stat(filepath.Join(keyDir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", f, st, err)
		}
	}
	op.want(ExitError, "platform", "init", "--out", keyDir, "--no-passphrase") // never overwrites

	// No key registered yet: nothing to delegate to.
	op.want(ExitConflict, "platform", "targets-sign", "--tenant", "Contoso", "--keys", keyDir)
	key := filepath.Join(t.TempDir(), "release.key")
	contoso.must("key", "generate", "--out", key, "--no-passphrase")
	k := mustJSON[client.SigningKey](contoso, "tenant", "signing-key", "add", "--name", "release", "--public-key", key+".pub")
	out = op.must("platform", "targets-sign", "--tenant", "Contoso", "--keys", keyDir)
	if !strings.Contains(out, k.TUFKeyID) {
		t.Errorf("targets-sign does not show the delegated key %s:\n%s", k.TUFKeyID, out)
	}
	op.must("platform", "targets-sign", "--tenant", "Contoso", "--keys", keyDir) // version 2

	// Contoso publishes the DW100 app: package, verify, upload, sign offline, publish.
	contoso.must("product", "create", "--name", "DW100")
	img := filepath.Join(t.TempDir(), "dw100-app.img")
	contoso.must("image", "package", "../../examples/dw100/app", "--out", img)
	added := mustJSON[imageAdded](contoso, "image", "add", img, "--key", key)
	if added.Path != "apps/dw100-app/1.0.0" || added.AppsVersion != 1 || added.Product != "DW100" {
		t.Errorf("image add = %+v, want apps/dw100-app/1.0.0 in apps.json version 1", added)
	}
	contoso.want(ExitConflict, "image", "add", img, "--key", key) // a version is published once
	// Another key, not trusted to have signed the current apps.json, cannot build on it.
	other := filepath.Join(t.TempDir(), "other.key")
	contoso.must("key", "generate", "--out", other, "--no-passphrase")
	contoso.want(ExitError, "image", "add", img, "--key", other)
	if out := contoso.must("image", "list"); !strings.Contains(out, "apps/dw100-app/1.0.0") || !strings.Contains(out, added.SHA256) {
		t.Errorf("image list lacks the published app:\n%s", out)
	}
	// Shown with the groups it is deployed to.
	contoso.must("deployment", "create", "--device-group", "DW100/Production", "--image", "apps/dw100-app/1.0.0")
	shown := mustJSON[imageShown](contoso, "image", "show", "apps/dw100-app/1.0.0")
	if shown.SHA256 != added.SHA256 || len(shown.DeployedTo) != 1 || shown.DeployedTo[0] != "DW100/Production" {
		t.Errorf("image show = %+v, want its SHA-256 and deployed to DW100/Production", shown)
	}
	contoso.want(ExitNotFound, "image", "show", "apps/dw100-app/9.9.9")
	// A revoked image is no longer listed in apps.json, so devices refuse it; the tenant may
	// publish the same package again later.
	contoso.must("image", "revoke", "apps/dw100-app/1.0.0", "--key", key)
	if out := contoso.must("image", "list"); strings.Contains(out, "apps/dw100-app/1.0.0") {
		t.Errorf("image list still shows a revoked image:\n%s", out)
	}
	contoso.want(ExitNotFound, "image", "revoke", "apps/dw100-app/1.0.0", "--key", key)
	contoso.must("image", "add", img, "--key", key) // the same bytes may be published again

	// The platform publishes an OS image to RetailEval, then to Retail; a later targets-sign
	// keeps it (verified against the OS key), and Contoso's devices can fetch it.
	osImg := filepath.Join(t.TempDir(), "moat-os.img")
	op.must("image", "package", "../../examples/dw100/os", "--out", osImg)
	op.want(ExitUsage, "platform", "os-publish", img, "--feed", "Retail", "--keys", keyDir) // an app is not an OS
	op.must("platform", "os-publish", osImg, "--feed", "RetailEval", "--keys", keyDir)
	op.must("platform", "os-publish", osImg, "--feed", "Retail", "--keys", keyDir)
	op.must("platform", "targets-sign", "--tenant", "Contoso", "--keys", keyDir)
	if out := op.must("platform", "audit"); !strings.Contains(out, "tuf.root.put") || !strings.Contains(out, "blob.upload") {
		t.Errorf("platform audit lacks the root and OS uploads:\n%s", out)
	}

	root1, err := os.ReadFile(filepath.Join(keyDir, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	base := s.URL + "/api/v1/tenants/" + k.TenantID + "/tuf/"
	cfg, err := config.New(base+"metadata/", root1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.LocalMetadataDir, cfg.LocalTargetsDir, cfg.RemoteTargetsURL = filepath.Join(dir, "m"), filepath.Join(dir, "t"), base+"targets/"
	hc := s.HTTPClient(t)
	hc.Transport = bearer{token: mc.Secret, base: hc.Transport}
	if err := cfg.SetDefaultFetcherHTTPClient(hc); err != nil {
		t.Fatal(err)
	}
	up, err := updater.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Refresh(); err != nil {
		t.Fatalf("go-tuf Refresh of Contoso's view = %v", err)
	}
	top := up.GetTrustedMetadataSet().Targets["targets"]
	if v := top.Signed.Version; v != 5 {
		t.Errorf("trusted targets version = %d, want 5 (2 signs, 2 OS publishes, 1 sign)", v)
	}
	osPath := ""
	for p, tf := range top.Signed.Targets {
		osPath = p
		if tf.Custom == nil || !strings.Contains(string(*tf.Custom), `"Retail"`) || !strings.Contains(string(*tf.Custom), `"RetailEval"`) {
			t.Errorf("OS target %s custom = %v, want both feeds", p, tf.Custom)
		}
	}
	if !strings.HasPrefix(osPath, "os/") {
		t.Fatalf("targets.json lists %q, want the OS image", osPath)
	}
	oti, err := up.GetTargetInfo(osPath)
	if err != nil {
		t.Fatalf("GetTargetInfo(%s) = %v", osPath, err)
	}
	if _, _, err := up.DownloadTarget(oti, "", ""); err != nil {
		t.Errorf("DownloadTarget(%s) = %v", osPath, err)
	}
	ti, err := up.GetTargetInfo("apps/dw100-app/1.0.0")
	if err != nil {
		t.Fatalf("GetTargetInfo = %v", err)
	}
	_, data, err := up.DownloadTarget(ti, "", "")
	if err != nil {
		t.Fatalf("DownloadTarget = %v", err)
	}
	want, err := os.ReadFile(img)
	if err != nil || string(data) != string(want) {
		t.Errorf("downloaded %d bytes, want the %d-byte package", len(data), len(want))
	}
}
