// Package deviceca is the X.509 side of moat's device identity: the platform root
// certificate, the per-tenant device CA certificates it signs, the short-lived device
// certificates a tenant CA issues, their verification, and the wrapping of tenant CA
// private keys for storage. It is a library: no storage, no server, no clock of its own
// (every time is passed in).
//
// The hierarchy has exactly three levels (DESIGN trust model):
//
//	platform root (offline, CN=<name>, O=moat platform, path length 1)
//	└── tenant device CA (online in the server, CN=moat device CA <caID>, O=tenant <tenantID>, path length 0)
//	    └── device certificate (CN=<deviceID>, O=tenant <tenantID>, one URI SAN, clientAuth)
//
// A device certificate names its device in exactly one URI subject alternative name,
//
//	urn:moat:tenant:<tenantID>:device:<deviceID>
//
// where deviceID is the identity.IDFromPublicKey of the certificate's own public key (64
// lower-case hex digits) and tenantID is a moat ID (see below). The subject repeats both:
// CN is the device ID and O is "tenant <tenantID>". "moat" is not a registered URN
// namespace; the form is moat's own and is only ever read by this package.
//
// Tenant IDs and CA IDs are 1 to 48 characters of a-z, 0-9, '_' and '-' (such as
// "tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f"), so they need no escaping in a URI or a name and
// the subject attributes stay within RFC 5280's 64-character bounds.
//
// What it trusts: crypto/rand; the root certificate the caller passes in as the one trust
// anchor (read with [ParseRootCertificate]); the tenant CA certificates the caller passes to
// [Issue] and [VerifyDevice] as ones it accepted with [CheckCA] and still trusts; the
// caller's now; and the secrecy of the key-encryption key given to [Wrap] and [Unwrap].
// Attestation (rule 1) happens before [Issue] is called and is not this package's to check.
//
// What it enforces:
//   - a device certificate names only the device whose key it carries: [Issue] refuses a
//     device ID that is not the hash of the device key, and [ParseDeviceURI] refuses a
//     certificate whose URI, CN or key disagree (rule 1); attacked by
//     TestIssue_RefusesMismatchedDeviceID and TestVerifyDevice_RejectsURIOfAnotherDevice;
//   - a tenant CA speaks only for its own tenant (rule 3): [Issue] refuses a request for
//     another tenant, and [VerifyDevice] refuses a certificate whose URI names a tenant other
//     than the one in the verifying CA's subject; attacked by
//     TestVerifyDevice_RejectsCertOfTenantAAsTenantB and TestVerifyDevice_RejectsTenantClaimAcrossCAs;
//   - an uploaded tenant CA certificate is accepted only if it chains to the root, is a CA
//     that can sign nothing but leaves, and carries exactly the key and subject of the
//     tenant's CSR; attacked by TestCheckCA_Rejects;
//   - a device certificate ends no later than its CA, and verifies only unexpired, for
//     client authentication, through a trusted CA to the root; attacked by
//     TestVerifyDevice_RejectsExpired and TestOpenSSLVerify;
//   - serial numbers are 128 random bits, positive and non-zero; attacked by
//     TestIssue_SerialsUniqueAndPositive;
//   - a wrapped CA key opens only with the same key-encryption key and the same binding
//     (tenant and CA ID), unmodified; attacked by TestUnwrap_Rejects;
//   - the decoders of untrusted input (CSRs, device certificates) are total (rule 5):
//     FuzzParseCSR, FuzzParseDeviceURI.
//
// Only ECDSA P-256 keys are accepted or made, for every level.
//
// Errors that callers branch on are the Err sentinels below; every error that stands for
// one of them wraps it.
//
// Concurrency: the package holds no state; its functions are safe for concurrent use, and
// so is an *ecdsa.PrivateKey passed as a crypto.Signer.
package deviceca

import (
	"errors"
)

// Errors callers branch on.
var (
	// ErrInvalidInput: an argument is missing or out of range (an ID of the wrong form,
	// a validity period that ends before it starts, a key that is not P-256). Nothing was
	// signed.
	ErrInvalidInput = errors.New("invalid input")
	// ErrBadCSR: a certificate request that is malformed, badly signed, not P-256, or
	// whose subject is not that of a moat tenant CA.
	ErrBadCSR = errors.New("bad certificate request")
	// ErrBadCertificate: a certificate that is malformed or not of the shape its role
	// requires (not a CA, wrong path length or key usage, wrong subject or SANs).
	ErrBadCertificate = errors.New("bad certificate")
	// ErrUntrusted: a certificate that does not chain to the trusted root (through a
	// trusted tenant CA, for a device certificate).
	ErrUntrusted = errors.New("certificate does not chain to a trusted CA")
	// ErrExpired: a certificate that is not valid at the given time: expired or not yet
	// valid.
	ErrExpired = errors.New("certificate is not valid at this time")
	// ErrWrongKey: a certificate that carries another key than expected, or a signer
	// whose key is not that of its certificate.
	ErrWrongKey = errors.New("certificate is for another key")
	// ErrWrongTenant: a certificate or request that names another tenant than the one it
	// must (rule 3).
	ErrWrongTenant = errors.New("certificate names another tenant")
	// ErrWrongDevice: a device ID that is not the hash of the certificate's or request's
	// public key.
	ErrWrongDevice = errors.New("device ID is not that of the key")
	// ErrUnwrap: a wrapped key did not open. AES-GCM cannot tell a wrong key-encryption
	// key from a wrong binding or a modification; in every case nothing was returned.
	ErrUnwrap = errors.New("wrapped key does not open: wrong key-encryption key or binding, or modified")
)
