package cli

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/moat-iot/moat/client"
)

func newCACertificateCmd(env *Env) *ffcli.Command {
	return newNoun(env, "ca-certificate", "Download and rotate the tenant's device CA certificates.",
		`Each tenant has its own device CA in the security service. It issues the short-lived
certificates devices get after they attest, and the platform root certifies it offline. The
tenant's cloud trusts its devices with the chain 'download' writes: the tenant's trusted
device CAs, newest first, then the platform root.

'rotate' starts a new CA; once the platform operator certifies it ('moat platform ca-sign')
it issues the certificates, and the CA it replaces stays trusted for an overlap, so
download the chain again after a rotation.

EXAMPLES
  moat ca-certificate download --out contoso-devices.pem
  moat ca-certificate list
  moat ca-certificate rotate`,
		newCACertDownload(env), newCACertList(env), newCACertRotate(env))
}

// chainCert is one certificate of a downloaded chain, as 'download -o json' prints it.
type chainCert struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	SHA256   string    `json:"sha256"`
}

// chainDownloaded is what 'moat ca-certificate download -o json' prints.
type chainDownloaded struct {
	File         string      `json:"file"`
	Certificates []chainCert `json:"certificates"`
}

func newCACertDownload(env *Env) *ffcli.Command {
	var out string
	var force bool
	return newVerb(env, "ca-certificate", verb{
		name:   "download",
		short:  "Download the PEM chain the tenant's cloud trusts its devices with.",
		tenant: true,
		long: `Writes the tenant's device CA chain to FILE (PEM, mode 0644): every device CA of the
tenant trusted now, newest first, then the platform root. Configure it as the client CA of
the service your devices connect to. It refuses to replace FILE unless --force is given;
a replaced file is swapped whole, never half written. Needs the Reader role.

EXAMPLES
  moat ca-certificate download --out contoso-devices.pem
  moat ca-certificate download --out /etc/moat-cloud/device-ca.pem --force`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&out, "out", "", "`FILE` to write the PEM chain to (required)")
			fs.BoolVar(&force, "force", false, "replace FILE if it exists")
		},
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			if out == "" {
				return usagef("--out FILE is required: where to write the chain")
			}
			if _, err := os.Lstat(out); err == nil && !force {
				return &cliError{code: ExitError, msg: out + " exists; nothing was written", hint: "give --force to replace it"}
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			chain, err := c.GetDeviceCAChain(ctx, tenant)
			if err != nil {
				return err
			}
			certs, err := parseCertsPEM(chain)
			if err != nil {
				return fmt.Errorf("the server's chain: %w", err)
			}
			if err := writeFileAtomic(out, chain, 0o644, force); err != nil {
				return err
			}
			res := chainDownloaded{File: out, Certificates: []chainCert{}}
			for _, cert := range certs {
				res.Certificates = append(res.Certificates, chainCert{Subject: cert.Subject.String(), Issuer: cert.Issuer.String(),
					NotAfter: cert.NotAfter.UTC(), SHA256: certFingerprint(cert)})
			}
			if len(certs) < 2 {
				s.note("The chain holds only the platform root: the tenant has no certified device CA yet; the platform operator runs 'moat platform ca-sign'.")
			}
			if s.json() {
				return s.printJSON(res)
			}
			s.done("Wrote %s to %s:", plural(len(certs), "certificate"), out)
			return printList(s, res.Certificates, []string{"SUBJECT", "VALID UNTIL", "SHA-256"}, func(c chainCert) []string {
				return []string{c.Subject, fmtTime(c.NotAfter), c.SHA256}
			})
		},
	})
}

func newCACertList(env *Env) *ffcli.Command {
	return newVerb(env, "ca-certificate", verb{
		name:   "list",
		short:  "List the tenant's device CAs: pending, active and retired.",
		tenant: true,
		long: `Lists the tenant's device CAs. A pending CA waits for the platform operator to certify it;
the active one issues device certificates; a retired one is still trusted until its
retirement time, so that certificates it issued keep working during a rotation.

EXAMPLES
  moat ca-certificate list
  moat ca-certificate list -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			items, err := client.Collect(ctx, client.ListOptions{}, func(ctx context.Context, o client.ListOptions) (client.Page[client.DeviceCA], error) {
				return c.ListDeviceCAs(ctx, tenant, o)
			})
			if err != nil {
				return err
			}
			return printList(s, items, []string{"ID", "STATE", "CREATED", "ACTIVATED", "RETIRES", "VALID UNTIL", "SHA-256"}, func(ca client.DeviceCA) []string {
				until, sum := "-", "-"
				if certs, err := parseCertsPEM([]byte(ca.CertificatePEM)); err == nil && len(certs) == 1 {
					until, sum = fmtTime(certs[0].NotAfter), certFingerprint(certs[0])
				}
				return []string{ca.ID, ca.State, fmtTime(ca.CreatedAt), fmtTimePtr(ca.ActivatedAt), fmtTimePtr(ca.RetireAt), until, sum}
			})
		},
	})
}

func newCACertRotate(env *Env) *ffcli.Command {
	return newVerb(env, "ca-certificate", verb{
		name:   "rotate",
		short:  "Start a device CA rotation: a new CA for the platform operator to certify.",
		tenant: true,
		long: `Makes a new device CA for the tenant, pending until the platform operator certifies it
offline with the platform root ('moat platform ca-sign'). Until then the current CA keeps
issuing; afterwards the new one issues and the old one stays trusted for an overlap. Only
one CA may be pending at a time. Needs the Administrator role.

EXAMPLES
  moat ca-certificate rotate
  moat ca-certificate rotate --tenant Contoso -o json`,
		run: func(ctx context.Context, s *session, args []string) error {
			if err := wantArgs(args, 0, ""); err != nil {
				return err
			}
			c, tenant, err := s.inTenant(ctx)
			if err != nil {
				return err
			}
			ca, err := c.RotateDeviceCA(ctx, tenant)
			if err != nil {
				return err
			}
			if err := s.show(ca, [][2]string{{"ID", ca.ID}, {"State", ca.State}, {"Created", fmtTime(ca.CreatedAt)}}); err != nil {
				return err
			}
			s.note("The platform operator must now certify it: moat platform ca-sign --keys DIR --tenant %s", tenant)
			s.note("Until then the current CA keeps issuing; download the chain again afterwards ('moat ca-certificate download').")
			return nil
		},
	})
}

// parseCertsPEM parses every CERTIFICATE block of data; anything else in it is an error.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a PEM block of type %q, not CERTIFICATE", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// certFingerprint is the lower-case hex SHA-256 of a certificate's DER.
func certFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// readBounded reads a local file of at most max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}

// writeFileAtomic writes data to path with mode perm so that a reader sees the old file or
// the whole new one: a synced temporary file beside it is renamed into place. Unless
// replace is set it never replaces a file: it first claims path with O_EXCL.
func writeFileAtomic(path string, data []byte, perm fs.FileMode, replace bool) (err error) {
	if !replace {
		claim, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return &cliError{code: ExitError, msg: path + " exists; nothing was written", hint: "move it away first"}
		}
		if err != nil {
			return err
		}
		claim.Close()
	}
	renamed := false
	defer func() {
		if !renamed && !replace {
			os.Remove(path) // our own empty claim
		}
	}()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // nothing left to remove after the rename
	err = tmp.Chmod(perm)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	renamed = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // best effort: the data itself is synced
		d.Close()
	}
	return nil
}
