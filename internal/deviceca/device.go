package deviceca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/identity"
)

// IssueRequest is what [Issue] puts in a device certificate. Every field is required.
type IssueRequest struct {
	// DevicePublicKey is the device's identity key (ECDSA P-256).
	DevicePublicKey *ecdsa.PublicKey
	// TenantID is the tenant the device belongs to; it must be the tenant of the CA.
	TenantID string
	// DeviceID must be identity.IDFromPublicKey(DevicePublicKey).
	DeviceID string
	// NotBefore and NotAfter bound the certificate's validity; NotAfter must be after
	// NotBefore and no later than the CA's NotAfter.
	NotBefore, NotAfter time.Time
}

// validate returns every problem of r as one error, given the CA's tenant and end.
func (r IssueRequest) validate(caTenant string, caNotAfter time.Time) error {
	var errs []error
	if err := checkID("tenant", r.TenantID); err != nil {
		errs = append(errs, err)
	} else if r.TenantID != caTenant {
		errs = append(errs, fmt.Errorf("%w: request for tenant %s from a CA of tenant %s", ErrWrongTenant, r.TenantID, caTenant))
	}
	if _, ok := p256(r.DevicePublicKey); !ok {
		errs = append(errs, fmt.Errorf("%w: device key is not ECDSA P-256", ErrInvalidInput))
	} else if !identity.ValidID(r.DeviceID) {
		errs = append(errs, fmt.Errorf("%w: device ID %s: want %d lower-case hex digits", ErrInvalidInput, quote(r.DeviceID), identity.IDLen))
	} else if id := identity.IDFromPublicKey(r.DevicePublicKey); string(id) != r.DeviceID {
		errs = append(errs, fmt.Errorf("%w: device ID %s, the key's is %s", ErrWrongDevice, r.DeviceID, id))
	}
	switch {
	case r.NotBefore.IsZero() || r.NotAfter.IsZero():
		errs = append(errs, fmt.Errorf("%w: validity period not given", ErrInvalidInput))
	case !r.NotAfter.After(r.NotBefore):
		errs = append(errs, fmt.Errorf("%w: not after %v is not after not before %v", ErrInvalidInput, r.NotAfter.UTC(), r.NotBefore.UTC()))
	case r.NotAfter.After(caNotAfter):
		errs = append(errs, fmt.Errorf("%w: not after %v is after the CA's %v", ErrInvalidInput, r.NotAfter.UTC(), caNotAfter.UTC()))
	}
	return errors.Join(errs...)
}

// deviceURI is the one URI SAN of a device certificate:
// urn:moat:tenant:<tenantID>:device:<deviceID>.
func deviceURI(tenantID, deviceID string) *url.URL {
	return &url.URL{Scheme: "urn", Opaque: "moat:tenant:" + tenantID + ":device:" + deviceID}
}

// Issue issues a device certificate from the tenant CA ca, whose private key caKey holds,
// and returns its DER and its serial number as lower-case hex without leading zeros
// (cert.SerialNumber.Text(16)).
//
// The certificate is a leaf (CA:false) for client authentication (key usage digital
// signature, extended key usage clientAuth), with subject CN=<deviceID>, O=tenant
// <tenantID>, the one URI SAN urn:moat:tenant:<tenantID>:device:<deviceID>, a random
// 128-bit serial number and the CA's key identifier as authority key identifier.
//
// Issue trusts ca to be a tenant CA the caller accepted with [CheckCA]. It refuses a
// device ID that is not the hash of the device key (ErrWrongDevice), a tenant other than
// the CA's (ErrWrongTenant), and a validity period that is empty or ends after the CA
// (ErrInvalidInput). Attestation (rule 1) is the caller's to check first.
func Issue(ca *x509.Certificate, caKey crypto.Signer, req IssueRequest) (der []byte, serial string, err error) {
	if ca == nil {
		return nil, "", fmt.Errorf("issue device certificate: %w: no CA certificate", ErrInvalidInput)
	}
	if err := checkTenantCA(ca); err != nil {
		return nil, "", fmt.Errorf("issue device certificate: CA: %w", err)
	}
	if err := checkSigner(caKey, ca); err != nil {
		return nil, "", fmt.Errorf("issue device certificate: %w", err)
	}
	caTenant, _, _ := parseCASubject(ca.Subject) // checkTenantCA parsed it
	if err := req.validate(caTenant, ca.NotAfter); err != nil {
		return nil, "", fmt.Errorf("issue device certificate: %w", err)
	}
	sn, err := newSerial()
	if err != nil {
		return nil, "", fmt.Errorf("issue device certificate for %s: %w", req.DeviceID, err)
	}
	tmpl := deviceTemplate(req)
	tmpl.SerialNumber = sn
	// AuthorityKeyId is taken from ca.SubjectKeyId, which checkTenantCA requires.
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca, req.DevicePublicKey, caKey)
	if err != nil {
		return nil, "", fmt.Errorf("issue device certificate for %s: %w", req.DeviceID, err)
	}
	return der, sn.Text(16), nil
}

// ParseDeviceURI returns the tenant and device a device certificate names, after checking
// that it names them consistently: it is not a CA; it has exactly one subject alternative
// name, the URI urn:moat:tenant:<tenantID>:device:<deviceID> (ErrBadCertificate); its
// subject is exactly CN=<deviceID> (ErrWrongDevice otherwise), O=tenant <tenantID>
// (ErrWrongTenant otherwise); and deviceID is the hash of the certificate's own P-256 key
// (ErrWrongDevice), so a certificate for one device cannot name another.
//
// It checks no signature or validity: [VerifyDevice] does, and then calls it.
func ParseDeviceURI(cert *x509.Certificate) (tenantID, deviceID string, err error) {
	if cert == nil {
		return "", "", fmt.Errorf("parse device certificate: %w: no certificate", ErrInvalidInput)
	}
	tenantID, deviceID, err = parseDeviceCert(cert)
	if err != nil {
		return "", "", fmt.Errorf("parse device certificate: %w", err)
	}
	return tenantID, deviceID, nil
}

func parseDeviceCert(cert *x509.Certificate) (tenantID, deviceID string, err error) {
	if cert.IsCA {
		return "", "", fmt.Errorf("%w: a CA certificate", ErrBadCertificate)
	}
	if len(cert.URIs) != 1 || len(cert.DNSNames)+len(cert.EmailAddresses)+len(cert.IPAddresses) != 0 {
		return "", "", fmt.Errorf("%w: want exactly one subject alternative name, a URI", ErrBadCertificate)
	}
	tenantID, deviceID, err = parseDeviceURI(cert.URIs[0])
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	cn, orgTenant, err := parseSubject(cert.Subject, "")
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	if cn != deviceID {
		return "", "", fmt.Errorf("%w: subject CN %s, URI names device %s", ErrWrongDevice, quote(cn), deviceID)
	}
	if orgTenant != tenantID {
		return "", "", fmt.Errorf("%w: subject O names tenant %s, URI tenant %s", ErrWrongTenant, orgTenant, tenantID)
	}
	pub, ok := p256(cert.PublicKey)
	if !ok {
		return "", "", fmt.Errorf("%w: key is not ECDSA P-256", ErrBadCertificate)
	}
	if id := identity.IDFromPublicKey(pub); string(id) != deviceID {
		return "", "", fmt.Errorf("%w: URI names device %s, the key's is %s", ErrWrongDevice, deviceID, id)
	}
	return tenantID, deviceID, nil
}

// parseDeviceURI reads urn:moat:tenant:<tenantID>:device:<deviceID>, and nothing else.
func parseDeviceURI(u *url.URL) (tenantID, deviceID string, err error) {
	bad := fmt.Errorf("URI %s: want urn:moat:tenant:<tenant ID>:device:<device ID>", quote(u.String()))
	parts := strings.Split(u.Opaque, ":")
	if u.Scheme != "urn" || len(parts) != 5 || parts[0] != "moat" || parts[1] != "tenant" || parts[3] != "device" {
		return "", "", bad
	}
	tenantID, deviceID = parts[2], parts[4]
	if !validID(tenantID) || !identity.ValidID(deviceID) || u.String() != deviceURI(tenantID, deviceID).String() {
		return "", "", bad
	}
	return tenantID, deviceID, nil
}

// VerifyDevice verifies a device certificate presented at now and returns the tenant and
// device it names and the tenant CA that issued it. intermediates are the tenant CA
// certificates trusted now (accepted with [CheckCA], not revoked), of any tenants; root is
// the platform root.
//
// The certificate must chain to root through exactly one of intermediates, with every
// certificate valid at now (ErrExpired) and usable for client authentication
// (ErrUntrusted otherwise); it must pass [ParseDeviceURI]; and the issuing CA's subject
// must name the tenant of the URI (ErrWrongTenant), so one tenant's CA cannot vouch for
// another tenant's devices (rule 3).
func VerifyDevice(cert *x509.Certificate, intermediates []*x509.Certificate, root *x509.Certificate, now time.Time) (tenantID, deviceID string, ca *x509.Certificate, err error) {
	if cert == nil || root == nil {
		return "", "", nil, fmt.Errorf("verify device certificate: %w: no certificate or root", ErrInvalidInput)
	}
	chains, err := verifyChains(cert, intermediates, root, now)
	if err != nil {
		return "", "", nil, fmt.Errorf("verify device certificate: %w", err)
	}
	tenantID, deviceID, err = ParseDeviceURI(cert)
	if err != nil {
		return "", "", nil, fmt.Errorf("verify device certificate: %w", err)
	}
	for _, c := range chains {
		caTenant, _, err := parseCASubject(c[1].Subject)
		if err != nil {
			return "", "", nil, fmt.Errorf("verify device certificate %s: issuing CA: %w: %w", deviceID, ErrBadCertificate, err)
		}
		if caTenant != tenantID {
			return "", "", nil, fmt.Errorf("verify device certificate %s: %w: URI names tenant %s, the issuing CA tenant %s", deviceID, ErrWrongTenant, tenantID, caTenant)
		}
	}
	return tenantID, deviceID, chains[0][1], nil
}

// verifyChains runs x509.Verify for client authentication and returns the chains, each
// of exactly device, tenant CA, root.
func verifyChains(cert *x509.Certificate, intermediates []*x509.Certificate, root *x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	opts.Roots.AddCert(root)
	for _, c := range intermediates {
		if c != nil {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := cert.Verify(opts)
	if err != nil {
		return nil, verifyError(err)
	}
	for _, c := range chains {
		if len(c) != 3 {
			return nil, fmt.Errorf("%w: chain of %d certificates, want device, tenant CA, root", ErrUntrusted, len(c))
		}
	}
	return chains, nil
}

// Chain returns the PEM certificate chain a tenant downloads: the given tenant CA
// certificates, then the root, each one CERTIFICATE block. Nil certificates are skipped.
func Chain(root *x509.Certificate, cas ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cas {
		if c != nil {
			out = append(out, encodePEM(pemCertificate, c.Raw)...)
		}
	}
	if root != nil {
		out = append(out, encodePEM(pemCertificate, root.Raw)...)
	}
	return out
}
