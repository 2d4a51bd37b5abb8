package tuf

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// historyRepo takes a repo through root rotations (v2 rotates the root keys and the OS key),
// targets v1-v3, apps v1-v3 (v3 after a tenant key rotation) and several Publish and
// RefreshTimestamp calls: snapshots 1-4, timestamp version 6.
func historyRepo(t *testing.T) *repo {
	t.Helper()
	r := newRepo(t)
	online := signerOf(t, r.onlineKey)
	rootKeys := []*ecdsa.PrivateKey{newKey(t), newKey(t), newKey(t)}
	newOS := newKey(t)
	for v := int64(2); v <= 3; v++ {
		signers := []signature.Signer{signerOf(t, rootKeys[0]), signerOf(t, rootKeys[1])}
		if v == 2 {
			signers = append(signers, signerOf(t, r.rootKey))
		}
		root := must(SignRoot(signers, v, r.now.Add(year), RootKeys{
			Root: pubs(rootKeys), RootThreshold: 2, OS: &newOS.PublicKey, Online: &r.onlineKey.PublicKey,
		}))(t)
		if err := r.view.PutRoot(root); err != nil {
			t.Fatalf("PutRoot(v%d) = %v", v, err)
		}
	}
	r.targetsSigner = newOS
	r.putTargets()
	r.appsTargets["apps/dw100-app/1.1.0"] = r.addBlob("apps/dw100-app/1.1.0", []byte("dw100 app 1.1.0"))
	r.putApps()
	r.publish()
	if err := r.view.RefreshTimestamp(online, r.now.Add(20*time.Hour), day); err != nil {
		t.Fatalf("RefreshTimestamp = %v", err)
	}
	tenant := newKey(t)
	r.targetsKeys = []*ecdsa.PublicKey{&tenant.PublicKey}
	r.putTargets()
	r.publish() // apps v2 no longer verifies under targets v3
	r.appsSigner = tenant
	r.putApps()
	r.publish()
	if err := r.view.RefreshTimestamp(online, r.now.Add(20*time.Hour), day); err != nil {
		t.Fatalf("RefreshTimestamp = %v", err)
	}
	return r
}

func names(files []File) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Name
	}
	return out
}

// restoreErr: every refusal of Restore wraps one of these.
func restoreErr(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrSignature) || errors.Is(err, ErrVersion) || errors.Is(err, ErrPath)
}

// TestRestore_RoundTrip: a restored view serves every file byte for byte, continues the
// versions, and a client that refreshed before the restart refreshes after it.
func TestRestore_RoundTrip(t *testing.T) {
	t.Parallel()
	r := historyRepo(t)
	dir := t.TempDir()
	if _, err := r.install(dir, "apps/dw100-app/1.1.0"); err != nil {
		t.Fatal(err)
	}
	files := r.view.Files()
	want := []string{
		"1.root.json", "2.root.json", "3.root.json", "1.targets.json", "2.targets.json", "3.targets.json",
		"1.apps.json", "2.apps.json", "3.apps.json",
		"1.snapshot.json", "2.snapshot.json", "3.snapshot.json", "4.snapshot.json", "timestamp.json",
	}
	if diff := cmp.Diff(want, names(files)); diff != "" {
		t.Fatalf("Files() names (-want +got):\n%s", diff)
	}
	v, err := Restore(files)
	if err != nil {
		t.Fatalf("Restore(Files()) = %v", err)
	}
	for _, f := range files {
		if got, err := v.File(f.Name); err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("restored File(%s) = %d bytes, %v; want the %d bytes served before", f.Name, len(got), err, len(f.Data))
		}
	}
	if diff := cmp.Diff(files, v.Files()); diff != "" {
		t.Errorf("restored Files() (-want +got):\n%s", diff)
	}
	for _, name := range []string{"4.root.json", "4.targets.json", "4.apps.json", "5.snapshot.json"} {
		if _, err := v.File(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("restored File(%s) = %v, want ErrNotFound", name, err)
		}
	}

	r.setView(v)
	r.publish()
	up := r.client(dir)
	if err := up.Refresh(); err != nil {
		t.Fatalf("client Refresh against the restored view = %v", err)
	}
	set := up.GetTrustedMetadataSet()
	if got := set.Snapshot.Signed.Version; got != 5 {
		t.Errorf("snapshot version after restart = %d, want 5", got)
	}
	if got := set.Timestamp.Signed.Version; got != 7 {
		t.Errorf("timestamp version after restart = %d, want 7", got)
	}
	// The restored view takes new software as before.
	r.appsTargets["apps/dw100-app/1.2.0"] = r.addBlob("apps/dw100-app/1.2.0", []byte("dw100 app 1.2.0"))
	r.putApps()
	r.publish()
	if got, err := r.install(dir, "apps/dw100-app/1.2.0"); err != nil || string(got) != "dw100 app 1.2.0" {
		t.Errorf("install after restart = %q, %v", got, err)
	}
}

// TestRestore_KeepsRotationState: after a tenant key rotation the current apps no longer
// verifies under the current targets; Restore keeps that state, and the restored view
// refuses the old key and accepts the new one, as the view before the restart would.
func TestRestore_KeepsRotationState(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	tenant := newKey(t)
	r.targetsKeys = []*ecdsa.PublicKey{&tenant.PublicKey}
	r.putTargets()
	r.publish()
	v, err := Restore(r.view.Files())
	if err != nil {
		t.Fatalf("Restore(after tenant key rotation) = %v", err)
	}
	if diff := cmp.Diff(r.view.Files(), v.Files()); diff != "" {
		t.Errorf("restored Files() (-want +got):\n%s", diff)
	}
	r.setView(v)
	oldSigned := must(SignApps(signerOf(t, r.appKey), 2, r.now.Add(year), r.appsTargets))(t)
	if err := v.PutApps(oldSigned); !errors.Is(err, ErrSignature) {
		t.Errorf("restored PutApps(rotated-out key) = %v, want ErrSignature", err)
	}
	r.appsSigner = tenant
	r.putApps()
	r.publish()
	if _, err := r.install(t.TempDir(), appPath); err != nil {
		t.Errorf("install after restart and re-signing = %v", err)
	}

	// A root that rotates the OS key before targets is re-signed: restored, and Publish
	// refuses on both sides of the restart.
	newOS := newKey(t)
	root2 := must(SignRoot([]signature.Signer{signerOf(t, r.rootKey)}, 2, r.now.Add(year), RootKeys{
		Root: []*ecdsa.PublicKey{&r.rootKey.PublicKey}, RootThreshold: 1, OS: &newOS.PublicKey, Online: &r.onlineKey.PublicKey,
	}))(t)
	if err := v.PutRoot(root2); err != nil {
		t.Fatal(err)
	}
	v2, err := Restore(v.Files())
	if err != nil {
		t.Fatalf("Restore(after OS key rotation) = %v", err)
	}
	for name, view := range map[string]*View{"before": v, "after": v2} {
		if err := view.Publish(signerOf(t, r.onlineKey), r.now, 7*day, day); !errors.Is(err, ErrSignature) {
			t.Errorf("Publish %s restart with targets of the old OS key = %v, want ErrSignature", name, err)
		}
	}
}

// otherTenant is another tenant's view on the same server: the same roots and online key,
// its own delegation and apps, published n times.
func otherTenant(t *testing.T, r *repo, n int) *View {
	t.Helper()
	files := r.view.Files()
	v := must(Open(files[0].Data))(t)
	for _, f := range files[1:] {
		if role, _, _ := parseName(f.Name); role == metadata.ROOT {
			if err := v.PutRoot(f.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	tenant := newKey(t)
	if err := v.PutTargets(must(SignTargets(signerOf(t, r.targetsSigner), 1, r.now.Add(year), nil, []*ecdsa.PublicKey{&tenant.PublicKey}))(t)); err != nil {
		t.Fatal(err)
	}
	if err := v.PutApps(must(SignApps(signerOf(t, tenant), 1, r.now.Add(year), nil))(t)); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := v.Publish(signerOf(t, r.onlineKey), r.now, 7*day, day); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func without(files []File, name string) []File {
	return slices.DeleteFunc(slices.Clone(files), func(f File) bool { return f.Name == name })
}

func replaced(files []File, name string, data []byte) []File {
	out := slices.Clone(files)
	for i := range out {
		if out[i].Name == name {
			out[i].Data = data
		}
	}
	return out
}

func fileData(files []File, name string) []byte {
	for _, f := range files {
		if f.Name == name {
			return f.Data
		}
	}
	return nil
}

// signTimestamp signs a timestamp of version naming snapshot snapVersion as meta.
func signTimestamp(t *testing.T, key *ecdsa.PrivateKey, version int64, expires time.Time, meta *metadata.MetaFiles) []byte {
	t.Helper()
	ts := metadata.Timestamp(expiry(expires))
	ts.Signed.Version = version
	ts.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": meta}
	must(ts.Sign(signerOf(t, key)))(t)
	return must(ts.ToBytes(false))(t)
}

// TestRestore_Refuses: Restore verifies what it is given as a client would (rule 5): a
// broken root chain, tampered bytes, mixed snapshots and timestamps, and bad names.
func TestRestore_Refuses(t *testing.T) {
	t.Parallel()
	r := historyRepo(t)
	files := r.view.Files()
	other := otherTenant(t, r, 4).Files()
	evil := newKey(t)
	snap3 := fileData(files, "3.snapshot.json")
	snap4 := fileData(files, "4.snapshot.json")
	wrongHash := metaFile(4, append(bytes.Clone(snap4), ' '))
	wrongHash.Length = int64(len(snap4))
	cases := map[string]struct {
		files []File
		want  error
	}{
		"empty":                        {nil, ErrVersion},
		"no 1.root.json":               {without(files, "1.root.json"), ErrVersion},
		"root chain gap":               {without(files, "2.root.json"), ErrVersion},
		"root under another name":      {replaced(files, "3.root.json", fileData(files, "2.root.json")), ErrVersion},
		"timestamp names older":        {replaced(files, "timestamp.json", signTimestamp(t, r.onlineKey, 99, r.now.Add(day), metaFile(3, snap3))), ErrVersion},
		"timestamp other hash":         {replaced(files, "timestamp.json", signTimestamp(t, r.onlineKey, 99, r.now.Add(day), wrongHash)), ErrSignature},
		"timestamp by unknown key":     {replaced(files, "timestamp.json", signTimestamp(t, evil, 99, r.now.Add(day), metaFile(4, snap4))), ErrSignature},
		"timestamp missing":            {without(files, "timestamp.json"), ErrMalformed},
		"latest snapshot missing":      {without(files, "4.snapshot.json"), ErrVersion},
		"snapshot gap":                 {without(files, "2.snapshot.json"), ErrVersion},
		"older snapshot as latest":     {replaced(files, "4.snapshot.json", snap3), ErrVersion},
		"snapshot of another tenant":   {replaced(files, "4.snapshot.json", fileData(other, "4.snapshot.json")), ErrSignature},
		"snapshot and timestamp mixed": {replaced(replaced(files, "4.snapshot.json", fileData(other, "4.snapshot.json")), "timestamp.json", fileData(other, "timestamp.json")), ErrSignature},
		"apps named by snapshot gone":  {without(files, "3.apps.json"), ErrVersion},
		"apps of another tenant":       {replaced(files, "1.apps.json", fileData(other, "1.apps.json")), ErrSignature},
		"targets of another tenant":    {replaced(files, "1.targets.json", fileData(other, "1.targets.json")), ErrSignature},
		"apps by undelegated key": {append(slices.Clone(files), File{
			Name: "4.apps.json", Data: must(SignApps(signerOf(t, evil), 4, r.now.Add(year), nil))(t),
		}), ErrSignature},
		"targets by online key": {append(slices.Clone(files), File{
			Name: "4.targets.json", Data: must(SignTargets(signerOf(t, r.onlineKey), 4, r.now.Add(year), nil, []*ecdsa.PublicKey{&evil.PublicKey}))(t),
		}), ErrSignature},
		"duplicate name": {append(slices.Clone(files), files[3]), ErrMalformed},
	}
	for _, name := range []string{"root.json", "targets.json", "1.timestamp.json", "1.other.json", "01.root.json", "0.apps.json", "../1.root.json", "1.root.json.bak", ""} {
		cases["unknown name "+name] = struct {
			files []File
			want  error
		}{append(slices.Clone(files), File{Name: name, Data: files[0].Data}), ErrMalformed}
	}
	for name, c := range cases {
		if _, err := Restore(c.files); !errors.Is(err, c.want) {
			t.Errorf("%s: Restore = %v, want %v", name, err, c.want)
		}
	}
	// One byte changed anywhere in any file.
	for _, f := range files {
		for _, at := range []int{1, len(f.Data) / 3, len(f.Data) / 2, 2 * len(f.Data) / 3, len(f.Data) - 5} {
			b := bytes.Clone(f.Data)
			b[at] ^= 1
			if _, err := Restore(replaced(files, f.Name, b)); !restoreErr(err) {
				t.Errorf("Restore(%s with byte %d flipped) = %v, want a refusal", f.Name, at, err)
			}
		}
	}
}

// TestRestore_AnyOrder: the order of the files does not matter.
func TestRestore_AnyOrder(t *testing.T) {
	t.Parallel()
	r := historyRepo(t)
	files := r.view.Files()
	want := must(Restore(files))(t).Files()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5 {
		shuffled := slices.Clone(files)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		v, err := Restore(shuffled)
		if err != nil {
			t.Fatalf("Restore(shuffle %d) = %v", i, err)
		}
		if diff := cmp.Diff(want, v.Files()); diff != "" {
			t.Errorf("Restore(shuffle %d).Files() (-ordered +shuffled):\n%s", i, diff)
		}
	}
}

// TestRestore_CopiesInput: changing the caller's bytes after Restore changes nothing served.
func TestRestore_CopiesInput(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	files := r.view.Files()
	want := r.view.Files()
	v := must(Restore(files))(t)
	for _, f := range files {
		f.Data[0] ^= 1
	}
	if diff := cmp.Diff(want, v.Files()); diff != "" {
		t.Errorf("Files() after the input changed (-want +got):\n%s", diff)
	}
}
