package mgmt_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/server"
	"github.com/moat-iot/moat/internal/testenv"
)

// blobWorld is a world on each store that also knows the server's blob directory.
func onBothStoresWithBlobs(t *testing.T, fn func(t *testing.T, w *world, blobDir string)) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var dir string
			opts := []testenv.ServerOption{testenv.WithConfig(func(c *server.Config) { dir = c.DataDir })}
			if name == "postgres" {
				opts = append(opts, testenv.WithDatabase(testenv.FreshPostgresDatabase(t)))
			}
			w := newWorld(t, opts...)
			fn(t, w, filepath.Join(dir, "blobs"))
		})
	}
}

// blobFiles counts the stored blobs and leftover temporary files.
func blobFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// upload posts body as application/octet-stream; chunked hides its length.
func (a *api) upload(path string, body []byte, chunked bool) resp {
	a.t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // no Content-Length
	}
	req, err := http.NewRequestWithContext(a.t.Context(), "POST", a.srv.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Bearer "+a.token)
	res, err := a.http.Do(req)
	if err != nil {
		a.t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: b}
}

type storage struct {
	TenantID     string `json:"tenant_id"`
	QuotaBytes   int64  `json:"quota_bytes"`
	QuotaDefault bool   `json:"quota_default"`
	UsedBytes    int64  `json:"used_bytes"`
	Blobs        int    `json:"blobs"`
}

func packOS(t *testing.T, version string) []byte {
	t.Helper()
	dir := t.TempDir()
	manifest := `{"format":1,"component_id":"9d2f4a61-7c3e-4e8b-b5a0-1e6c8f3d2b47","name":"moat-os","kind":"os","version":"` + version + `","security_version":1}`
	if err := os.WriteFile(filepath.Join(dir, image.OSManifestFile), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel"), []byte("kernel "+version), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := image.Pack(t.Context(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBlobs_RejectsRandomBytes: a Contributor's upload of bytes that are not an application
// package (random data, a package cut short, an OS package) is refused with a problem that
// says why, and leaves no file and no record; so is an app package sent to the platform.
// Issue 10, defect 3.
func TestBlobs_RejectsRandomBytes(t *testing.T) {
	t.Parallel()
	onBothStoresWithBlobs(t, func(t *testing.T, w *world, blobDir string) {
		random := make([]byte, 4<<20)
		rand.Read(random)
		app := packApp(t, "dw100-app", "1.0.0", "DW100")
		blobs := "/api/v1/tenants/" + w.a.tenant + "/blobs"
		cases := []struct {
			name    string
			body    []byte
			chunked bool
			code    string
		}{
			{"Random", random, false, "not_an_image_package"},
			{"RandomChunked", random, true, "not_an_image_package"},
			{"RandomAfterMagic", append([]byte(image.Magic), random...), false, "not_an_image_package"},
			{"Truncated", app[:len(app)-5], false, "not_an_image_package"},
			{"TrailingData", append(append([]byte{}, app...), random[:100]...), true, "not_an_image_package"},
			{"OSPackage", packOS(t, "1.0.0"), false, "wrong_image_kind"},
		}
		for _, tc := range cases {
			r := w.contribA.upload(blobs, tc.body, tc.chunked)
			if r.Status != http.StatusBadRequest {
				t.Errorf("%s: upload = %d %s, want 400", tc.name, r.Status, r.Body)
				continue
			}
			if p := r.problem(t); p.Code != tc.code {
				t.Errorf("%s: code %q, want %q", tc.name, p.Code, tc.code)
			}
		}
		r := w.op.upload("/api/v1/platform/blobs", app, false)
		if r.Status != http.StatusBadRequest || r.problem(t).Code != "wrong_image_kind" {
			t.Errorf("platform upload of an app package = %d %s, want 400 wrong_image_kind", r.Status, r.Body)
		}
		if n := blobFiles(t, blobDir); n != 0 {
			t.Errorf("the blob store holds %d files after refused uploads, want 0", n)
		}
		var st storage
		w.readerA.must(200, "GET", "/api/v1/tenants/"+w.a.tenant+"/storage", nil).decode(t, &st)
		if st.Blobs != 0 || st.UsedBytes != 0 {
			t.Errorf("storage after refused uploads = %+v, want nothing used", st)
		}
		// A real package is accepted.
		if r := w.contribA.upload(blobs, app, false); r.Status != http.StatusCreated {
			t.Errorf("upload of an app package = %d %s, want 201", r.Status, r.Body)
		}
	})
}

// TestBlobs_RejectsOverQuota: once the operator sets a quota, an upload that would exceed
// it is refused with 413 storage_quota_exceeded, declared length or not, and nothing is
// stored; the same content again counts once; another tenant's usage is its own.
func TestBlobs_RejectsOverQuota(t *testing.T) {
	t.Parallel()
	onBothStoresWithBlobs(t, func(t *testing.T, w *world, blobDir string) {
		first := packApp(t, "dw100-app", "1.0.0", "DW100")
		second := packApp(t, "dw100-app", "2.0.0", "DW100")
		quota := int64(len(first) + len(second)/2)
		var st storage
		w.op.must(200, "PUT", "/api/v1/tenants/"+w.a.tenant+"/storage-quota", map[string]int64{"storage_quota_bytes": quota}).decode(t, &st)
		if st.QuotaBytes != quota || st.QuotaDefault || st.UsedBytes != 0 {
			t.Errorf("PUT storage-quota = %+v, want quota %d, nothing used", st, quota)
		}
		blobs := "/api/v1/tenants/" + w.a.tenant + "/blobs"
		if r := w.contribA.upload(blobs, first, false); r.Status != http.StatusCreated {
			t.Fatalf("upload within quota = %d %s", r.Status, r.Body)
		}
		for _, chunked := range []bool{false, true} {
			r := w.contribA.upload(blobs, second, chunked)
			if r.Status != http.StatusRequestEntityTooLarge {
				t.Errorf("upload over quota (chunked %v) = %d %s, want 413", chunked, r.Status, r.Body)
				continue
			}
			if p := r.problem(t); p.Code != "storage_quota_exceeded" || !strings.Contains(p.Detail, strconv.FormatInt(quota, 10)) {
				t.Errorf("upload over quota: code %q detail %q, want storage_quota_exceeded naming the quota", p.Code, p.Detail)
			}
		}
		if n := blobFiles(t, blobDir); n != 1 {
			t.Errorf("blob store holds %d files, want 1 (the upload within quota)", n)
		}
		w.readerA.must(200, "GET", "/api/v1/tenants/"+w.a.tenant+"/storage", nil).decode(t, &st)
		if st.UsedBytes != int64(len(first)) || st.Blobs != 1 || st.QuotaBytes != quota {
			t.Errorf("storage = %+v, want %d bytes in 1 blob of %d", st, len(first), quota)
		}
		// B has the default quota and its own usage: the same bytes upload there.
		w.b.admin.must(200, "GET", "/api/v1/tenants/"+w.b.tenant+"/storage", nil).decode(t, &st)
		if !st.QuotaDefault || st.UsedBytes != 0 {
			t.Errorf("B's storage = %+v, want the default quota and nothing used", st)
		}
		for range 2 {
			if r := w.b.admin.upload("/api/v1/tenants/"+w.b.tenant+"/blobs", second, false); r.Status != http.StatusCreated {
				t.Errorf("B's upload = %d %s, want 201", r.Status, r.Body)
			}
		}
		w.b.admin.must(200, "GET", "/api/v1/tenants/"+w.b.tenant+"/storage", nil).decode(t, &st)
		if st.UsedBytes != int64(len(second)) || st.Blobs != 1 {
			t.Errorf("B's storage after the same upload twice = %+v, want %d bytes in 1 blob", st, len(second))
		}
	})
}

type auditEvent struct {
	Action     string `json:"action"`
	ObjectType string `json:"object_type"`
	ObjectID   string `json:"object_id"`
	ActorName  string `json:"actor_name"`
	Detail     string `json:"detail"`
}

func auditLog(t *testing.T, a *api, path string) []auditEvent {
	t.Helper()
	var l struct {
		Items []auditEvent `json:"items"`
	}
	a.must(200, "GET", path, nil).decode(t, &l)
	return l.Items
}

func findEvent(evs []auditEvent, action, objectID string) *auditEvent {
	for i := range evs {
		if evs[i].Action == action && evs[i].ObjectID == objectID {
			return &evs[i]
		}
	}
	return nil
}

// TestBlobs_UploadIsAudited: every accepted upload appends an event with its digest and size
// to the tenant's audit log (OS packages: the platform's), and a quota change to both.
func TestBlobs_UploadIsAudited(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	app := packApp(t, "dw100-app", "1.0.0", "DW100")
	sum := sha256.Sum256(app)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	w.contribA.upload("/api/v1/tenants/"+w.a.tenant+"/blobs", app, false)
	e := findEvent(auditLog(t, w.a.admin, "/api/v1/tenants/"+w.a.tenant+"/audit-events"), "blob.upload", digest)
	if e == nil || e.ActorName != "contributor" || !strings.Contains(e.Detail, strconv.Itoa(len(app))) {
		t.Errorf("tenant audit event for the upload = %+v, want blob.upload of %s by contributor naming %d bytes", e, digest, len(app))
	}
	if e := findEvent(auditLog(t, w.b.admin, "/api/v1/tenants/"+w.b.tenant+"/audit-events"), "blob.upload", digest); e != nil {
		t.Errorf("B's audit log shows A's upload: %+v", e)
	}

	osPkg := packOS(t, "1.0.0")
	osSum := sha256.Sum256(osPkg)
	if r := w.op.upload("/api/v1/platform/blobs", osPkg, false); r.Status != http.StatusCreated {
		t.Fatalf("platform upload = %d %s", r.Status, r.Body)
	}
	if e := findEvent(auditLog(t, w.op, "/api/v1/platform/audit-events"), "blob.upload", "sha256:"+hex.EncodeToString(osSum[:])); e == nil {
		t.Error("no platform audit event for the OS package upload")
	}

	w.op.must(200, "PUT", "/api/v1/tenants/"+w.a.tenant+"/storage-quota", map[string]int64{"storage_quota_bytes": 1 << 30})
	if e := findEvent(auditLog(t, w.a.admin, "/api/v1/tenants/"+w.a.tenant+"/audit-events"), "tenant.storage_quota.put", w.a.tenant); e == nil {
		t.Error("no tenant audit event for the quota change")
	}
	if e := findEvent(auditLog(t, w.op, "/api/v1/platform/audit-events"), "tenant.storage_quota.put", w.a.tenant); e == nil {
		t.Error("no platform audit event for the quota change")
	}
}

// TestBlobs_QuotaIsTheOperators: only the platform operator sets a quota. A tenant's own
// Contributor and Administrator are refused (403, the same for any tenant ID, so it tells
// nothing of other tenants); another tenant's storage is 404; B is unchanged. Rule 3.
func TestBlobs_QuotaIsTheOperators(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		body := map[string]int64{"storage_quota_bytes": 1 << 40}
		quotaA := "/api/v1/tenants/" + w.a.tenant + "/storage-quota"
		quotaB := "/api/v1/tenants/" + w.b.tenant + "/storage-quota"
		var before storage
		w.b.admin.must(200, "GET", "/api/v1/tenants/"+w.b.tenant+"/storage", nil).decode(t, &before)
		for name, try := range map[string]func() resp{
			"A's contributor on A": func() resp { return w.contribA.do("PUT", quotaA, body) },
			"A's admin on A":       func() resp { return w.a.admin.do("PUT", quotaA, body) },
			"A's admin on B":       func() resp { return w.a.admin.do("PUT", quotaB, body) },
			"A's admin on unknown": func() resp {
				return w.a.admin.do("PUT", "/api/v1/tenants/tnt_01aaaaaaaaaaaaaaaaaaaaaaaa/storage-quota", body)
			},
		} {
			r := try()
			if r.Status != http.StatusForbidden || r.problem(t).Code != "platform_operator_required" {
				t.Errorf("%s: PUT storage-quota = %d %s, want 403 platform_operator_required", name, r.Status, r.Body)
			}
		}
		w.a.admin.must(404, "GET", "/api/v1/tenants/"+w.b.tenant+"/storage", nil).problem(t)
		var after storage
		w.b.admin.must(200, "GET", "/api/v1/tenants/"+w.b.tenant+"/storage", nil).decode(t, &after)
		if after != before {
			t.Errorf("B's storage changed by A's requests: %+v, want %+v", after, before)
		}
		// The operator's own mistakes are refused with the field named.
		for _, bad := range []any{map[string]int64{"storage_quota_bytes": -1}, map[string]any{}, map[string]any{"storage_quota_bytes": 1 << 51}} {
			if p := w.op.must(400, "PUT", quotaA, bad).problem(t); p.Field != "storage_quota_bytes" {
				t.Errorf("PUT storage-quota %v: field %q, want storage_quota_bytes", bad, p.Field)
			}
		}
		w.op.must(404, "PUT", "/api/v1/tenants/tnt_01aaaaaaaaaaaaaaaaaaaaaaaa/storage-quota", body).problem(t)
		var st storage
		w.op.must(200, "PUT", quotaA, body).decode(t, &st)
		if st.QuotaBytes != 1<<40 || st.TenantID != w.a.tenant {
			t.Errorf("operator's PUT storage-quota = %+v, want 1 TiB for A", st)
		}
		var ten struct {
			StorageQuotaBytes *int64 `json:"storage_quota_bytes"`
		}
		w.a.admin.must(200, "GET", "/api/v1/tenants/"+w.a.tenant, nil).decode(t, &ten)
		if ten.StorageQuotaBytes == nil || *ten.StorageQuotaBytes != 1<<40 {
			t.Errorf("GET tenant storage_quota_bytes = %v, want 1 TiB", ten.StorageQuotaBytes)
		}
	})
}
