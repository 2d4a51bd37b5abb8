package cli

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/keys"
)

// What 'moat platform manufacture' writes for each device, in DIR/<device ID>/.
const (
	deviceKeyFile   = "identity.key"
	devicePubFile   = "identity.pub"
	deviceListFile  = "devices.txt"
	maxManufactured = 10000
)

// newPlatformDeviceCmd is `moat platform device`: the registry of manufactured devices.
func newPlatformDeviceCmd(env *Env) *ffcli.Command {
	c := newNoun(env, "device", "Register manufactured devices' identity keys.",
		`The platform operator registers each manufactured device's identity public key; its device
ID is the SHA-256 of that key. Only registered devices can be claimed by a tenant, and only a
claimed device can attest. 'moat platform manufacture' makes keys and registers them in one
go; 'register' takes a key made elsewhere (a secure element, a TPM, a factory station).

EXAMPLES
  moat platform device register --public-key ./devices/3f9a...e1/identity.pub
  moat platform manufacture --count 100 --out ./devices`,
		newPlatformDeviceRegister(env))
	c.ShortUsage = "moat platform device <command> [flags]"
	return c
}

func registeredFields(d client.Device) [][2]string {
	return [][2]string{{"ID", d.ID}, {"Registered", fmtTime(d.RegisteredAt)}}
}

// registerKey registers a device public key and checks that the server named the device as
// the key does.
func registerKey(ctx context.Context, c *client.Client, pub *ecdsa.PublicKey) (client.Device, error) {
	pemText, err := keys.EncodePublicPEM(pub)
	if err != nil {
		return client.Device{}, err
	}
	d, err := c.RegisterDevice(ctx, client.DeviceRegister{PublicKeyPEM: string(pemText)})
	if err != nil {
		return client.Device{}, err
	}
	if want := string(identity.IDFromPublicKey(pub)); d.ID != want {
		return client.Device{}, fmt.Errorf("the server registered the key as device %s, but its ID is %s", clip(d.ID), want)
	}
	return d, nil
}

func newPlatformDeviceRegister(env *Env) *ffcli.Command {
	var file string
	return newVerb(env, "platform device", verb{
		name:  "register",
		short: "Register a device's identity public key (PEM, ECDSA P-256).",
		long: `Registers the device identity public key in FILE (a PEM "PUBLIC KEY" block, ECDSA P-256)
and prints the device ID, the SHA-256 of the key. The key is checked here first, so a
private key given by mistake is never sent. Give the ID to the tenant that buys the device:
it claims it with 'moat device claim'. Needs the platform-operator role.

EXAMPLES
  moat platform device register --public-key ./devices/3f9a...e1/identity.pub
  moat platform device register --public-key secure-element-0042.pub -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&file, "public-key", "", "`FILE` holding the device's PEM public key (required)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if file == "" {
				return usagef("--public-key FILE is required")
			}
			data, err := readBounded(file, maxPublicKeyFileBytes)
			if err != nil {
				return err
			}
			pub, err := keys.ParsePublicPEM(data)
			if err != nil {
				return &cliError{code: ExitError, msg: fmt.Sprintf("%s is not an ECDSA P-256 public key in PEM: %v", file, err),
					hint: "give the public half (identity.pub); a private key never leaves the device"}
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			d, err := registerKey(ctx, c, pub)
			if err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(d)
			}
			if err := s.show(d, registeredFields(d)); err != nil {
				return err
			}
			s.note("The tenant that owns the device claims it with: moat device claim %s", d.ID)
			return nil
		},
	})
}

func newPlatformManufacture(env *Env) *ffcli.Command {
	var count int
	var out string
	return newVerb(env, "platform", verb{
		name:  "manufacture",
		short: "Make identity keys for N devices and register them.",
		long: `Makes N device identity keys, as a factory station would, and registers each. Every device
gets a directory DIR/<device ID> holding identity.key (the private key, PKCS #8, mode 0600:
install it on the device, which is the only place it belongs) and identity.pub. Its ID is
appended to DIR/devices.txt, one per line, the list a tenant claims with 'moat device claim
--from'. A key is made in a fresh directory and moved to its ID, so no key is ever
overwritten. N is 1 to 10000. Needs the platform-operator role.

EXAMPLES
  moat platform manufacture --count 3 --out ./devices
  moat device claim --from ./devices/devices.txt`,
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&count, "count", 0, "how many devices to make, `N` (1 to 10000; required)")
			fs.StringVar(&out, "out", "", "`DIR` for the device keys and devices.txt (required; created 0700)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if count < 1 || count > maxManufactured {
				return usagef("--count must be 1 to %d, got %d", maxManufactured, count)
			}
			if out == "" {
				return usagef("--out DIR is required: where the device keys go")
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			// Make no key that cannot be registered.
			me, err := c.GetMe(ctx)
			if err != nil {
				return err
			}
			if !me.User.PlatformOperator {
				return &cliError{code: ExitForbidden, msg: "manufacturing devices needs the platform-operator role; nothing was made",
					hint: "log in with a platform-operator token"}
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			listPath := filepath.Join(out, deviceListFile)
			// devices.txt holds public IDs only, for the tenant.
			list, err := os.OpenFile(listPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644) //nolint:gosec // G302: public device IDs
			if err != nil {
				return err
			}
			defer list.Close()
			made := []client.Device{}
			for range count {
				d, err := manufactureOne(ctx, c, out)
				if err != nil {
					if len(made) > 0 {
						s.note("moat: made and registered before the failure: %s, listed in %s", plural(len(made), "device"), listPath)
					}
					return err
				}
				if _, err := fmt.Fprintln(list, d.ID); err != nil {
					return fmt.Errorf("device %s is registered, but %s: %w", d.ID, listPath, err)
				}
				made = append(made, d)
			}
			if err := list.Sync(); err != nil {
				return err
			}
			if err := list.Close(); err != nil {
				return err
			}
			if s.json() {
				return s.printJSON(made)
			}
			if err := printList(s, made, []string{"DEVICE ID", "KEY FILE"}, func(d client.Device) []string {
				return []string{d.ID, filepath.Join(out, d.ID, deviceKeyFile)}
			}); err != nil {
				return err
			}
			s.note("Registered %s; their IDs are appended to %s.", plural(len(made), "device"), listPath)
			s.note("The tenant that buys them claims them with: moat device claim --from %s", shellQuote(listPath))
			return nil
		},
	})
}

// manufactureOne makes one device key in a fresh directory, moves the directory to the
// device's ID, and registers the key.
func manufactureOne(ctx context.Context, c *client.Client, out string) (client.Device, error) {
	tmp, err := os.MkdirTemp(out, ".new-device-*") // mode 0700
	if err != nil {
		return client.Device{}, err
	}
	moved := false
	defer func() {
		if !moved {
			os.RemoveAll(tmp) // a key never registered and never moved: nobody has it
		}
	}()
	key, err := identity.CreateFileKey(filepath.Join(tmp, deviceKeyFile))
	if err != nil {
		return client.Device{}, err
	}
	pub, err := keys.EncodePublicPEM(key.Public())
	if err != nil {
		return client.Device{}, err
	}
	if err := writeFileAtomic(filepath.Join(tmp, devicePubFile), pub, 0o644, false); err != nil {
		return client.Device{}, err
	}
	id := string(key.ID())
	dir := filepath.Join(out, id)
	// Rename does not replace a directory that holds anything, and a fresh key's ID has never
	// been seen; check anyway so that an existing device directory is never touched.
	if _, err := os.Lstat(dir); err == nil {
		return client.Device{}, fmt.Errorf("%s exists; refusing to touch it", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return client.Device{}, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return client.Device{}, err
	}
	moved = true
	d, err := registerKey(ctx, c, key.Public())
	if err != nil {
		return client.Device{}, registerFailed(err, id, dir)
	}
	return d, nil
}

// registerFailed explains a key made but not registered: where the key is and how to
// register it, with the exit code of the API error.
func registerFailed(err error, id, dir string) error {
	code, msg := ExitError, err.Error()
	if e, ok := errors.AsType[*client.Error](err); ok {
		code = exitForStatus(e.Status)
		if e.Detail != "" {
			msg = e.Detail
		}
	}
	return &cliError{code: code, msg: fmt.Sprintf("device %s was made but not registered: %s", id, msg),
		hint: fmt.Sprintf("its key stays in %s; register it with 'moat platform device register --public-key %s'",
			dir, shellQuote(filepath.Join(dir, devicePubFile)))}
}
