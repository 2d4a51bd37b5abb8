package cli

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/testenv"
)

// platformWithTenant starts a server, initialises the platform (with its root certificate)
// and creates the tenant Contoso with an Administrator who has selected it. It returns the
// operator, the Contoso administrator and the platform keys directory.
func platformWithTenant(t *testing.T) (op, contoso *user, keyDir string) {
	t.Helper()
	s := testenv.StartServer(t)
	op = newUser(t)
	op.login(s, s.OperatorToken)
	keyDir = filepath.Join(t.TempDir(), "platform")
	op.must("platform", "init", "--out", keyDir, "--no-passphrase")
	op.must("tenant", "create", "--name", "Contoso")
	mc := mustJSON[client.MemberCreated](op, "member", "create", "--tenant", "Contoso", "--name", "contoso-admin", "--role", "Administrator")
	contoso = newUser(t)
	contoso.login(s, mc.Secret)
	contoso.must("tenant", "select", "Contoso")
	return op, contoso, keyDir
}

// runJSON runs the CLI with -o json, fails unless it exits 0, and decodes stdout into T; it
// also returns stderr.
func runJSON[T any](u *user, args ...string) (T, string) {
	u.t.Helper()
	r := u.run(append(args, "-o", "json")...)
	if r.code != 0 {
		u.t.Fatalf("moat %s = exit %d, want 0\nstderr:\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	var v T
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		u.t.Fatalf("moat %s -o json: output does not decode as %T: %v\n%s", strings.Join(args, " "), v, err, r.stdout)
	}
	return v, r.stderr
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

// TestDevice_ManufactureClaimGroupAndChain walks a device from the factory to the tenant:
// the platform root certificate, the offline certification of the tenant's device CA,
// manufacturing and registering devices, the tenant claiming them from devices.txt, putting
// one in a group, blocking and unblocking it, the development capability, a deployment,
// and the CA chain the tenant's cloud trusts its devices with, before and after a rotation.
func TestDevice_ManufactureClaimGroupAndChain(t *testing.T) {
	t.Parallel()
	op, contoso, keyDir := platformWithTenant(t)

	// platform init wrote the root certificate of the root key and uploaded it; running
	// ca-certificate again uploads the same one.
	rootPEM, err := os.ReadFile(filepath.Join(keyDir, "root-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := deviceca.ParseRootCertificate(rootPEM)
	if err != nil {
		t.Fatalf("ParseRootCertificate(root-ca.pem) = %v", err)
	}
	rootKey, err := keys.ReadPrivate(filepath.Join(keyDir, "root.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rootKey.PublicKey.Equal(root.PublicKey) || root.Subject.CommonName != "moat platform root" {
		t.Errorf("root-ca.pem: subject %v, want a certificate of root.key named moat platform root", root.Subject)
	}
	if years := root.NotAfter.Sub(root.NotBefore).Hours() / 24 / 365; years < 19.9 || years > 20.1 {
		t.Errorf("root certificate valid for %.1f years, want 20", years)
	}
	shown := mustJSON[rootCAShown](op, "platform", "ca-certificate", "--keys", keyDir)
	if shown.Created || shown.SHA256 != certFingerprint(root) {
		t.Errorf("platform ca-certificate = %+v, want the existing certificate %s uploaded again", shown, certFingerprint(root))
	}
	if again, _ := os.ReadFile(filepath.Join(keyDir, "root-ca.pem")); string(again) != string(rootPEM) {
		t.Error("platform ca-certificate changed root-ca.pem without --renew")
	}
	contoso.want(ExitForbidden, "platform", "ca-certificate", "--keys", keyDir)

	// The new tenant's device CA waits for the platform root; the operator sees it, then
	// certifies it offline.
	if out := op.must("platform", "ca-sign", "--dry-run"); !strings.Contains(out, "Contoso") || !strings.Contains(out, "dca_") {
		t.Errorf("ca-sign --dry-run does not list Contoso's pending CA:\n%s", out)
	}
	signed, stderr := runJSON[[]client.DeviceCA](op, "platform", "ca-sign", "--keys", keyDir, "--tenant", "Contoso")
	if len(signed) != 1 || signed[0].State != "active" || signed[0].CertificatePEM == "" {
		t.Fatalf("platform ca-sign = %+v, want Contoso's CA active", signed)
	}
	if !strings.Contains(stderr, signed[0].ID) || !strings.Contains(stderr, "Contoso") {
		t.Errorf("ca-sign did not show the tenant and CA ID before signing:\n%s", stderr)
	}
	if out := op.must("platform", "ca-sign", "--keys", keyDir); !strings.Contains(out, "No device CA waits") {
		t.Errorf("ca-sign with nothing pending = %q", out)
	}

	// The operator manufactures three devices.
	devDir := filepath.Join(t.TempDir(), "devices")
	made := mustJSON[[]client.Device](op, "platform", "manufacture", "--count", "3", "--out", devDir)
	if len(made) != 3 {
		t.Fatalf("manufacture --count 3 made %d devices", len(made))
	}
	var ids []string
	for _, d := range made {
		ids = append(ids, d.ID)
		k, err := identity.OpenFileKey(filepath.Join(devDir, d.ID, "identity.key"))
		if err != nil {
			t.Fatalf("device %s: %v", d.ID, err)
		}
		if string(k.ID()) != d.ID {
			t.Errorf("identity.key of %s has the ID %s", d.ID, k.ID())
		}
	}
	if got := readLines(t, filepath.Join(devDir, "devices.txt")); !slices.Equal(got, ids) {
		t.Errorf("devices.txt = %q, want %q", got, ids)
	}
	entries, _ := os.ReadDir(devDir)
	if len(entries) != 4 {
		t.Errorf("%s holds %d entries, want 3 device directories and devices.txt, no temporary ones", devDir, len(entries))
	}
	// A tenant administrator is not a platform operator, and no key is made for nothing.
	other := filepath.Join(t.TempDir(), "other")
	contoso.want(ExitForbidden, "platform", "manufacture", "--count", "1", "--out", other)
	if _, err := os.Stat(other); err == nil {
		t.Error("a refused manufacture created its output directory")
	}

	// A device key made elsewhere is registered from its public key; a private key is never
	// sent, and the same key is registered once.
	extKey, err := identity.CreateFileKey(filepath.Join(t.TempDir(), "ext.key"))
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(t.TempDir(), "ext.pub")
	if err := keys.WritePublic(pubFile, extKey.Public()); err != nil {
		t.Fatal(err)
	}
	ext := mustJSON[client.Device](op, "platform", "device", "register", "--public-key", pubFile)
	if ext.ID != string(extKey.ID()) {
		t.Errorf("device register = %s, want the key's ID %s", ext.ID, extKey.ID())
	}
	op.want(ExitConflict, "platform", "device", "register", "--public-key", pubFile)
	if r := op.want(ExitError, "platform", "device", "register", "--public-key", extKey.Path()); strings.Contains(r.stderr, "PRIVATE KEY") {
		t.Errorf("refusing a private key echoed it:\n%s", r.stderr)
	}

	// Contoso claims the three from devices.txt, and the fourth from a list with comments.
	claimed := mustJSON[[]client.Device](contoso, "device", "claim", "--from", filepath.Join(devDir, "devices.txt"))
	if len(claimed) != 3 || claimed[0].TenantID == "" {
		t.Fatalf("device claim --from devices.txt = %+v, want 3 devices claimed", claimed)
	}
	list := filepath.Join(t.TempDir(), "more.txt")
	os.WriteFile(list, []byte("# from the bench\n\n"+strings.ToUpper(ext.ID)+"  # rev B\n"+ids[0]+"\n"), 0o644)
	if more := mustJSON[[]client.Device](contoso, "device", "claim", "--from", list); len(more) != 2 {
		t.Errorf("claiming a list with comments and an already claimed device = %d devices, want 2", len(more))
	}
	if all := mustJSON[[]client.Device](contoso, "device", "list"); len(all) != 4 {
		t.Errorf("device list = %d devices, want 4", len(all))
	}

	// Put one device in DW100/Development, block and unblock it, let it run development images.
	contoso.must("product", "create", "--name", "DW100")
	id := ids[1]
	moved := mustJSON[client.Device](contoso, "device", "update", id, "--device-group", "DW100/Development")
	if moved.GroupID == "" || moved.ProductID == "" {
		t.Errorf("device update --device-group = %+v, want a group", moved)
	}
	if out := contoso.must("device", "show", id); !strings.Contains(out, "DW100/Development") || !strings.Contains(out, "never") {
		t.Errorf("device show does not name the group or the missing attestation:\n%s", out)
	}
	if d := mustJSON[client.Device](contoso, "device", "block", id); !d.Blocked {
		t.Errorf("device block = %+v, want blocked", d)
	}
	if out := contoso.must("device", "block", id); !strings.Contains(out, "already blocked") {
		t.Errorf("blocking a blocked device = %q, want it to say so", out)
	}
	if d := mustJSON[client.Device](contoso, "device", "unblock", id); d.Blocked {
		t.Errorf("device unblock = %+v, want not blocked", d)
	}
	contoso.must("device", "enable-development", id)
	d := mustJSON[client.Device](contoso, "device", "show", id)
	if d.ID != id || d.GroupID != moved.GroupID || d.Blocked || !d.Development || d.Attestation != nil || d.Floors == nil {
		t.Errorf("device show -o json = %+v, want it in the group, unblocked, with the development capability", d)
	}
	if inProduct := mustJSON[[]client.DeviceStatus](contoso, "device", "list", "--product", "DW100"); len(inProduct) != 1 || inProduct[0].ID != id || inProduct[0].State != client.StateNever {
		t.Errorf("device list --product DW100 = %+v, want only %s, never attested", inProduct, id)
	}
	if certs := mustJSON[[]client.DeviceCertificate](contoso, "device", "certificates", id); len(certs) != 0 {
		t.Errorf("device certificates of a device that never attested = %+v", certs)
	}

	// A deployment of a published app to the group.
	signKey := filepath.Join(t.TempDir(), "release.key")
	contoso.must("key", "generate", "--out", signKey, "--no-passphrase")
	contoso.must("tenant", "signing-key", "add", "--name", "release", "--public-key", signKey+".pub")
	op.must("platform", "targets-sign", "--tenant", "Contoso", "--keys", keyDir)
	img := filepath.Join(t.TempDir(), "dw100-app.img")
	contoso.must("image", "package", exampleApp, "--out", img)
	contoso.must("image", "add", img, "--key", signKey)
	dep := mustJSON[client.Deployment](contoso, "deployment", "create", "--device-group", "DW100/Development", "--image", "apps/dw100-app/1.0.0")
	if dep.Target != "apps/dw100-app/1.0.0" || dep.GroupID != moved.GroupID {
		t.Errorf("deployment create = %+v, want the app on the group", dep)
	}
	deps := mustJSON[[]client.Deployment](contoso, "deployment", "list", "--product", "DW100", "--device-group", "Development")
	if len(deps) != 1 || deps[0].ID != dep.ID {
		t.Errorf("deployment list = %+v, want %s", deps, dep.ID)
	}
	contoso.want(ExitInvalid, "deployment", "create", "--device-group", "DW100/Development", "--image", "apps/dw100-app/9.9.9")
	contoso.want(ExitUsage, "deployment", "create", "--device-group", "DW100/Development", "--image", "dw100-app")
	contoso.want(ExitNotFound, "deployment", "list", "--device-group", "DW100/Nope")

	// The chain the tenant's cloud trusts: the tenant CA, then the platform root.
	chainFile := filepath.Join(t.TempDir(), "contoso-devices.pem")
	contoso.must("ca-certificate", "download", "--out", chainFile)
	checkChain(t, chainFile, root, 2)
	contoso.want(ExitError, "ca-certificate", "download", "--out", chainFile) // never replaced by accident
	contoso.must("ca-certificate", "download", "--out", chainFile, "--force")

	// A rotation waits for the platform root; then both CAs are trusted for the overlap.
	rotated := mustJSON[client.DeviceCA](contoso, "ca-certificate", "rotate")
	if rotated.State != "pending" {
		t.Errorf("ca-certificate rotate = %+v, want a pending CA", rotated)
	}
	contoso.want(ExitConflict, "ca-certificate", "rotate")
	op.must("platform", "ca-sign", "--keys", keyDir)
	cas := mustJSON[[]client.DeviceCA](contoso, "ca-certificate", "list")
	var states []string
	for _, ca := range cas {
		states = append(states, ca.State)
	}
	slices.Sort(states)
	if !slices.Equal(states, []string{"active", "retired"}) {
		t.Errorf("CA states after a rotation = %q, want active and retired", states)
	}
	contoso.must("ca-certificate", "download", "--out", chainFile, "--force")
	checkChain(t, chainFile, root, 3)

	// A renewed root certificate has the same key: the tenant CAs it certified stay valid.
	renewed := mustJSON[rootCAShown](op, "platform", "ca-certificate", "--keys", keyDir, "--renew")
	newPEM, err := os.ReadFile(filepath.Join(keyDir, "root-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := deviceca.ParseRootCertificate(newPEM)
	if err != nil || !renewed.Created || renewed.SHA256 == certFingerprint(root) || renewed.SHA256 != certFingerprint(newRoot) {
		t.Fatalf("platform ca-certificate --renew = %+v (%v), want a new certificate written to root-ca.pem", renewed, err)
	}
	contoso.must("ca-certificate", "download", "--out", chainFile, "--force")
	checkChain(t, chainFile, newRoot, 3)
}

// checkChain checks a downloaded device CA chain: n certificates, every one but the last a
// tenant CA certified by the root, and the last the platform root itself.
func checkChain(t *testing.T, file string, root *x509.Certificate, n int) {
	t.Helper()
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("%s: %v; want mode 0644", file, err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCertsPEM(data)
	if err != nil {
		t.Fatalf("downloaded chain: %v", err)
	}
	if len(certs) != n {
		t.Fatalf("downloaded chain holds %d certificates, want %d", len(certs), n)
	}
	last := certs[len(certs)-1]
	if !last.Equal(root) {
		t.Errorf("the chain ends with %v, want the platform root", last.Subject)
	}
	for _, ca := range certs[:len(certs)-1] {
		if err := ca.CheckSignatureFrom(root); err != nil || !strings.HasPrefix(ca.Subject.CommonName, "moat device CA dca_") {
			t.Errorf("chain certificate %v: %v; want a tenant device CA signed by the root", ca.Subject, err)
		}
	}
}

// TestDevice_RefusesBadInput checks that bad arguments fail with a clear error and the
// right exit code, and change nothing.
func TestDevice_RefusesBadInput(t *testing.T) {
	t.Parallel()
	op, contoso, keyDir := platformWithTenant(t)
	op.must("platform", "ca-sign", "--keys", keyDir)

	devDir := filepath.Join(t.TempDir(), "devices")
	for _, n := range []string{"0", "-1", "10001"} {
		r := op.want(ExitUsage, "platform", "manufacture", "--count", n, "--out", devDir)
		if !strings.Contains(r.stderr, "--count") {
			t.Errorf("manufacture --count %s: stderr does not name --count:\n%s", n, r.stderr)
		}
	}
	op.want(ExitUsage, "platform", "manufacture", "--count", "1")
	if _, err := os.Stat(devDir); err == nil {
		t.Error("a refused manufacture created its output directory")
	}
	made := mustJSON[[]client.Device](op, "platform", "manufacture", "--count", "1", "--out", devDir)
	id := made[0].ID

	// A registered-looking ID nobody registered: not found, and nothing is claimed.
	unknown := strings.Repeat("ab", 32)
	r := contoso.want(ExitNotFound, "device", "claim", id, unknown)
	if !strings.Contains(r.stderr, unknown) || !strings.Contains(r.stderr, "no device was claimed") || !strings.Contains(r.stderr, "hint:") {
		t.Errorf("claiming an unknown device: stderr does not name it, say nothing was claimed and what to do:\n%s", r.stderr)
	}
	contoso.want(ExitNotFound, "device", "show", id) // the claim was all or nothing
	r = contoso.want(ExitUsage, "device", "claim", "not-a-device")
	if !strings.Contains(r.stderr, "not-a-device") {
		t.Errorf("claiming a malformed ID: stderr does not name it:\n%s", r.stderr)
	}
	bad := filepath.Join(t.TempDir(), "bad.txt")
	os.WriteFile(bad, []byte(id+"\n# fine\nxyz\n"), 0o644)
	if r := contoso.want(ExitUsage, "device", "claim", "--from", bad); !strings.Contains(r.stderr, "bad.txt:3") {
		t.Errorf("a bad line in --from: stderr does not name file and line:\n%s", r.stderr)
	}
	contoso.want(ExitUsage, "device", "claim")
	contoso.want(ExitError, "device", "claim", "--from", filepath.Join(t.TempDir(), "missing.txt"))

	contoso.must("device", "claim", id)
	// A device belongs to the first tenant that claims it.
	op.must("tenant", "create", "--name", "Fabrikam")
	r = op.want(ExitConflict, "device", "claim", id, "--tenant", "Fabrikam")
	if !strings.Contains(r.stderr, "hint:") {
		t.Errorf("claiming another tenant's device: no hint:\n%s", r.stderr)
	}
	op.want(ExitNotFound, "device", "show", id, "--tenant", "Fabrikam")

	// Bad device groups: malformed locally, unknown at the server; neither changes the device.
	contoso.must("product", "create", "--name", "DW100")
	for _, g := range []string{"Development", "DW100/", "/Development", ""} {
		contoso.want(ExitUsage, "device", "update", id, "--device-group", g)
	}
	contoso.want(ExitUsage, "device", "update", id)
	r = contoso.want(ExitInvalid, "device", "update", id, "--device-group", "DW100/Nope")
	if !strings.Contains(r.stderr, "DW100/Nope") || !strings.Contains(r.stderr, "device-group list") {
		t.Errorf("an unknown device group: stderr does not name it and say where to look:\n%s", r.stderr)
	}
	contoso.want(ExitInvalid, "device", "update", id, "--device-group", "DW200/Development")
	if d := mustJSON[client.Device](contoso, "device", "show", id); d.GroupID != "" || d.Version != made[0].Version+1 {
		t.Errorf("after refused updates the device is %+v, want no group and only the claim's version change", d)
	}

	// Malformed device IDs are refused before any request; unknown ones are not found.
	contoso.want(ExitUsage, "device", "show", "3f9a")
	contoso.want(ExitUsage, "device", "block")
	contoso.want(ExitNotFound, "device", "block", unknown)
	contoso.want(ExitNotFound, "device", "certificates", unknown)

	// Downloading needs --out; a refused download writes nothing.
	contoso.want(ExitUsage, "ca-certificate", "download")
	// ca-sign needs the keys, and refuses a validity past the root's.
	op.want(ExitUsage, "platform", "ca-sign")
	op.want(ExitUsage, "platform", "ca-sign", "--keys", keyDir, "--validity", "200000h")
	op.want(ExitError, "platform", "ca-certificate", "--keys", t.TempDir())
}

// TestDevice_ShowsAttestation checks what support staff see of a device's last attestation:
// the images and floors after a success, its certificate, and the reason after a refusal.
func TestDevice_ShowsAttestation(t *testing.T) {
	t.Parallel()
	p := testenv.NewPlatform(t)
	osImg := p.PublishOS("moat-os", "1.0.0", 1, "Retail", "RetailEval")
	app := p.PublishApp("dw100-app", "1.0.0", 2, "DW100")
	dev := p.NewDevice(true, "DW100/Production")
	if _, err := p.Attest(dev, osImg.Measurement(), app.Measurement()); err != nil {
		t.Fatalf("Attest = %v", err)
	}
	u := newUser(t)
	u.login(p.Server, p.Server.OperatorToken) // the operator created Contoso: its Administrator
	u.must("tenant", "select", "Contoso")

	d := mustJSON[client.Device](u, "device", "show", dev.ID)
	if d.Attestation == nil || d.Attestation.Refusal != "" || len(d.Attestation.Images) != 2 || d.Floors["apps/dw100-app"] != 2 {
		t.Fatalf("device show -o json after an attestation = %+v, want it certified with two images and floors", d)
	}
	out := u.must("device", "show", dev.ID)
	for _, want := range []string{"DW100/Production", "certified", d.Attestation.Serial, "os/moat-os/1.0.0", "apps/dw100-app/1.0.0", "apps/dw100-app=2"} {
		if !strings.Contains(out, want) {
			t.Errorf("device show lacks %q:\n%s", want, out)
		}
	}
	certs := mustJSON[[]client.DeviceCertificate](u, "device", "certificates", dev.ID)
	if len(certs) != 1 || certs[0].Serial != d.Attestation.Serial {
		t.Errorf("device certificates = %+v, want the one issued (%s)", certs, d.Attestation.Serial)
	}
	if out := u.must("device", "list"); !strings.Contains(out, "certified") {
		t.Errorf("device list does not show the attestation result:\n%s", out)
	}

	u.must("device", "block", dev.ID)
	if _, err := p.Attest(dev, osImg.Measurement(), app.Measurement()); err == nil {
		t.Fatal("a blocked device attested")
	}
	out = u.must("device", "show", dev.ID)
	if !strings.Contains(out, "refused: blocked") || !strings.Contains(out, "Refusal detail") {
		t.Errorf("device show after a refused attestation does not give the reason:\n%s", out)
	}
}
