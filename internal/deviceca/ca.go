package deviceca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// CSRInfo is what a tenant CA's certificate request says, once [ParseCSR] checked it.
type CSRInfo struct {
	TenantID  string
	CAID      string
	PublicKey *ecdsa.PublicKey
}

// NewCAKey returns a new ECDSA P-256 key for a tenant CA.
func NewCAKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA key: %w", err)
	}
	return key, nil
}

// NewCSR returns the PEM certificate request for tenant CA caID of tenant tenantID, signed
// by key. Its subject is CN=moat device CA <caID>, O=tenant <tenantID>.
func NewCSR(key *ecdsa.PrivateKey, tenantID, caID string) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("new CSR: %w: no key", ErrInvalidInput)
	}
	if _, err := signerKey(key); err != nil {
		return nil, fmt.Errorf("new CSR: %w", err)
	}
	if err := checkIDs(tenantID, caID); err != nil {
		return nil, fmt.Errorf("new CSR: %w", err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:            caSubject(tenantID, caID),
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("new CSR: %w", err)
	}
	return encodePEM(pemCSR, der), nil
}

func checkIDs(tenantID, caID string) error {
	if err := checkID("tenant", tenantID); err != nil {
		return err
	}
	return checkID("CA", caID)
}

// ParseCSR reads a tenant CA's certificate request (one PEM block) and checks its
// signature, its key (ECDSA P-256) and its subject, which must be exactly what [NewCSR]
// writes. Errors wrap ErrBadCSR. Requested extensions are ignored: [SignCA] sets its own.
func ParseCSR(data []byte) (CSRInfo, error) {
	der, err := decodePEM(data, pemCSR)
	if err != nil {
		return CSRInfo{}, fmt.Errorf("parse CSR: %w: %w", ErrBadCSR, err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return CSRInfo{}, fmt.Errorf("parse CSR: %w: %w", ErrBadCSR, err)
	}
	pub, ok := p256(csr.PublicKey)
	if !ok {
		return CSRInfo{}, fmt.Errorf("parse CSR: %w: key is not ECDSA P-256", ErrBadCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return CSRInfo{}, fmt.Errorf("parse CSR: %w: %w", ErrBadCSR, err)
	}
	tenantID, caID, err := parseCASubject(csr.Subject)
	if err != nil {
		return CSRInfo{}, fmt.Errorf("parse CSR: %w: %w", ErrBadCSR, err)
	}
	return CSRInfo{TenantID: tenantID, CAID: caID, PublicKey: pub}, nil
}

// SignCA issues the tenant CA certificate a CSR asks for, signed by the platform root, and
// returns it as PEM. Run it offline, on the operator's machine: rootSigner is the offline
// root key and must hold the key of root.
//
// The certificate is a CA with path length 0 (it signs device certificates only) that may
// sign certificates and CRLs, with the CSR's key and subject, a random 128-bit serial
// number, subject and authority key identifiers, valid from 5 minutes before now for
// validity. It refuses a validity that would end after the root's.
func SignCA(root *x509.Certificate, rootSigner crypto.Signer, csrPEM []byte, now time.Time, validity time.Duration) ([]byte, error) {
	if err := checkRoot(root); err != nil {
		return nil, fmt.Errorf("sign CA: %w", err)
	}
	if err := checkSigner(rootSigner, root); err != nil {
		return nil, fmt.Errorf("sign CA: %w", err)
	}
	info, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("sign CA: %w", err)
	}
	if err := checkPeriod(now, validity); err != nil {
		return nil, fmt.Errorf("sign CA %s: %w", info.CAID, err)
	}
	notAfter := now.Add(validity)
	if notAfter.After(root.NotAfter) {
		return nil, fmt.Errorf("sign CA %s: %w: it would end at %v, after the root (%v)", info.CAID, ErrInvalidInput, notAfter.UTC(), root.NotAfter.UTC())
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("sign CA %s: %w", info.CAID, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               caSubject(info.TenantID, info.CAID),
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
	}
	// SubjectKeyId is derived from the key (a CA template), AuthorityKeyId is the root's.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, info.PublicKey, rootSigner)
	if err != nil {
		return nil, fmt.Errorf("sign CA %s: %w", info.CAID, err)
	}
	return encodePEM(pemCertificate, der), nil
}

// CheckCA checks a tenant CA certificate (one PEM block) the operator signed with
// [SignCA] for the request csr, as the server does when it is uploaded, and returns it.
// It must chain directly to root (ErrUntrusted), be valid at now (ErrExpired), be a CA of
// path length 0 that may sign certificates (ErrBadCertificate), carry exactly the CSR's
// key (ErrWrongKey), and name the CSR's tenant (ErrWrongTenant) and CA ID
// (ErrBadCertificate).
func CheckCA(root *x509.Certificate, certPEM []byte, csr CSRInfo, now time.Time) (*x509.Certificate, error) {
	if err := checkRoot(root); err != nil {
		return nil, fmt.Errorf("check CA %s: %w", csr.CAID, err)
	}
	if err := checkCSRInfo(csr); err != nil {
		return nil, fmt.Errorf("check CA %s: %w", csr.CAID, err)
	}
	cert, err := parseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("check CA %s: %w", csr.CAID, err)
	}
	if err := checkIssuedByRoot(cert, root, now); err != nil {
		return nil, fmt.Errorf("check CA %s: %w", csr.CAID, err)
	}
	if err := checkTenantCA(cert); err != nil {
		return nil, fmt.Errorf("check CA %s: %w", csr.CAID, err)
	}
	if pub, _ := p256(cert.PublicKey); !pub.Equal(csr.PublicKey) { // checkTenantCA checked the type
		return nil, fmt.Errorf("check CA %s: %w: not the key of the CSR", csr.CAID, ErrWrongKey)
	}
	tenantID, caID, _ := parseCASubject(cert.Subject) // checkTenantCA parsed it
	if tenantID != csr.TenantID {
		return nil, fmt.Errorf("check CA %s: %w: subject names tenant %s, the CSR %s", csr.CAID, ErrWrongTenant, tenantID, csr.TenantID)
	}
	if caID != csr.CAID {
		return nil, fmt.Errorf("check CA %s: %w: subject names CA %s", csr.CAID, ErrBadCertificate, caID)
	}
	return cert, nil
}

// checkCSRInfo returns an ErrInvalidInput error unless csr is complete.
func checkCSRInfo(csr CSRInfo) error {
	if _, ok := p256(csr.PublicKey); !ok {
		return fmt.Errorf("%w: CSR key is not ECDSA P-256", ErrInvalidInput)
	}
	return checkIDs(csr.TenantID, csr.CAID)
}

// checkIssuedByRoot verifies that cert was signed by root and that both are valid at now.
func checkIssuedByRoot(cert, root *x509.Certificate, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return verifyError(err)
	}
	for _, c := range chains {
		if len(c) != 2 {
			return fmt.Errorf("%w: not issued by the root", ErrUntrusted)
		}
	}
	return nil
}

// checkTenantCA returns an ErrBadCertificate error unless cert has the shape of a tenant
// CA certificate: a P-256 CA of path length 0 that may sign certificates for client
// authentication, with a subject key identifier and a tenant CA subject.
func checkTenantCA(cert *x509.Certificate) error {
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return fmt.Errorf("%w: not a CA", ErrBadCertificate)
	case cert.MaxPathLen != 0 || !cert.MaxPathLenZero:
		return fmt.Errorf("%w: path length is not 0", ErrBadCertificate)
	case cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("%w: may not sign certificates", ErrBadCertificate)
	case len(cert.ExtKeyUsage) != 0 && !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) &&
		!slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny):
		return fmt.Errorf("%w: extended key usage excludes client authentication", ErrBadCertificate)
	case len(cert.SubjectKeyId) == 0:
		return fmt.Errorf("%w: no subject key identifier", ErrBadCertificate)
	}
	if _, ok := p256(cert.PublicKey); !ok {
		return fmt.Errorf("%w: key is not ECDSA P-256", ErrBadCertificate)
	}
	if _, _, err := parseCASubject(cert.Subject); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	return nil
}

// verifyError maps an error of x509.Verify to ErrExpired or ErrUntrusted, wrapping both.
func verifyError(err error) error {
	if e, ok := errors.AsType[x509.CertificateInvalidError](err); ok && e.Reason == x509.Expired {
		return fmt.Errorf("%w: %w", ErrExpired, err)
	}
	return fmt.Errorf("%w: %w", ErrUntrusted, err)
}
