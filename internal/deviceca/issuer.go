package deviceca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net/url"
)

// Issuer issues device certificates from one tenant CA whose private key is in memory. It
// is the online CA's fast path (issue 15): [NewIssuer] checks the CA certificate and its
// key once, per CA version, and [Issuer.Issue] then costs one P-256 signature.
//
// [Issue] lets x509.CreateCertificate verify the signature it made, which guards against a
// faulty crypto.Signer (a TPM or HSM) and costs a P-256 verification, three times the
// signature. An Issuer signs with the *ecdsa.PrivateKey of the standard library itself,
// so that check buys nothing: it takes the to-be-signed bytes x509.CreateCertificate
// encodes, signs their SHA-256 once and assembles the certificate. The result is the same
// DER Issue would make (TestIssuer_CertificateIsIssues checks it field by field and that
// the signature verifies under the CA).
//
// An Issuer is safe for concurrent use.
type Issuer struct {
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	tenant string
}

// NewIssuer checks that ca is a tenant CA and that key is its key, once.
func NewIssuer(ca *x509.Certificate, key *ecdsa.PrivateKey) (*Issuer, error) {
	if ca == nil {
		return nil, fmt.Errorf("device certificate issuer: %w: no CA certificate", ErrInvalidInput)
	}
	if err := checkTenantCA(ca); err != nil {
		return nil, fmt.Errorf("device certificate issuer: CA: %w", err)
	}
	if err := checkSigner(key, ca); err != nil {
		return nil, fmt.Errorf("device certificate issuer: %w", err)
	}
	tenant, _, _ := parseCASubject(ca.Subject) // checkTenantCA parsed it
	return &Issuer{ca: ca, key: key, tenant: tenant}, nil
}

// CA is the issuing CA's certificate.
func (i *Issuer) CA() *x509.Certificate { return i.ca }

// Issue issues a device certificate as [Issue] does, with the same checks of req.
func (i *Issuer) Issue(req IssueRequest) (der []byte, serial string, err error) {
	if err := req.validate(i.tenant, i.ca.NotAfter); err != nil {
		return nil, "", fmt.Errorf("issue device certificate: %w", err)
	}
	sn, err := newSerial()
	if err != nil {
		return nil, "", fmt.Errorf("issue device certificate for %s: %w", req.DeviceID, err)
	}
	tmpl := deviceTemplate(req)
	tmpl.SerialNumber = sn
	c := &tbsCapture{pub: &i.key.PublicKey}
	_, err = x509.CreateCertificate(rand.Reader, tmpl, i.ca, req.DevicePublicKey, c)
	if !errors.Is(err, errCaptured) || c.tbs == nil {
		return nil, "", fmt.Errorf("issue device certificate for %s: encode: %w", req.DeviceID, err)
	}
	digest := sha256.Sum256(c.tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, i.key, digest[:])
	if err != nil {
		return nil, "", fmt.Errorf("issue device certificate for %s: %w", req.DeviceID, err)
	}
	der, err = asn1.Marshal(certificateASN1{
		TBS:       asn1.RawValue{FullBytes: c.tbs},
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256},
		Signature: asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		return nil, "", fmt.Errorf("issue device certificate for %s: %w", req.DeviceID, err)
	}
	return der, sn.Text(16), nil
}

// deviceTemplate is the device certificate [Issue] and [Issuer.Issue] make, without its
// serial number.
func deviceTemplate(req IssueRequest) *x509.Certificate {
	return &x509.Certificate{
		Subject:               deviceSubject(req.TenantID, req.DeviceID),
		URIs:                  []*url.URL{deviceURI(req.TenantID, req.DeviceID)},
		NotBefore:             req.NotBefore,
		NotAfter:              req.NotAfter,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
	}
}

// oidECDSAWithSHA256 is ecdsa-with-SHA256 (RFC 5758 section 3.2), encoded without
// parameters, as x509 writes it in the to-be-signed part.
var oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}

// certificateASN1 is RFC 5280's Certificate.
type certificateASN1 struct {
	TBS       asn1.RawValue
	Algorithm pkix.AlgorithmIdentifier
	Signature asn1.BitString
}

// errCaptured ends x509.CreateCertificate once it has handed over the to-be-signed bytes.
var errCaptured = errors.New("to-be-signed certificate captured")

// tbsCapture is a crypto.MessageSigner that keeps the message x509.CreateCertificate asks it
// to sign and signs nothing.
type tbsCapture struct {
	pub *ecdsa.PublicKey
	tbs []byte
}

func (c *tbsCapture) Public() crypto.PublicKey { return c.pub }

func (c *tbsCapture) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errCaptured // only SignMessage gives the bytes; never reached with x509 of Go 1.25+
}

func (c *tbsCapture) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("unexpected hash %v", opts.HashFunc())
	}
	c.tbs = append([]byte(nil), msg...)
	return nil, errCaptured
}
