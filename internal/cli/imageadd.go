package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

// appsState is the tenant's current apps.json as the server serves it.
type appsState struct {
	version int64
	meta    *metadata.Metadata[metadata.TargetsType]
}

// currentApps follows timestamp.json and the snapshot it names to the current apps.json.
// It trusts nothing it reads: the caller verifies the signature before building on it.
func currentApps(ctx context.Context, c *client.Client, tenant string) (appsState, error) {
	tsRaw, err := c.GetTenantTUFFile(ctx, tenant, "timestamp.json")
	if err != nil {
		if ce, ok := errors.AsType[*client.Error](err); ok && ce.Status == 404 {
			return appsState{}, &cliError{code: ExitConflict, msg: "the tenant's image repository is not set up yet",
				hint: "the platform operator runs 'moat platform init' and 'moat platform targets-sign --tenant ...'"}
		}
		return appsState{}, err
	}
	ts, err := metadata.Timestamp().FromBytes(tsRaw)
	if err != nil {
		return appsState{}, fmt.Errorf("timestamp.json: %w", err)
	}
	snapMeta, ok := ts.Signed.Meta["snapshot.json"]
	if !ok {
		return appsState{}, errors.New("timestamp.json names no snapshot")
	}
	snapRaw, err := c.GetTenantTUFFile(ctx, tenant, fmt.Sprintf("%d.snapshot.json", snapMeta.Version))
	if err != nil {
		return appsState{}, err
	}
	snap, err := metadata.Snapshot().FromBytes(snapRaw)
	if err != nil {
		return appsState{}, fmt.Errorf("snapshot.json: %w", err)
	}
	am, ok := snap.Signed.Meta[tuf.AppsRole+".json"]
	if !ok {
		return appsState{}, nil // no apps published yet
	}
	raw, err := c.GetTenantTUFFile(ctx, tenant, fmt.Sprintf("%d.%s.json", am.Version, tuf.AppsRole))
	if err != nil {
		return appsState{}, err
	}
	meta, err := metadata.Targets().FromBytes(raw)
	if err != nil {
		return appsState{}, fmt.Errorf("apps.json: %w", err)
	}
	return appsState{version: meta.Signed.Version, meta: meta}, nil
}

// trustedApps returns the tenant's current apps.json and its targets, after checking that a
// key the signer trusts signed it: a server cannot slip a target into what is re-signed.
func trustedApps(ctx context.Context, c *client.Client, tenant string, trusted []*ecdsa.PublicKey) (appsState, map[string]tuf.TargetFile, error) {
	cur, err := currentApps(ctx, c, tenant)
	if err != nil {
		return cur, nil, err
	}
	targets := map[string]tuf.TargetFile{}
	if cur.meta == nil {
		return cur, targets, nil
	}
	if err := tuf.VerifySignedByAny(cur.meta, trusted); err != nil {
		return cur, nil, &cliError{code: ExitError, msg: "the current apps.json is not signed by --key or a --trust-key key; refusing to build on it",
			hint: "pass the public key that signed the last release with --trust-key FILE.pub"}
	}
	targets, err = tuf.TargetFilesOf(cur.meta)
	if err != nil {
		return cur, nil, fmt.Errorf("the current apps.json: %w", err)
	}
	return cur, targets, nil
}

// signingKeys reads the offline key and the extra trusted public keys.
func signingKeys(env *Env, keyFile, passFile string, trust []string) (*ecdsa.PrivateKey, []*ecdsa.PublicKey, error) {
	key, err := keys.ReadPrivate(keyFile, func() ([]byte, error) { return keys.Passphrase(env.Getenv, env.Stdin, passFile) })
	if err != nil {
		return nil, nil, err
	}
	trusted := []*ecdsa.PublicKey{&key.PublicKey}
	for _, f := range trust {
		p, err := keys.ReadPublic(f)
		if err != nil {
			return nil, nil, err
		}
		trusted = append(trusted, p)
	}
	return key, trusted, nil
}

type imageAdded struct {
	Path            string `json:"path"`
	SHA256          string `json:"sha256"`
	Length          int64  `json:"length"`
	Version         string `json:"version"`
	SecurityVersion uint32 `json:"security_version"`
	Product         string `json:"product"`
	AppsVersion     int64  `json:"apps_version"`
}

// imageOf is the signed apps.json entry at path as the CLI shows it. Its custom metadata is
// read as the server and devices read it (target.DecodeCustom).
func imageOf(path string, tf *metadata.TargetFiles, appsVersion int64) (imageAdded, error) {
	it := imageAdded{Path: path, Length: tf.Length, AppsVersion: appsVersion}
	if h, ok := tf.Hashes["sha256"]; ok {
		it.SHA256 = h.String()
	}
	var raw []byte
	if tf.Custom != nil {
		raw = *tf.Custom
	}
	c, err := target.DecodeCustom(path, raw)
	if err != nil {
		return it, fmt.Errorf("the tenant's apps.json: %w", err)
	}
	it.Version, it.SecurityVersion, it.Product = c.Version, c.SecurityVersion, c.Product
	return it, nil
}

// progress writes an upload's progress to w at most every 5 percent.
type progress struct {
	r         io.Reader
	w         io.Writer
	total, n  int64
	lastShown int64
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.total > 0 && (p.n*100/p.total >= p.lastShown+5 || errors.Is(err, io.EOF) && p.lastShown < 100) {
		p.lastShown = p.n * 100 / p.total
		fmt.Fprintf(p.w, "\ruploading %3d%% (%d of %d bytes)", p.lastShown, p.n, p.total)
		if p.n >= p.total {
			fmt.Fprintln(p.w)
		}
	}
	return n, err
}

func newImageAdd(env *Env) *ffcli.Command {
	var keyFile, passFile string
	var trust stringList
	var valid time.Duration
	return newVerb(env, "image", verb{
		name:   "add",
		args:   "FILE",
		short:  "Verify, sign offline and publish an application image package.",
		tenant: true,
		long: `Verifies the package FILE locally (manifest, payload length and hash), uploads it, then
signs the tenant's next apps.json with the offline key --key: the current list of images
plus this one at apps/<name>/<version>. The private key never leaves this machine; the
server accepts the result only if the key is registered and not revoked, and only for a
package this tenant uploaded, for one of its products.

The current apps.json is built upon only if it verifies with --key or with a --trust-key
public key: a server cannot slip an image into what you sign.

EXAMPLES
  moat image package examples/dw100/app --out dw100-app.img
  moat image add dw100-app.img --key contoso-release.key --passphrase-file ./passphrase.txt
  moat image add dw100-app-1.1.img --key new.key --trust-key old.key.pub`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&keyFile, "key", "", "the tenant's offline signing key `FILE` (required)")
			fs.StringVar(&passFile, "passphrase-file", "", "read the key's passphrase from the first line of `FILE` (default: $MOAT_KEY_PASSPHRASE)")
			fs.Var(&trust, "trust-key", "a public key `FILE` whose signature on the current apps.json is trusted too (repeatable; for key rotation)")
			fs.DurationVar(&valid, "valid-for", 365*24*time.Hour, "how long the signed apps.json is valid")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the package FILE"); err != nil {
				return err
			}
			if keyFile == "" {
				return usagef("--key FILE is required: the offline key that signs the tenant's images")
			}
			m, sum, size, err := verifyPackage(args[0])
			if err != nil {
				return err
			}
			if m.Kind != image.KindApp {
				return usagef("%s is an %s image; only the platform operator publishes OS images", args[0], m.Kind)
			}
			key, trusted, err := signingKeys(env, keyFile, passFile, trust)
			if err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			cur, targets, err := trustedApps(ctx, c, tenant, trusted)
			if err != nil {
				return err
			}
			path := "apps/" + m.Name + "/" + m.Version
			if old, ok := targets[path]; ok {
				if old.SHA256 == sum {
					return &cliError{code: ExitConflict, msg: path + " is already published with this package"}
				}
				return &cliError{code: ExitConflict, msg: path + " is already published with other bytes",
					hint: "a version is immutable: raise the version in app.json and package again"}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			info, err := c.UploadBlob(ctx, tenant, &progress{r: f, w: s.env.Stderr, total: size})
			if err != nil {
				return err
			}
			if info.Digest != "sha256:"+sum || info.Size != size {
				return fmt.Errorf("the server stored %s (%d bytes), not the package's sha256:%s (%d bytes)", info.Digest, info.Size, sum, size)
			}
			targets[path] = tuf.TargetFile{Length: size, SHA256: sum, Custom: target.Custom{
				Kind: target.KindApp, Version: m.Version, SecurityVersion: m.SecurityVersion,
				Product: m.Product, ComponentID: m.ComponentID,
			}}
			signer, err := keys.Signer(key)
			if err != nil {
				return err
			}
			signed, err := tuf.SignApps(signer, cur.version+1, time.Now().Add(valid), targets)
			if err != nil {
				return err
			}
			v, err := c.PutTenantApps(ctx, tenant, signed)
			if err != nil {
				return err
			}
			res := imageAdded{Path: path, SHA256: sum, Length: size, Version: m.Version, SecurityVersion: m.SecurityVersion,
				Product: m.Product, AppsVersion: v.Version}
			if s.json() {
				return s.printJSON(res)
			}
			return s.show(res, [][2]string{
				{"Path", path}, {"SHA-256", sum}, {"Size", itoa(size)}, {"Product", m.Product},
				{"Version", m.Version}, {"Security version", itoa(int64(m.SecurityVersion))},
				{"apps.json version", itoa(v.Version)},
			})
		},
	})
}

// verifyPackage reads the whole package: manifest, payload length and hash, and returns the
// manifest and the SHA-256 and length of the file.
func verifyPackage(path string) (image.Manifest, string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return image.Manifest{}, "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	pkg, err := image.Open(io.TeeReader(f, h))
	if err != nil {
		return image.Manifest{}, "", 0, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := io.Copy(io.Discard, pkg.Payload()); err != nil {
		return image.Manifest{}, "", 0, fmt.Errorf("%s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return image.Manifest{}, "", 0, err
	}
	return pkg.Manifest(), hex.EncodeToString(h.Sum(nil)), st.Size(), nil
}

func newImageList(env *Env) *ffcli.Command {
	return newVerb(env, "image", verb{
		name:   "list",
		short:  "List the tenant's published application images.",
		tenant: true,
		long: `Lists the images of the tenant's current apps.json: path, version, security version,
product and SHA-256.

EXAMPLES
  moat image list
  moat image list -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			cur, err := currentApps(ctx, c, tenant)
			if err != nil {
				return err
			}
			var items []imageAdded
			if cur.meta != nil {
				for path, tf := range cur.meta.Signed.Targets {
					it, err := imageOf(path, tf, cur.version)
					if err != nil {
						return err
					}
					items = append(items, it)
				}
			}
			sort.Slice(items, func(i, j int) bool { return items[i].Path < items[j].Path })
			return printList(s, items, []string{"PATH", "VERSION", "SECURITY VERSION", "PRODUCT", "SHA-256"}, func(i imageAdded) []string {
				return []string{i.Path, i.Version, itoa(int64(i.SecurityVersion)), i.Product, i.SHA256}
			})
		},
	})
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return fmt.Sprint([]string(*l)) }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func newImageRevoke(env *Env) *ffcli.Command {
	var keyFile, passFile string
	var trust stringList
	var valid time.Duration
	return newVerb(env, "image", verb{
		name:   "revoke",
		args:   "PATH",
		short:  "Withdraw a published application image: sign the next apps.json without it.",
		tenant: true,
		long: `Signs the tenant's next apps.json offline without the image at PATH (as 'moat image list'
shows it, apps/<name>/<version>) and publishes it. Devices then refuse the image: it is no
longer signed for them. Like 'image add', it builds only on an apps.json that --key or a
--trust-key key signed.

EXAMPLES
  moat image revoke apps/dw100-app/1.0.0 --key contoso-release.key`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&keyFile, "key", "", "the tenant's offline signing key `FILE` (required)")
			fs.StringVar(&passFile, "passphrase-file", "", "read the key's passphrase from the first line of `FILE` (default: $MOAT_KEY_PASSPHRASE)")
			fs.Var(&trust, "trust-key", "a public key `FILE` whose signature on the current apps.json is trusted too (repeatable)")
			fs.DurationVar(&valid, "valid-for", 365*24*time.Hour, "how long the signed apps.json is valid")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the image PATH"); err != nil {
				return err
			}
			if keyFile == "" {
				return usagef("--key FILE is required: the offline key that signs the tenant's images")
			}
			key, trusted, err := signingKeys(env, keyFile, passFile, trust)
			if err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			cur, targets, err := trustedApps(ctx, c, tenant, trusted)
			if err != nil {
				return err
			}
			if _, ok := targets[args[0]]; !ok {
				return &cliError{code: ExitNotFound, msg: "no published image " + clean(args[0]), hint: "run 'moat image list'"}
			}
			delete(targets, args[0])
			signer, err := keys.Signer(key)
			if err != nil {
				return err
			}
			signed, err := tuf.SignApps(signer, cur.version+1, time.Now().Add(valid), targets)
			if err != nil {
				return err
			}
			v, err := c.PutTenantApps(ctx, tenant, signed)
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(map[string]any{"revoked": args[0], "apps_version": v.Version})
			}
			s.done("Revoked %s: apps.json version %d no longer lists it.", clean(args[0]), v.Version)
			return nil
		},
	})
}

// imageShown is one image with the device groups whose current deployment names it.
type imageShown struct {
	imageAdded
	DeployedTo []string `json:"deployed_to"`
}

func newImageShow(env *Env) *ffcli.Command {
	return newVerb(env, "image", verb{
		name:   "show",
		args:   "PATH",
		short:  "Show one published application image and the device groups it is deployed to.",
		tenant: true,
		long: `Shows an image of the tenant's current apps.json by its path (apps/NAME/VERSION): SHA-256,
length, version, security version, product, and the device groups of that product whose
current deployment is this image. An image no longer listed (revoked) is not found.

EXAMPLES
  moat image show apps/dw100-app/1.0.0
  moat image show apps/dw100-app/1.0.0 -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "PATH"); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			cur, err := currentApps(ctx, c, tenant)
			if err != nil {
				return err
			}
			path := args[0]
			var tf *metadata.TargetFiles
			if cur.meta != nil {
				tf = cur.meta.Signed.Targets[path]
			}
			if tf == nil {
				return &cliError{code: ExitNotFound, msg: "no image " + clean(path) + " in the tenant's current apps.json", hint: "'moat image list' shows the published images"}
			}
			added, err := imageOf(path, tf, cur.version)
			if err != nil {
				return err
			}
			it := imageShown{imageAdded: added, DeployedTo: []string{}}
			if it.DeployedTo, err = deployedTo(ctx, c, tenant, it.Product, path); err != nil {
				return err
			}
			deployed := strings.Join(it.DeployedTo, ", ")
			if deployed == "" {
				deployed = "-"
			}
			return s.show(it, [][2]string{
				{"Path", it.Path}, {"Version", it.Version}, {"Security version", itoa(int64(it.SecurityVersion))},
				{"Product", it.Product}, {"SHA-256", it.SHA256}, {"Length", itoa(it.Length)},
				{"apps.json version", itoa(it.AppsVersion)}, {"Deployed to", deployed},
			})
		},
	})
}

// deployedTo lists the groups of the product (by name) whose current deployment is path.
func deployedTo(ctx context.Context, c *client.Client, tenant, productName, path string) ([]string, error) {
	out := []string{}
	if productName == "" {
		return out, nil
	}
	ps, err := c.ListProducts(ctx, tenant, client.ListOptions{Name: productName})
	if err != nil || len(ps.Items) == 0 {
		return out, err
	}
	p := ps.Items[0]
	groups, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceGroup], error) {
		return c.ListDeviceGroups(ctx, tenant, p.ID, o)
	})
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		ds, err := c.ListDeployments(ctx, tenant, p.ID, g.ID, client.ListOptions{Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(ds.Items) == 1 && ds.Items[0].Target == path {
			out = append(out, p.Name+"/"+g.Name)
		}
	}
	return out, nil
}
