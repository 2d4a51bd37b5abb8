// Package tuf is one tenant's view of moat's TUF image repository (docs/design/updates.md),
// held in memory: the platform root chain, the tenant's top-level targets.json, its apps.json,
// and the snapshot and timestamp the server signs over them, served under the consistent-
// snapshot names any conforming TUF client (go-tuf, python-tuf, tuf-js) asks for.
//
// The signing split is Uptane's (DESIGN rule 2): the platform root key (offline) signs
// root.json; the platform OS key (offline) signs targets.json, which lists OS images under
// "os/" and delegates the paths AppsPaths, terminating, to the tenant's image signing keys;
// the tenant key (offline) signs apps.json; only snapshot.json and timestamp.json are signed
// online. NewRoot, SignRoot, SignTargets and SignApps run where the offline keys are (the
// CLI); Open, Restore, the Put methods, Publish, RefreshTimestamp, File and Files run on
// the server.
//
// What it trusts: the first root it is opened with (1.root.json, self-signed), and from
// there only signatures verified by go-tuf's own Metadata.VerifyDelegate. What it enforces:
//   - root rotation needs a threshold of the old root keys and of the new ones, one version
//     at a time; attacked by TestTUF_RootRotation;
//   - targets.json only from the root's targets keys, apps.json only from a threshold of
//     the keys the current targets delegates "apps" to, so a server holding only the
//     online key cannot add software; attacked by TestTUF_RejectsArbitrarySoftware and
//     TestTUF_TenantKeyRotation;
//   - versions only advance, and the snapshot records each role's version, length and hash;
//     attacked (with a real go-tuf client) by TestTUF_RejectsRollback and
//     TestTUF_RejectsMixAndMatch;
//   - expired metadata is not published, and the timestamp is re-signed before it expires;
//     TestTUF_RejectsFreeze shows a client refuses a stale one;
//   - target paths are canonical and inside their role's namespace ("os/" for targets,
//     AppsPaths for apps); attacked by TestTUF_RejectsPathTraversal and FuzzPutApps;
//   - bad input gets an error wrapping ErrSignature, ErrVersion, ErrExpired, ErrPath or
//     ErrMalformed and leaves the View unchanged (rule 5).
//
// Clients bound what they download (TestTUF_RejectsEndlessData shows go-tuf's limits hold
// against this layout); target blobs are served by the blob store, not by this package.
//
// Persistence: a View lives in memory; the server keeps it across restarts by storing what
// Files returns and calling Restore at start (then Publish, so snapshot and timestamp go on
// from the stored versions and clients see no rollback). Every name but timestamp.json
// (N.root.json, N.targets.json, N.apps.json, N.snapshot.json) is immutable once served: after
// each Put, Publish or RefreshTimestamp the server stores the names it has not stored yet
// and overwrites timestamp.json, nothing else. Restore trusts the store no more than a
// client trusts a mirror: it verifies the root chain from 1.root.json, every signature, and
// that snapshot and timestamp name exactly the stored files (ErrVersion, ErrSignature,
// ErrMalformed otherwise); attacked by TestRestore_Refuses and FuzzRestore. It cannot tell
// that a file was deleted together with everything naming it, so the store must keep what
// it is given; clients that saw newer versions still refuse older ones.
//
// Concurrency: a View is safe for concurrent use; one mutex guards it, File and Files take
// it shared. A View keeps every version it published, so clients on an older snapshot can
// finish.
package tuf
