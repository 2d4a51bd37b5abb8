package tuf

import (
	"crypto/ecdsa"
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/target"
)

// VerifySignedByAny checks that targets metadata (top-level targets or apps) carries a
// valid signature by at least one of pubs, with go-tuf's own verification. Callers use it
// to decide whom they trust beyond what the repository delegates: the server to require an
// *active* registered key, a signer to build only on metadata it signed itself.
func VerifySignedByAny(t *metadata.Metadata[metadata.TargetsType], pubs []*ecdsa.PublicKey) error {
	if len(pubs) == 0 {
		return fmt.Errorf("%w: no key to verify with", ErrSignature)
	}
	d := metadata.Targets(time.Now().Add(time.Hour))
	d.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}}
	role := metadata.DelegatedRole{Name: t.Signed.Type, Threshold: 1, Terminating: true, Paths: []string{"*"}}
	for _, p := range pubs {
		k, err := tufKey(p)
		if err != nil {
			return err
		}
		id, err := k.ID()
		if err != nil {
			return err
		}
		d.Signed.Delegations.Keys[id] = k
		role.KeyIDs = append(role.KeyIDs, id)
	}
	d.Signed.Delegations.Roles = []metadata.DelegatedRole{role}
	if err := d.VerifyDelegate(role.Name, t); err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return nil
}

// TargetFilesOf returns the targets of metadata as TargetFiles, for re-signing them.
func TargetFilesOf(t *metadata.Metadata[metadata.TargetsType]) (map[string]TargetFile, error) {
	out := map[string]TargetFile{}
	for path, tf := range t.Signed.Targets {
		h, ok := tf.Hashes["sha256"]
		if !ok {
			return nil, fmt.Errorf("%w: target %s has no sha256", ErrMalformed, path)
		}
		var raw []byte
		if tf.Custom != nil {
			raw = *tf.Custom
		}
		custom, err := target.DecodeCustom(path, raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		out[path] = TargetFile{Length: tf.Length, SHA256: h.String(), Custom: custom}
	}
	return out, nil
}
