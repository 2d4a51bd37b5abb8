package mgmt_test

import (
	"bytes"
	"crypto/ecdsa"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

func tufSigner(t *testing.T, k *ecdsa.PrivateKey) signature.Signer {
	t.Helper()
	s, err := keys.Signer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// bearerTransport adds a token to every request of a go-tuf client.
type bearerTransport struct {
	token string
	base  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// TestAPI_TUFRepository drives the offline/online split through the API: the operator
// uploads a root naming the server's online key and Contoso's targets delegating to
// Contoso's registered key; Contoso uploads apps.json signed offline; an unmodified go-tuf
// client verifies the tenant's view through the API. Refusals: a root naming another
// online key, apps signed by an unregistered key, the wrong roles, another tenant.
func TestAPI_TUFRepository(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		expires := time.Now().Add(365 * 24 * time.Hour)
		rootK, osK, contosoK := genKey(t), genKey(t), genKey(t)
		a := w.a
		tufBase := "/api/v1/tenants/" + a.tenant + "/tuf"

		// Before any root: apps cannot be published.
		var ok struct {
			PublicKeyPEM string `json:"public_key_pem"`
		}
		w.op.must(200, "GET", "/api/v1/platform/online-key", nil).decode(t, &ok)
		a.admin.must(403, "GET", "/api/v1/platform/online-key", nil)
		online, err := keys.ParsePublicPEM([]byte(ok.PublicKeyPEM))
		if err != nil {
			t.Fatalf("online key PEM: %v", err)
		}

		wrong, _ := tuf.NewRoot(tufSigner(t, rootK), &rootK.PublicKey, &osK.PublicKey, &genKey(t).PublicKey, expires)
		if p := w.op.must(400, "PUT", "/api/v1/platform/tuf/root", wrong).problem(t); p.Code != "wrong_online_key" {
			t.Errorf("root naming another online key: code %q, want wrong_online_key", p.Code)
		}
		root1, err := tuf.NewRoot(tufSigner(t, rootK), &rootK.PublicKey, &osK.PublicKey, online, expires)
		if err != nil {
			t.Fatal(err)
		}
		a.admin.must(403, "PUT", "/api/v1/platform/tuf/root", root1)
		w.op.must(200, "PUT", "/api/v1/platform/tuf/root", root1)
		w.op.must(409, "PUT", "/api/v1/platform/tuf/root", root1) // not the next version

		// Contoso registers its key; the operator delegates Contoso's apps to it.
		pubPEM, _ := keys.EncodePublicPEM(&contosoK.PublicKey)
		a.admin.must(201, "POST", "/api/v1/tenants/"+a.tenant+"/signing-keys", map[string]string{"name": "contoso-release", "public_key_pem": string(pubPEM)})
		targets, err := tuf.SignTargets(tufSigner(t, osK), 1, expires, nil, []*ecdsa.PublicKey{&contosoK.PublicKey})
		if err != nil {
			t.Fatal(err)
		}
		a.admin.must(403, "PUT", tufBase+"/targets", targets)
		w.op.must(200, "PUT", tufBase+"/targets", targets)

		// Contoso packs the DW100 app and uploads the package; only then may apps.json name it.
		pkgBytes := packApp(t, "dw100-app", "1.0.0", "DW100")
		var bi struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		}
		w.readerA.must(403, "POST", "/api/v1/tenants/"+a.tenant+"/blobs", pkgBytes, "Content-Type", "application/octet-stream")
		w.contribA.must(415, "POST", "/api/v1/tenants/"+a.tenant+"/blobs", pkgBytes)
		w.contribA.must(201, "POST", "/api/v1/tenants/"+a.tenant+"/blobs", pkgBytes, "Content-Type", "application/octet-stream").decode(t, &bi)
		custom := target.Custom{Kind: target.KindApp, Version: "1.0.0", SecurityVersion: 1, ComponentID: "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10", Product: "DW100"}
		app := map[string]tuf.TargetFile{"apps/dw100-app/1.0.0": {Length: bi.Size, SHA256: strings.TrimPrefix(bi.Digest, "sha256:"), Custom: custom}}
		// Naming a package that was never uploaded is refused.
		ghost, _ := tuf.SignApps(tufSigner(t, contosoK), 1, expires, map[string]tuf.TargetFile{"apps/dw100-app/1.0.0": {Length: 3, SHA256: strings.Repeat("cd", 32), Custom: custom}})
		if p := w.contribA.must(400, "PUT", tufBase+"/apps", ghost).problem(t); p.Code != "bad_target" {
			t.Errorf("apps naming a package never uploaded: code %q, want bad_target", p.Code)
		}
		apps, err := tuf.SignApps(tufSigner(t, contosoK), 1, expires, app)
		if err != nil {
			t.Fatal(err)
		}
		forged, _ := tuf.SignApps(tufSigner(t, genKey(t)), 1, expires, app)
		if p := w.contribA.must(400, "PUT", tufBase+"/apps", forged).problem(t); p.Code != "not_signed_by_active_key" {
			t.Errorf("apps signed by an unregistered key: code %q, want not_signed_by_active_key", p.Code)
		}
		w.readerA.must(403, "PUT", tufBase+"/apps", apps)
		w.b.admin.must(404, "PUT", tufBase+"/apps", apps)
		w.contribA.must(200, "PUT", tufBase+"/apps", apps)
		w.b.admin.must(404, "GET", tufBase+"/metadata/timestamp.json", nil)

		// An unmodified go-tuf client, pinned to root 1, verifies Contoso's view through the API.
		dir := t.TempDir()
		cfg, err := config.New(w.srv.URL+tufBase+"/metadata/", root1)
		if err != nil {
			t.Fatal(err)
		}
		cfg.LocalMetadataDir = filepath.Join(dir, "metadata")
		cfg.LocalTargetsDir = filepath.Join(dir, "targets")
		cfg.RemoteTargetsURL = w.srv.URL + tufBase + "/targets/"
		hc := w.srv.HTTPClient(t)
		hc.Transport = bearerTransport{token: w.readerA.token, base: hc.Transport}
		if err := cfg.SetDefaultFetcherHTTPClient(hc); err != nil {
			t.Fatal(err)
		}
		up, err := updater.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := up.Refresh(); err != nil {
			t.Fatalf("go-tuf Refresh through the API = %v", err)
		}
		ti, err := up.GetTargetInfo("apps/dw100-app/1.0.0")
		if err != nil {
			t.Fatalf("GetTargetInfo = %v; want the signed app", err)
		}
		_, got, err := up.DownloadTarget(ti, "", "")
		if err != nil || !bytes.Equal(got, pkgBytes) {
			t.Errorf("DownloadTarget = %d bytes, %v; want the uploaded package", len(got), err)
		}
		// Another tenant can fetch neither the metadata nor the package.
		w.b.admin.must(404, "GET", tufBase+"/targets/apps/dw100-app/"+strings.TrimPrefix(bi.Digest, "sha256:")+".1.0.0", nil)
		w.b.admin.must(404, "GET", "/api/v1/tenants/"+w.b.tenant+"/tuf/targets/apps/dw100-app/"+strings.TrimPrefix(bi.Digest, "sha256:")+".1.0.0", nil)
		// Range requests resume a download.
		r := w.readerA.must(206, "GET", tufBase+"/targets/apps/dw100-app/"+strings.TrimPrefix(bi.Digest, "sha256:")+".1.0.0", nil, "Range", "bytes=8-15")
		if !bytes.Equal(r.Body, pkgBytes[8:16]) || r.Header.Get("ETag") != `"`+bi.Digest+`"` {
			t.Errorf("Range 8-15 = %q (ETag %s), want %q with the digest as a strong ETag", r.Body, r.Header.Get("ETag"), pkgBytes[8:16])
		}

		// Platform changes are in the platform's audit log, readable by operators only.
		pr := w.op.must(200, "GET", "/api/v1/platform/audit-events", nil)
		for _, action := range []string{"tenant.create", "tuf.root.put"} {
			if !strings.Contains(string(pr.Body), `"`+action+`"`) {
				t.Errorf("platform audit log lacks %s", action)
			}
		}
		a.admin.must(403, "GET", "/api/v1/platform/audit-events", nil)

		// Every upload is in Contoso's audit log.
		r = a.admin.must(200, "GET", "/api/v1/tenants/"+a.tenant+"/audit-events?limit=1000", nil)
		for _, action := range []string{"tuf.targets.put", "tuf.apps.put"} {
			if !strings.Contains(string(r.Body), action) {
				t.Errorf("audit log lacks %s", action)
			}
		}
	})
}

// packApp builds an app image package in memory for the test.
func packApp(t *testing.T, name, version, productName string) []byte {
	t.Helper()
	dir := t.TempDir()
	manifest := `{"format":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","name":"` + name +
		`","kind":"app","version":"` + version + `","security_version":1,"product":"` + productName +
		`","app":{"entry_point":"bin/app","capabilities":{}}}`
	if err := os.WriteFile(filepath.Join(dir, "app.json"), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "app"), []byte("#!/bin/sh\necho dw100\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := image.Pack(t.Context(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
