package deviceca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxNameLen bounds the root's name, RFC 5280's upper bound for a CN.
const maxNameLen = 64

// NewRootCertificate makes the platform root certificate, self-signed by signer (the
// platform's offline root key, ECDSA P-256), and returns it as PEM. It is a CA with path
// length 1 (root, tenant CA, device) that may sign certificates and CRLs; its subject is
// CN=name, O=moat platform; it is valid from 5 minutes before now for validity, has a
// random 128-bit serial number and a subject key identifier.
//
// Run it offline, on the operator's machine.
func NewRootCertificate(signer crypto.Signer, name string, now time.Time, validity time.Duration) ([]byte, error) {
	pub, err := signerKey(signer)
	if err != nil {
		return nil, fmt.Errorf("new root certificate: %w", err)
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("new root certificate: %w", err)
	}
	if err := checkPeriod(now, validity); err != nil {
		return nil, fmt.Errorf("new root certificate: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new root certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{rootOrg}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
	}
	// A CA template without SubjectKeyId gets one derived from the key.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("new root certificate: %w", err)
	}
	return encodePEM(pemCertificate, der), nil
}

// checkName returns an ErrInvalidInput error unless name is fit for the root's CN.
func checkName(name string) error {
	n := utf8.RuneCountInString(name)
	ok := n > 0 && n <= maxNameLen && utf8.ValidString(name)
	for _, r := range name {
		ok = ok && !unicode.IsControl(r)
	}
	if !ok {
		return fmt.Errorf("%w: root name %s: want 1 to %d printable characters", ErrInvalidInput, quote(name), maxNameLen)
	}
	return nil
}

// ParseRootCertificate reads a root certificate (one PEM block) and checks that it is a
// self-signed ECDSA P-256 CA certificate with a valid signature. Errors wrap
// ErrBadCertificate. It does not check the validity period: [CheckCA] and [VerifyDevice]
// do, at the time they are given.
func ParseRootCertificate(data []byte) (*x509.Certificate, error) {
	cert, err := parseCertificatePEM(data)
	if err != nil {
		return nil, fmt.Errorf("parse root certificate: %w", err)
	}
	if err := checkRoot(cert); err != nil {
		return nil, fmt.Errorf("parse root certificate: %w", err)
	}
	return cert, nil
}

// checkRoot returns an ErrBadCertificate error unless cert is a self-signed P-256 CA.
func checkRoot(cert *x509.Certificate) error {
	switch {
	case cert == nil:
		return fmt.Errorf("%w: no root certificate", ErrBadCertificate)
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return fmt.Errorf("%w: root is not a CA", ErrBadCertificate)
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("%w: root may not sign certificates", ErrBadCertificate)
	case !bytes.Equal(cert.RawSubject, cert.RawIssuer):
		return fmt.Errorf("%w: root is not self-issued", ErrBadCertificate)
	}
	if _, ok := p256(cert.PublicKey); !ok {
		return fmt.Errorf("%w: root key is not ECDSA P-256", ErrBadCertificate)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return fmt.Errorf("%w: root self-signature: %w", ErrBadCertificate, err)
	}
	return nil
}
