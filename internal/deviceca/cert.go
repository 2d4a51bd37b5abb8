package deviceca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

const (
	// rootOrg is the O of the platform root certificate.
	rootOrg = "moat platform"
	// caCNPrefix starts the CN of a tenant CA; the CA ID follows.
	caCNPrefix = "moat device CA "
	// tenantOrgPrefix starts the O of a tenant CA and of a device certificate; the tenant
	// ID follows.
	tenantOrgPrefix = "tenant "
	// maxIDLen bounds tenant and CA IDs, so CN and O stay within 64 characters.
	maxIDLen = 48
	// backdate is how far before now a root or CA certificate starts, so that a server
	// whose clock is a little behind the operator's accepts it at once.
	backdate = 5 * time.Minute
	// serialBytes is the size of a random serial number: 128 bits.
	serialBytes = 16

	pemCertificate = "CERTIFICATE"
	pemCSR         = "CERTIFICATE REQUEST"
)

// validID reports whether s is a tenant or CA ID: 1 to maxIDLen of a-z, 0-9, '_', '-'.
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// checkID returns an ErrInvalidInput error unless id is a valid ID of the named kind.
func checkID(kind, id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: %s ID %s: want 1 to %d of a-z, 0-9, '_', '-'", ErrInvalidInput, kind, quote(id), maxIDLen)
	}
	return nil
}

// quote quotes s for an error message, cut short if it is long (it may be untrusted).
func quote(s string) string {
	const maxQuoted = 72
	if len(s) > maxQuoted {
		return fmt.Sprintf("%q...", s[:maxQuoted])
	}
	return fmt.Sprintf("%q", s)
}

// newSerial returns a random positive 128-bit serial number; it is never zero.
func newSerial() (*big.Int, error) {
	var b [serialBytes]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if s := new(big.Int).SetBytes(b[:]); s.Sign() > 0 {
			return s, nil
		}
	}
}

// p256 returns pub as a P-256 ECDSA public key, or false.
func p256(pub any) (*ecdsa.PublicKey, bool) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k == nil || k.Curve != elliptic.P256() {
		return nil, false
	}
	return k, true
}

// signerKey returns the P-256 public key of s, or an ErrInvalidInput error.
func signerKey(s crypto.Signer) (*ecdsa.PublicKey, error) {
	if k, ok := s.(*ecdsa.PrivateKey); s == nil || ok && k == nil {
		return nil, fmt.Errorf("%w: no signer", ErrInvalidInput)
	}
	pub, ok := p256(s.Public())
	if !ok {
		return nil, fmt.Errorf("%w: signer key is not ECDSA P-256", ErrInvalidInput)
	}
	return pub, nil
}

// checkSigner returns an error unless s holds the private key of cert.
func checkSigner(s crypto.Signer, cert *x509.Certificate) error {
	pub, err := signerKey(s)
	if err != nil {
		return err
	}
	if !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("%w: signer does not hold the key of %s", ErrWrongKey, quote(cert.Subject.CommonName))
	}
	return nil
}

// checkPeriod returns an ErrInvalidInput error unless now and validity make a period.
func checkPeriod(now time.Time, validity time.Duration) error {
	if now.IsZero() {
		return fmt.Errorf("%w: no time given", ErrInvalidInput)
	}
	if validity <= 0 {
		return fmt.Errorf("%w: validity %v, want more than 0", ErrInvalidInput, validity)
	}
	return nil
}

// decodePEM returns the DER of the one PEM block of type typ that data holds, and nothing
// else but white space.
func decodePEM(data []byte, typ string) ([]byte, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM %q block", typ)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("PEM block is %s, want %q", quote(block.Type), typ)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("PEM block has headers")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data after the PEM block")
	}
	return block.Bytes, nil
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCertificatePEM parses one PEM certificate; errors wrap ErrBadCertificate.
func parseCertificatePEM(data []byte) (*x509.Certificate, error) {
	der, err := decodePEM(data, pemCertificate)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	return cert, nil
}

// caSubject is the subject of the tenant CA caID of tenant tenantID.
func caSubject(tenantID, caID string) pkix.Name {
	return pkix.Name{CommonName: caCNPrefix + caID, Organization: []string{tenantOrgPrefix + tenantID}}
}

// deviceSubject is the subject of a device certificate.
func deviceSubject(tenantID, deviceID string) pkix.Name {
	return pkix.Name{CommonName: deviceID, Organization: []string{tenantOrgPrefix + tenantID}}
}

// parseSubject reads a subject of exactly one CN, which must start with cnPrefix, and one
// O of the form "tenant <tenantID>". It returns the CN after the prefix and the tenant ID,
// which it checks; the caller checks the CN.
func parseSubject(n pkix.Name, cnPrefix string) (cn, tenantID string, err error) {
	if len(n.Names) != 2 || len(n.Organization) != 1 || n.CommonName == "" {
		return "", "", fmt.Errorf("subject %s: want exactly one CN and one O", quote(n.String()))
	}
	cn, ok := strings.CutPrefix(n.CommonName, cnPrefix)
	if !ok {
		return "", "", fmt.Errorf("subject CN %s does not start with %q", quote(n.CommonName), cnPrefix)
	}
	tenantID, ok = strings.CutPrefix(n.Organization[0], tenantOrgPrefix)
	if !ok || !validID(tenantID) {
		return "", "", fmt.Errorf("subject O %s: want %q and a tenant ID", quote(n.Organization[0]), tenantOrgPrefix)
	}
	return cn, tenantID, nil
}

// parseCASubject returns the tenant and CA IDs named by a tenant CA subject.
func parseCASubject(n pkix.Name) (tenantID, caID string, err error) {
	caID, tenantID, err = parseSubject(n, caCNPrefix)
	if err != nil {
		return "", "", err
	}
	if !validID(caID) {
		return "", "", fmt.Errorf("subject CN %s: not a CA ID", quote(n.CommonName))
	}
	return tenantID, caID, nil
}
