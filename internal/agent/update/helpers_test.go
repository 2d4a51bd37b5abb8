package update_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/agent/update"
	"github.com/moat-iot/moat/internal/blob"
	"github.com/moat-iot/moat/internal/director"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/testenv"
	"github.com/moat-iot/moat/internal/tuf"
)

const deviceID = "dw100-0001"

// world is a real moat server with a platform root, one tenant with a registered signing key
// and a DW100 product, a Reader token standing in for the device credential, and a test
// director key.
type world struct {
	t         *testing.T
	srv       *testenv.Server
	admin     *client.Client
	tenant    string
	root      []byte
	tenantKey *ecdsa.PrivateKey
	director  *ecdsa.PrivateKey
	hc        *http.Client // the device's client: Reader token over the server's TLS
	token     string       // the Reader's token, standing in for the device credential
	expires   time.Time
	appsVer   int64
	published map[string]tuf.TargetFile
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// bearer adds the device's token to every request.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := t.Context()
	s := testenv.StartServer(t)
	w := &world{t: t, srv: s, expires: time.Now().Add(365 * 24 * time.Hour), published: map[string]tuf.TargetFile{}}
	op := w.client(s.OperatorToken)
	ten, err := op.CreateTenant(ctx, client.TenantCreate{Name: "Contoso"})
	if err != nil {
		t.Fatal(err)
	}
	w.tenant = ten.ID
	adm, err := op.CreateMember(ctx, ten.ID, client.MemberCreate{Name: "contoso-admin", Role: client.RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	w.admin = w.client(adm.Secret)
	reader, err := w.admin.CreateMember(ctx, ten.ID, client.MemberCreate{Name: "dw100-device", Role: client.RoleReader})
	if err != nil {
		t.Fatal(err)
	}

	// The platform root names the server's online key; the OS key delegates Contoso's apps.
	ok, err := op.GetOnlineKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	online, err := keys.ParsePublicPEM([]byte(ok.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	rootK, osK := genKey(t), genKey(t)
	w.tenantKey, w.director = genKey(t), genKey(t)
	w.root, err = tuf.NewRoot(tufSigner(t, rootK), &rootK.PublicKey, &osK.PublicKey, online, w.expires)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.PutPlatformRoot(ctx, w.root); err != nil {
		t.Fatal(err)
	}
	pub, err := keys.EncodePublicPEM(&w.tenantKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.CreateSigningKey(ctx, ten.ID, client.SigningKeyCreate{Name: "release", PublicKeyPEM: string(pub)}); err != nil {
		t.Fatal(err)
	}
	targets, err := tuf.SignTargets(tufSigner(t, osK), 1, w.expires, nil, []*ecdsa.PublicKey{&w.tenantKey.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.PutTenantTargets(ctx, ten.ID, targets); err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.CreateProduct(ctx, ten.ID, client.ProductCreate{Name: "DW100"}); err != nil {
		t.Fatal(err)
	}
	w.token = reader.Secret
	w.hc = w.deviceHTTPClient(nil)
	return w
}

func (w *world) client(token string) *client.Client {
	w.t.Helper()
	c, err := client.New(w.srv.URL, client.WithHTTPClient(w.srv.HTTPClient(w.t)), client.WithToken(token))
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func tufSigner(t *testing.T, k *ecdsa.PrivateKey) signature.Signer {
	t.Helper()
	s, err := keys.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pkg is an uploaded image package.
type pkg struct {
	bytes []byte
	path  string
	sha   string
	size  int64
}

// upload packs an app of the given version and manifest security version and uploads it.
func (w *world) upload(version string, securityVersion uint32) pkg {
	w.t.Helper()
	dir := w.t.TempDir()
	manifest := fmt.Sprintf(`{"format":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","name":"dw100-app",`+
		`"kind":"app","version":%q,"security_version":%d,"product":"DW100","app":{"entry_point":"bin/app","capabilities":{}}}`,
		version, securityVersion)
	if err := os.WriteFile(filepath.Join(dir, image.AppManifestFile), []byte(manifest), 0o600); err != nil {
		w.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o700); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "app"), []byte("#!/bin/sh\necho dw100 "+version+"\n"), 0o700); err != nil {
		w.t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := image.Pack(w.t.Context(), dir, &buf); err != nil {
		w.t.Fatal(err)
	}
	bi, err := w.admin.UploadBlob(w.t.Context(), w.tenant, bytes.NewReader(buf.Bytes()))
	if err != nil {
		w.t.Fatal(err)
	}
	d, err := blob.ParseDigest(bi.Digest)
	if err != nil {
		w.t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if d.Hex() != hex.EncodeToString(sum[:]) || bi.Size != int64(buf.Len()) {
		w.t.Fatalf("upload = %+v, want the package's digest and size", bi)
	}
	return pkg{bytes: buf.Bytes(), path: "apps/dw100-app/" + version, sha: d.Hex(), size: bi.Size}
}

// publish signs the next apps.json with the tenant key, adding p with the given custom
// security version, and publishes it. (Custom metadata without a security version the
// signer refuses to write and the server to publish; the device's own refusal is
// TestUpdate_RejectsBadCustomMetadata.)
func (w *world) publish(p pkg, securityVersion uint32) {
	w.t.Helper()
	w.published[p.path] = tuf.TargetFile{Length: p.size, SHA256: p.sha, Custom: target.Custom{
		Kind: target.KindApp, Version: filepath.Base(p.path), SecurityVersion: securityVersion,
		ComponentID: "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10", Product: "DW100"}}
	w.appsVer++
	apps, err := tuf.SignApps(tufSigner(w.t, w.tenantKey), w.appsVer, w.expires, w.published)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.admin.PutTenantApps(w.t.Context(), w.tenant, apps); err != nil {
		w.t.Fatal(err)
	}
}

// config is the device's update configuration against w's server.
func (w *world) config(stateDir string) update.Config {
	base := w.srv.URL + "/api/v1/tenants/" + w.tenant + "/tuf/"
	return update.Config{
		MetadataURL:      base + "metadata/",
		TargetsURL:       base + "targets/",
		Root:             w.root,
		DirectorKey:      &w.director.PublicKey,
		DeviceID:         deviceID,
		TenantID:         w.tenant,
		StateDir:         stateDir,
		HTTPClient:       w.hc,
		Now:              time.Now,
		FetchOptions:     blob.FetchOptions{StallTimeout: 10 * time.Second, Timeout: time.Minute},
		MaxMetadataBytes: 1 << 20,
	}
}

func (w *world) newClient(stateDir string) *update.Client {
	w.t.Helper()
	c, err := update.New(w.config(stateDir))
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// assign issues an assignment for device, signed by the test director key.
func (w *world) assign(device string, counter uint64, images ...director.Image) []byte {
	w.t.Helper()
	now := time.Now()
	a := director.Assignment{
		Version: director.Format, DeviceID: device, TenantID: w.tenant, Counter: counter,
		IssuedAt: now, ExpiresAt: now.Add(time.Hour), Images: images,
	}
	if a.Images == nil {
		a.Images = []director.Image{}
	}
	b, err := director.Issue(w.director, a)
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

// image names p as the director would, with the given security version.
func (p pkg) image(securityVersion uint32) director.Image {
	return director.Image{Kind: director.KindApp, Path: p.path, SHA256: p.sha, Length: p.size,
		Version: filepath.Base(p.path), SecurityVersion: securityVersion}
}

// counter reads the persisted counter file.
func counter(t *testing.T, stateDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "counter"))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// deviceHTTPClient is the device's HTTP client: the Reader token over TLS trusting the
// server's CA and, if extra is not nil, that certificate too (a proxy in front of the server).
func (w *world) deviceHTTPClient(extra *x509.Certificate) *http.Client {
	w.t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(w.srv.CAPEM) {
		w.t.Fatal("server CA PEM holds no certificate")
	}
	if extra != nil {
		pool.AddCert(extra)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	w.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: bearer{token: w.token, base: tr}}
}
