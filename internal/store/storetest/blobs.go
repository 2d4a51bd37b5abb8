package storetest

import (
	"context"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

// blobTests cover storage quotas, the tenants' and the platform's records of blobs, and the
// registry of blob files that garbage collection removes from.
var blobTests = []test{
	{"StorageQuota", testStorageQuota},
	{"UsageCountsUploadsOnly", testBlobUsage},
	{"RecordsListAndDelete", testBlobRecordsList},
	{"TenantIsolation", testBlobIsolation},
	{"PlatformBlobs", testPlatformBlobs},
	{"FilesReferencesAndUnreferenced", testBlobFiles},
	{"TUFFilesCreated", testTUFFilesCreated},
}

func digestN(n int) string { return fmt.Sprintf("sha256:%064x", n) }

func testStorageQuota(h *harness) {
	a := h.tenant("A")
	q := int64(20 << 30)
	at := h.tick()
	got, err := read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) {
		return tx.Tenants().SetStorageQuota(ctx, a.ID, &q, at)
	})
	want := a
	want.StorageQuotaBytes, want.UpdatedAt, want.Version = &q, at, a.Version+1
	wantEqual(h.t, "SetStorageQuota(20 GiB)", got, err, want)
	got, err = read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) { return tx.Tenants().Get(ctx, a.ID) })
	wantEqual(h.t, "Get after SetStorageQuota", got, err, want)
	list, err := read(h, func(ctx context.Context, tx store.Tx) ([]tenant.Tenant, error) {
		return tx.Tenants().List(ctx, store.Page{})
	})
	wantEqual(h.t, "List after SetStorageQuota", list, err, []tenant.Tenant{want})

	at = h.tick()
	got, err = read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) {
		return tx.Tenants().SetStorageQuota(ctx, a.ID, nil, at)
	})
	want.StorageQuotaBytes, want.UpdatedAt, want.Version = nil, at, want.Version+1
	wantEqual(h.t, "SetStorageQuota(nil: the default)", got, err, want)

	_, err = read(h, func(ctx context.Context, tx store.Tx) (tenant.Tenant, error) {
		return tx.Tenants().SetStorageQuota(ctx, "tnt_missing", &q, h.tick())
	})
	wantErr(h.t, "SetStorageQuota(unknown tenant)", err, store.ErrNotFound)
}

func testBlobUsage(h *harness) {
	a := h.tenant("A")
	usage := func() (store.BlobUsage, error) {
		return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (store.BlobUsage, error) { return tt.Blobs().Usage(ctx) })
	}
	u, err := usage()
	wantEqual(h.t, "Usage() of a new tenant", u, err, store.BlobUsage{})

	h.mustIn("Add 1", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), digestN(1), 100, h.tick()) })
	h.mustIn("Add 1 again", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), digestN(1), 100, h.tick()) })
	h.mustIn("Add 2", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), digestN(2), 20, h.tick()) })
	// An OS package the platform names for the tenant is not the tenant's upload.
	h.mustIn("AddPlatform 3", a.ID, func(tt store.TenantTx) error { return tt.Blobs().AddPlatform(h.ctx(), digestN(3), 5000, h.tick()) })
	u, err = usage()
	wantEqual(h.t, "Usage() after two uploads (one twice) and an OS package", u, err, store.BlobUsage{Bytes: 120, Count: 2})

	// The platform naming an uploaded blob keeps it counted; uploading a platform record
	// counts it.
	h.mustIn("AddPlatform 1", a.ID, func(tt store.TenantTx) error { return tt.Blobs().AddPlatform(h.ctx(), digestN(1), 100, h.tick()) })
	at := h.tick()
	h.mustIn("Add 3", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), digestN(3), 5000, at) })
	u, err = usage()
	wantEqual(h.t, "Usage() after the tenant uploads the OS package", u, err, store.BlobUsage{Bytes: 5120, Count: 3})
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (store.BlobRecord, error) {
		return tt.Blobs().Get(ctx, digestN(3))
	})
	wantEqual(h.t, "Get(3)", got, err, store.BlobRecord{Digest: digestN(3), Size: 5000, At: at})

	wantErr(h.t, "AddPlatform(other size)", h.in(a.ID, func(tt store.TenantTx) error {
		return tt.Blobs().AddPlatform(h.ctx(), digestN(2), 21, h.tick())
	}), store.ErrConflict)
	h.mustIn("Lock", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Lock(h.ctx()) })
	wantErr(h.t, "Lock(unknown tenant)", h.in("tnt_missing", func(tt store.TenantTx) error {
		return tt.Blobs().Lock(h.ctx())
	}), store.ErrNotFound)
}

func testBlobRecordsList(h *harness) {
	a := h.tenant("A")
	var want []store.BlobRecord
	for i := 1; i <= 5; i++ {
		r := store.BlobRecord{Digest: digestN(i), Size: int64(i), Platform: i == 4, At: h.tick()}
		want = append(want, r)
	}
	for i := len(want) - 1; i >= 0; i-- { // reverse order: the list must sort
		r := want[i]
		h.mustIn("Add", a.ID, func(tt store.TenantTx) error {
			if r.Platform {
				return tt.Blobs().AddPlatform(h.ctx(), r.Digest, r.Size, r.At)
			}
			return tt.Blobs().Add(h.ctx(), r.Digest, r.Size, r.At)
		})
	}
	checkList(h, "Blobs().List", want, func(r store.BlobRecord) string { return r.Digest }, func(p store.Page) ([]store.BlobRecord, error) {
		return readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]store.BlobRecord, error) {
			return tt.Blobs().List(ctx, p)
		})
	})
	h.mustIn("Delete(2)", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Delete(h.ctx(), digestN(2)) })
	wantErr(h.t, "Delete(2) again", h.in(a.ID, func(tt store.TenantTx) error { return tt.Blobs().Delete(h.ctx(), digestN(2)) }), store.ErrNotFound)
	_, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (int64, error) { return tt.Blobs().Size(ctx, digestN(2)) })
	wantErr(h.t, "Size(deleted)", err, store.ErrNotFound)
}

// testBlobIsolation attacks rule 3: tenant B reaches none of A's blob records.
func testBlobIsolation(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	at := h.tick()
	h.mustIn("A: Add", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), digestN(1), 10, at) })
	_, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (store.BlobRecord, error) {
		return tt.Blobs().Get(ctx, digestN(1))
	})
	wantErr(h.t, "B: Get(A's blob)", err, store.ErrNotFound)
	wantErr(h.t, "B: Delete(A's blob)", h.in(b.ID, func(tt store.TenantTx) error { return tt.Blobs().Delete(h.ctx(), digestN(1)) }), store.ErrNotFound)
	list, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) ([]store.BlobRecord, error) {
		return tt.Blobs().List(ctx, store.Page{})
	})
	wantEmpty(h.t, "B: List", list, err)
	u, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (store.BlobUsage, error) { return tt.Blobs().Usage(ctx) })
	wantEqual(h.t, "B: Usage", u, err, store.BlobUsage{})
	// B recording the same content is its own record; A's is unchanged.
	h.mustIn("B: Add same digest", b.ID, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), digestN(1), 10, h.tick()) })
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (store.BlobRecord, error) {
		return tt.Blobs().Get(ctx, digestN(1))
	})
	wantEqual(h.t, "A: Get after B's Add", got, err, store.BlobRecord{Digest: digestN(1), Size: 10, At: at})
}

func testPlatformBlobs(h *harness) {
	at := h.tick()
	h.must("PlatformBlobs().Add", func(tx store.Tx) error { return tx.PlatformBlobs().Add(h.ctx(), digestN(7), 70, h.tick()) })
	h.must("PlatformBlobs().Add again", func(tx store.Tx) error { return tx.PlatformBlobs().Add(h.ctx(), digestN(7), 70, at) })
	wantErr(h.t, "PlatformBlobs().Add(other size)", h.tx(func(tx store.Tx) error { return tx.PlatformBlobs().Add(h.ctx(), digestN(7), 71, h.tick()) }), store.ErrConflict)
	got, err := read(h, func(ctx context.Context, tx store.Tx) ([]store.BlobRecord, error) {
		return tx.PlatformBlobs().List(ctx, store.Page{})
	})
	wantEqual(h.t, "PlatformBlobs().List", got, err, []store.BlobRecord{{Digest: digestN(7), Size: 70, Platform: true, At: at}})
	h.must("PlatformBlobs().Delete", func(tx store.Tx) error { return tx.PlatformBlobs().Delete(h.ctx(), digestN(7)) })
	wantErr(h.t, "PlatformBlobs().Delete again", h.tx(func(tx store.Tx) error { return tx.PlatformBlobs().Delete(h.ctx(), digestN(7)) }), store.ErrNotFound)
}

func testBlobFiles(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	old := h.tick()
	cutoff := h.tick()
	recent := h.tick()
	for i, at := range map[int]time.Time{1: old, 2: old, 3: old, 4: recent} {
		h.must("BlobFiles().Hold", func(tx store.Tx) error { return tx.BlobFiles().Hold(h.ctx(), digestN(i), int64(i), at) })
	}
	// 1 is A's and B's, 2 the platform's; 3 is nobody's and old; 4 nobody's but recent.
	h.mustIn("A: Add 1", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), digestN(1), 1, h.tick()) })
	h.mustIn("B: Add 1", b.ID, func(tt store.TenantTx) error { return tt.Blobs().AddPlatform(h.ctx(), digestN(1), 1, h.tick()) })
	h.must("PlatformBlobs().Add 2", func(tx store.Tx) error { return tx.PlatformBlobs().Add(h.ctx(), digestN(2), 2, h.tick()) })

	refs := func(d string) (int, error) {
		return read(h, func(ctx context.Context, tx store.Tx) (int, error) { return tx.BlobFiles().References(ctx, d) })
	}
	for d, want := range map[string]int{digestN(1): 2, digestN(2): 1, digestN(3): 0} {
		n, err := refs(d)
		wantEqual(h.t, "References("+d[7:9]+")", n, err, want)
	}
	unref := func(before time.Time) ([]store.BlobRecord, error) {
		return read(h, func(ctx context.Context, tx store.Tx) ([]store.BlobRecord, error) {
			return tx.BlobFiles().Unreferenced(ctx, before, store.Page{})
		})
	}
	got, err := unref(cutoff)
	wantEqual(h.t, "Unreferenced(cutoff)", got, err, []store.BlobRecord{{Digest: digestN(3), Size: 3, At: old}})
	got, err = unref(h.tick())
	wantEqual(h.t, "Unreferenced(later)", got, err, []store.BlobRecord{{Digest: digestN(3), Size: 3, At: old}, {Digest: digestN(4), Size: 4, At: recent}})

	// Holding again refreshes the time: a re-upload starts a new grace period.
	again := h.tick()
	h.must("Hold 3 again", func(tx store.Tx) error { return tx.BlobFiles().Hold(h.ctx(), digestN(3), 3, again) })
	got, err = unref(cutoff)
	wantEmpty(h.t, "Unreferenced(cutoff) after a re-upload", got, err)

	// Recording a blob for a tenant records (holds) its file too.
	at9 := h.tick()
	h.mustIn("A: Add 9", a.ID, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), digestN(9), 9, at9) })
	rec, err := read(h, func(ctx context.Context, tx store.Tx) (store.BlobRecord, error) {
		return tx.BlobFiles().Lock(ctx, digestN(9))
	})
	wantEqual(h.t, "Lock(9) after Blobs().Add", rec, err, store.BlobRecord{Digest: digestN(9), Size: 9, At: at9})

	rec, err = read(h, func(ctx context.Context, tx store.Tx) (store.BlobRecord, error) {
		return tx.BlobFiles().Lock(ctx, digestN(4))
	})
	wantEqual(h.t, "Lock(4)", rec, err, store.BlobRecord{Digest: digestN(4), Size: 4, At: recent})
	h.must("Delete(4)", func(tx store.Tx) error { return tx.BlobFiles().Delete(h.ctx(), digestN(4)) })
	_, err = read(h, func(ctx context.Context, tx store.Tx) (store.BlobRecord, error) {
		return tx.BlobFiles().Lock(ctx, digestN(4))
	})
	wantErr(h.t, "Lock(deleted)", err, store.ErrNotFound)
	wantErr(h.t, "Delete(deleted)", h.tx(func(tx store.Tx) error { return tx.BlobFiles().Delete(h.ctx(), digestN(4)) }), store.ErrNotFound)
}

func testTUFFilesCreated(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	at1, at2 := h.tick(), h.tick()
	h.mustIn("Put 1.apps.json", a.ID, func(tt store.TenantTx) error {
		return tt.TUFFiles().Put(h.ctx(), store.File{Name: "1.apps.json", Data: []byte("a1")}, at1)
	})
	h.mustIn("Put 2.apps.json", a.ID, func(tt store.TenantTx) error {
		return tt.TUFFiles().Put(h.ctx(), store.File{Name: "2.apps.json", Data: []byte("a2")}, at2)
	})
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (map[string]time.Time, error) {
		return tt.TUFFiles().Created(ctx)
	})
	wantEqual(h.t, "A: Created", got, err, map[string]time.Time{"1.apps.json": at1.UTC(), "2.apps.json": at2.UTC()})
	got, err = readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (map[string]time.Time, error) {
		return tt.TUFFiles().Created(ctx)
	})
	wantEqual(h.t, "B: Created", got, err, map[string]time.Time{})
}
