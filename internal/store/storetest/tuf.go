package storetest

import (
	"context"

	"github.com/moat-iot/moat/internal/audit"
	"github.com/moat-iot/moat/internal/ident"

	"github.com/moat-iot/moat/internal/store"
	"github.com/moat-iot/moat/internal/tenant"
)

var tufTests = []test{
	{"FilesImmutableButTimestamp", testTUFFilesImmutable},
	{"FilesAllAndIsolation", testTUFFilesAllAndIsolation},
	{"PlatformRootsChain", testPlatformRootsChain},
	{"BlobsPerTenant", testBlobsPerTenant},
	{"PlatformAudit", testPlatformAudit},
}

func (h *harness) putTUF(tid tenant.ID, name, data string) error {
	return h.in(tid, func(tt store.TenantTx) error {
		return tt.TUFFiles().Put(h.ctx(), store.File{Name: name, Data: []byte(data)}, h.tick())
	})
}

func testTUFFilesImmutable(h *harness) {
	a := h.tenant("A")
	if err := h.putTUF(a.ID, "1.targets.json", "v1"); err != nil {
		h.t.Fatalf("Put(1.targets.json) = %v", err)
	}
	if err := h.putTUF(a.ID, "1.targets.json", "v1"); err != nil {
		h.t.Errorf("Put(same bytes again) = %v, want nil (idempotent)", err)
	}
	wantErr(h.t, "Put(1.targets.json, other bytes)", h.putTUF(a.ID, "1.targets.json", "evil"), store.ErrConflict)
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]byte, error) {
		return tt.TUFFiles().Get(ctx, "1.targets.json")
	})
	wantEqual(h.t, "Get(1.targets.json) after refused overwrite", string(got), err, "v1")

	for _, ts := range []string{"ts1", "ts2"} {
		if err := h.putTUF(a.ID, store.TimestampFile, ts); err != nil {
			h.t.Fatalf("Put(timestamp.json %s) = %v", ts, err)
		}
	}
	got, err = readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]byte, error) {
		return tt.TUFFiles().Get(ctx, store.TimestampFile)
	})
	wantEqual(h.t, "Get(timestamp.json) after replace", string(got), err, "ts2")
	if err := h.putTUF(a.ID, "2.snapshot.json", ""); err == nil {
		h.t.Error("Put(empty file) = nil, want an error")
	}
	_, err = readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]byte, error) {
		return tt.TUFFiles().Get(ctx, "9.targets.json")
	})
	wantErr(h.t, "Get(missing)", err, store.ErrNotFound)
}

func testTUFFilesAllAndIsolation(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	for _, f := range []store.File{{Name: "2.apps.json", Data: []byte("a2")}, {Name: "1.root.json", Data: []byte("r1")}} {
		if err := h.putTUF(a.ID, f.Name, string(f.Data)); err != nil {
			h.t.Fatal(err)
		}
	}
	all, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]store.File, error) {
		return tt.TUFFiles().All(ctx)
	})
	wantEqual(h.t, "A: TUFFiles().All", all, err, []store.File{{Name: "1.root.json", Data: []byte("r1")}, {Name: "2.apps.json", Data: []byte("a2")}})

	// B sees none of A's files, and its own file of the same name is its own.
	_, err = readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) ([]byte, error) {
		return tt.TUFFiles().Get(ctx, "2.apps.json")
	})
	wantErr(h.t, "B: Get(A's 2.apps.json)", err, store.ErrNotFound)
	bAll, err := readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) ([]store.File, error) {
		return tt.TUFFiles().All(ctx)
	})
	wantEmpty(h.t, "B: TUFFiles().All", bAll, err)
	if err := h.putTUF(b.ID, "2.apps.json", "b2"); err != nil {
		h.t.Errorf("B: Put(2.apps.json) = %v, want nil (names are per tenant)", err)
	}
	got, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]byte, error) {
		return tt.TUFFiles().Get(ctx, "2.apps.json")
	})
	wantEqual(h.t, "A: Get(2.apps.json) after B's put", string(got), err, "a2")
}

func testPlatformRootsChain(h *harness) {
	appendRoot := func(v int64, data string) error {
		return h.tx(func(tx store.Tx) error { return tx.PlatformRoots().Append(h.ctx(), v, []byte(data), h.tick()) })
	}
	wantErr(h.t, "Append(2) before 1", appendRoot(2, "r2"), store.ErrConflict)
	if err := appendRoot(1, "r1"); err != nil {
		h.t.Fatal(err)
	}
	if err := appendRoot(2, "r2"); err != nil {
		h.t.Fatal(err)
	}
	wantErr(h.t, "Append(2) again", appendRoot(2, "evil"), store.ErrConflict)
	wantErr(h.t, "Append(4) with a gap", appendRoot(4, "r4"), store.ErrConflict)
	got, err := read(h, func(ctx context.Context, tx store.Tx) ([][]byte, error) { return tx.PlatformRoots().List(ctx) })
	wantEqual(h.t, "PlatformRoots().List", got, err, [][]byte{[]byte("r1"), []byte("r2")})
}

func testBlobsPerTenant(h *harness) {
	a, b := h.tenant("A"), h.tenant("B")
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	add := func(tid tenant.ID, size int64) error {
		return h.in(tid, func(tt store.TenantTx) error { return tt.Blobs().Add(h.ctx(), d, size, h.tick()) })
	}
	if err := add(a.ID, 10); err != nil {
		h.t.Fatal(err)
	}
	if err := add(a.ID, 10); err != nil {
		h.t.Errorf("Blobs().Add again = %v, want nil", err)
	}
	wantErr(h.t, "Blobs().Add(other size)", add(a.ID, 11), store.ErrConflict)
	size, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) (int64, error) { return tt.Blobs().Size(ctx, d) })
	wantEqual(h.t, "A: Blobs().Size", size, err, int64(10))
	_, err = readIn(h, b.ID, func(ctx context.Context, tt store.TenantTx) (int64, error) { return tt.Blobs().Size(ctx, d) })
	wantErr(h.t, "B: Blobs().Size(A's blob)", err, store.ErrNotFound)
}

func testPlatformAudit(h *harness) {
	a := h.tenant("A")
	e := audit.Event{ID: ident.New(audit.IDPrefix, h.tick()), At: h.tick().UTC(), ActorID: "usr_x", ActorName: "platform-operator",
		TokenID: "tok_x", Action: "tuf.root.put", ObjectType: "tuf_root", ObjectID: "1", RemoteAddr: "127.0.0.1:1", RequestID: "r", Detail: "root v1"}
	h.must("PlatformAudit().Append", func(tx store.Tx) error { return tx.PlatformAudit().Append(h.ctx(), e) })
	got, err := read(h, func(ctx context.Context, tx store.Tx) ([]audit.Event, error) {
		return tx.PlatformAudit().List(ctx, store.Page{})
	})
	wantEqual(h.t, "PlatformAudit().List", got, err, []audit.Event{e})
	// Platform events are not in any tenant's log, and tenant events not in the platform's.
	list, err := readIn(h, a.ID, func(ctx context.Context, tt store.TenantTx) ([]audit.Event, error) {
		return tt.Audit().List(ctx, store.Page{})
	})
	wantEmpty(h.t, "A: Audit().List", list, err)
}
