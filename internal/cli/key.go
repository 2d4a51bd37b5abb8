package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/internal/keys"
)

func newKeyCmd(env *Env) *ffcli.Command {
	return newNoun(env, "key", "Create and inspect offline signing keys.",
		`Offline signing keys sign on your machine and never go to the server: the platform root
and OS signing keys of the platform operator, and a tenant's image signing key. Each is an
ECDSA P-256 key pair in two files: the private key FILE, encrypted with a passphrase unless
you say otherwise, readable only by you (mode 0600), and the public key FILE.pub, which you
share. A key is named by its TUF key ID. The file formats are in docs/keys.md.

A passphrase comes from the first line of --passphrase-file FILE (- for standard input), else
from $MOAT_KEY_PASSPHRASE; never from a flag value, which would show in the shell history.

EXAMPLES
  moat key generate --out contoso-images.pem --passphrase-file ./passphrase.txt
  moat key show contoso-images.pem.pub`,
		newKeyGenerate(env), newKeyShow(env))
}

// keyAlgorithm describes every moat key for people.
const keyAlgorithm = keys.KeyScheme + " (ECDSA P-256)"

// keyGenerated is what 'moat key generate -o json' prints.
type keyGenerated struct {
	KeyID          string `json:"key_id"`
	Scheme         string `json:"scheme"`
	PrivateKeyFile string `json:"private_key_file"`
	PublicKeyFile  string `json:"public_key_file"`
	Encrypted      bool   `json:"encrypted"`
}

// keyShown is what 'moat key show -o json' prints.
type keyShown struct {
	KeyID     string `json:"key_id"`
	Scheme    string `json:"scheme"`
	File      string `json:"file"`
	Private   bool   `json:"private"`
	Encrypted bool   `json:"encrypted"`
	PublicKey string `json:"public_key"` // PEM
}

func newKeyGenerate(env *Env) *ffcli.Command {
	var out, passFile string
	var noPass bool
	return newVerb(env, "key", verb{
		name:  "generate",
		short: "Generate an offline ECDSA P-256 signing key pair.",
		long: `Generates an ECDSA P-256 key pair and writes the private key to FILE (mode 0600) and the
public key to FILE.pub (mode 0644), then prints the key ID. Works offline: nothing is sent
anywhere. It never overwrites a file: if FILE or FILE.pub exists, nothing is written.

The private key is encrypted with a passphrase (scrypt, AES-256-GCM) from --passphrase-file
or $MOAT_KEY_PASSPHRASE. Without one, give --no-passphrase to store it unencrypted; it is then
protected by its file mode alone, and a warning says so. Keep the private key offline; share
only FILE.pub.

EXAMPLES
  moat key generate --out contoso-images.pem --passphrase-file ./passphrase.txt
  moat key generate --out contoso-images.pem --passphrase-file - < passphrase.txt
  MOAT_KEY_PASSPHRASE='correct horse battery staple' moat key generate --out os-signing.pem
  moat key generate --out ci-signing.pem --no-passphrase -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&out, "out", "", "`FILE` for the private key (required); the public key goes to FILE.pub")
			fs.StringVar(&passFile, "passphrase-file", "", "read the passphrase from the first line of `FILE`, - for standard input (default: $MOAT_KEY_PASSPHRASE)")
			fs.BoolVar(&noPass, "no-passphrase", false, "store the private key unencrypted, protected by its file mode (0600) alone")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if out == "" {
				return usagef("--out FILE is required: where to write the private key")
			}
			envPass := env.Getenv != nil && env.Getenv(keys.EnvPassphrase) != ""
			switch {
			case noPass && passFile != "":
				return usagef("--no-passphrase and --passphrase-file contradict each other; give one")
			case noPass && envPass:
				return usagef("--no-passphrase contradicts the passphrase in $%s; unset it or drop --no-passphrase", keys.EnvPassphrase)
			}
			pubPath := out + ".pub"
			for _, p := range []string{out, pubPath} {
				if _, err := os.Lstat(p); err == nil {
					return errKeyExists(p)
				}
			}
			pass, err := keys.Passphrase(env.Getenv, env.Stdin, passFile)
			if err != nil {
				return err
			}
			if pass == nil && !noPass {
				return usagef("a new key needs a passphrase: give --passphrase-file FILE or set %s, or give --no-passphrase to store it unencrypted", keys.EnvPassphrase)
			}
			key, err := keys.Generate()
			if err != nil {
				return err
			}
			if err := keys.WritePrivate(out, key, pass); err != nil {
				if errors.Is(err, fs.ErrExist) {
					return errKeyExists(out)
				}
				return err
			}
			if err := keys.WritePublic(pubPath, &key.PublicKey); err != nil {
				// Leave no private key without its public half: this one was never used.
				os.Remove(out)
				if errors.Is(err, fs.ErrExist) {
					return errKeyExists(pubPath)
				}
				return err
			}
			if noPass {
				s.note("moat: warning: %s is not encrypted (--no-passphrase): anyone who can read it, or a copy of it, can sign as this key", out)
			}
			res := keyGenerated{KeyID: keys.KeyID(&key.PublicKey), Scheme: keys.KeyScheme,
				PrivateKeyFile: out, PublicKeyFile: pubPath, Encrypted: pass != nil}
			protection := "encrypted with a passphrase (scrypt, AES-256-GCM), mode 0600"
			if !res.Encrypted {
				protection = "not encrypted, mode 0600"
			}
			if err := s.show(res, [][2]string{
				{"Key ID", res.KeyID},
				{"Algorithm", keyAlgorithm},
				{"Private key", out + " (" + protection + ")"},
				{"Public key", pubPath},
			}); err != nil {
				return err
			}
			s.note("Keep %s offline; share only %s.", out, pubPath)
			return nil
		},
	})
}

func errKeyExists(path string) error {
	return &cliError{code: ExitError, msg: fmt.Sprintf("%s exists; a key is never overwritten, and nothing was written", path),
		hint: "choose another --out, or move the old key away first if you really mean to replace it"}
}

func newKeyShow(env *Env) *ffcli.Command {
	var passFile string
	return newVerb(env, "key", verb{
		name:  "show",
		args:  "FILE",
		short: "Show a key file's key ID and public key.",
		long: `Reads a public key file, or a private key file, and prints the key ID, the algorithm and
the public key in PEM. An encrypted private key is decrypted to find its public key, with the
passphrase from --passphrase-file or $MOAT_KEY_PASSPHRASE, so this also checks that the
passphrase opens it. A private key file that others may read is refused. Works offline.

EXAMPLES
  moat key show contoso-images.pem.pub
  moat key show contoso-images.pem --passphrase-file ./passphrase.txt
  moat key show contoso-images.pem.pub -o json`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&passFile, "passphrase-file", "", "read the passphrase of an encrypted private key from the first line of `FILE`, - for standard input (default: $MOAT_KEY_PASSPHRASE)")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 1, "the key FILE"); err != nil {
				return err
			}
			path := args[0]
			info, err := keys.Inspect(path, func() ([]byte, error) {
				return keys.Passphrase(env.Getenv, env.Stdin, passFile)
			})
			if errors.Is(err, keys.ErrNoPassphrase) {
				return &cliError{code: ExitUsage, msg: fmt.Sprintf("%s is encrypted and no passphrase was given", path),
					hint: fmt.Sprintf("give --passphrase-file FILE or set %s", keys.EnvPassphrase)}
			}
			if err != nil {
				return err
			}
			pubPEM, err := keys.EncodePublicPEM(info.Public)
			if err != nil {
				return err
			}
			res := keyShown{KeyID: keys.KeyID(info.Public), Scheme: keys.KeyScheme, File: path,
				Private: info.Private, Encrypted: info.Encrypted, PublicKey: string(pubPEM)}
			if s.json() {
				return s.printJSON(res)
			}
			return showKeyTable(s, res)
		},
	})
}

func showKeyTable(s *session, res keyShown) error {
	kind := "public key"
	switch {
	case res.Private && res.Encrypted:
		kind = "private key, encrypted"
	case res.Private:
		kind = "private key, not encrypted"
	}
	if err := s.show(res, [][2]string{
		{"Key ID", res.KeyID},
		{"Algorithm", keyAlgorithm},
		{"File", res.File + " (" + kind + ")"},
	}); err != nil {
		return err
	}
	_, err := fmt.Fprintf(s.env.Stdout, "\n%s", res.PublicKey)
	return err
}
