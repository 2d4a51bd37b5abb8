package deviceca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/moat-iot/moat/internal/identity"
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
// Nor does it let x509 encode each certificate: the parts of the to-be-signed bytes that
// are the same for every device of the CA (version, algorithm, issuer, the subject's
// organization, the extensions but the device's URI) are taken once from a certificate
// x509 encoded for another key, and only the serial, validity, common name, key and URI
// are encoded per certificate (BenchmarkIssuer: 122 allocations a certificate, signature
// included, where x509 made 330). TestIssuer_EncodesWhatX509Does checks that the bytes are
// x509's for the same serial; a CA certificate the template cannot be taken from leaves
// the encoding to x509.
//
// An Issuer is safe for concurrent use.
type Issuer struct {
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	tenant string
	tmpl   *tbsTemplate // nil: every certificate is encoded by x509
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
	i := &Issuer{ca: ca, key: key, tenant: tenant}
	i.tmpl = i.newTemplate()
	return i, nil
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
	tbs := i.tmpl.encode(req, sn)
	if tbs == nil {
		if tbs, err = i.x509TBS(req, sn); err != nil {
			return nil, "", fmt.Errorf("issue device certificate for %s: encode: %w", req.DeviceID, err)
		}
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, i.key, digest[:])
	if err != nil {
		return nil, "", fmt.Errorf("issue device certificate for %s: %w", req.DeviceID, err)
	}
	// RFC 5280's Certificate: the to-be-signed bytes, the algorithm, the signature.
	b := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+32))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidECDSAWithSHA256) })
		b.AddASN1BitString(sig)
	})
	if der, err = b.Bytes(); err != nil {
		return nil, "", fmt.Errorf("issue device certificate for %s: %w", req.DeviceID, err)
	}
	return der, sn.Text(16), nil
}

// x509TBS is the to-be-signed certificate x509.CreateCertificate encodes for req.
func (i *Issuer) x509TBS(req IssueRequest, sn *big.Int) ([]byte, error) {
	tmpl := deviceTemplate(req)
	tmpl.SerialNumber = sn
	c := &tbsCapture{pub: &i.key.PublicKey}
	_, err := x509.CreateCertificate(rand.Reader, tmpl, i.ca, req.DevicePublicKey, c)
	if !errors.Is(err, errCaptured) || c.tbs == nil {
		return nil, err
	}
	return c.tbs, nil
}

// tbsTemplate is what the to-be-signed certificates of one Issuer share, as x509 encoded
// it: whole elements, and the elements of the subject and of the extensions before and
// after the ones that name the device (its common name and its URI).
type tbsTemplate struct {
	version, sigAlg, issuer  []byte
	subjectHead, subjectTail []byte
	spkiPrefix               []byte // a P-256 SubjectPublicKeyInfo up to the point
	extsHead, extsTail       []byte
	uriPrefix                string
}

var (
	oidCommonName     = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// newTemplate takes the template from a certificate x509 encodes for a key of its own; nil
// when that certificate is not shaped as expected (then x509 encodes each one).
func (i *Issuer) newTemplate() *tbsTemplate {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil
	}
	id := string(identity.IDFromPublicKey(&k.PublicKey))
	nb := i.ca.NotBefore
	tbs, err := i.x509TBS(IssueRequest{DevicePublicKey: &k.PublicKey, TenantID: i.tenant, DeviceID: id,
		NotBefore: nb, NotAfter: nb.Add(time.Hour)}, big.NewInt(1))
	if err != nil {
		return nil
	}
	point, err := k.PublicKey.Bytes()
	if err != nil {
		return nil
	}
	var t tbsTemplate
	var seq, serial, validity, subject, spki, extsOuter, exts cryptobyte.String
	in := cryptobyte.String(tbs)
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1Element((*cryptobyte.String)(&t.version), cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!seq.ReadASN1Element(&serial, cbasn1.INTEGER) ||
		!seq.ReadASN1Element((*cryptobyte.String)(&t.sigAlg), cbasn1.SEQUENCE) ||
		!seq.ReadASN1Element((*cryptobyte.String)(&t.issuer), cbasn1.SEQUENCE) ||
		!seq.ReadASN1Element(&validity, cbasn1.SEQUENCE) ||
		!seq.ReadASN1(&subject, cbasn1.SEQUENCE) ||
		!seq.ReadASN1Element(&spki, cbasn1.SEQUENCE) ||
		!seq.ReadASN1(&extsOuter, cbasn1.Tag(3).Constructed().ContextSpecific()) || !seq.Empty() ||
		!extsOuter.ReadASN1(&exts, cbasn1.SEQUENCE) || !extsOuter.Empty() {
		return nil
	}
	if !bytes.HasSuffix(spki, point) {
		return nil
	}
	t.spkiPrefix = spki[:len(spki)-len(point)]
	var ok bool
	if t.subjectHead, t.subjectTail, ok = split(subject, func(rdn cryptobyte.String) bool {
		var set, atv cryptobyte.String
		var oid asn1.ObjectIdentifier
		return rdn.ReadASN1(&set, cbasn1.SET) && set.ReadASN1(&atv, cbasn1.SEQUENCE) &&
			atv.ReadASN1ObjectIdentifier(&oid) && oid.Equal(oidCommonName)
	}); !ok {
		return nil
	}
	if t.extsHead, t.extsTail, ok = split(exts, func(ext cryptobyte.String) bool {
		var body cryptobyte.String
		var oid asn1.ObjectIdentifier
		return ext.ReadASN1(&body, cbasn1.SEQUENCE) && body.ReadASN1ObjectIdentifier(&oid) &&
			oid.Equal(oidSubjectAltName)
	}); !ok {
		return nil
	}
	t.uriPrefix = strings.TrimSuffix(deviceURI(i.tenant, id).String(), id)
	// The template must give back the certificate it was taken from.
	if !bytes.Equal(t.encode(IssueRequest{DevicePublicKey: &k.PublicKey, TenantID: i.tenant, DeviceID: id,
		NotBefore: nb, NotAfter: nb.Add(time.Hour)}, big.NewInt(1)), tbs) {
		return nil
	}
	return &t
}

// split splits the elements of a DER sequence's contents around the one element that is
// (exactly one): the raw elements before it and after it.
func split(contents cryptobyte.String, is func(cryptobyte.String) bool) (head, tail []byte, ok bool) {
	found := 0
	start := []byte(contents)
	for !contents.Empty() {
		var el cryptobyte.String
		at := len(start) - len(contents)
		if !contents.ReadAnyASN1Element(&el, nil) {
			return nil, nil, false
		}
		if is(el) {
			found++
			head, tail = start[:at], start[at+len(el):]
		}
	}
	return head, tail, found == 1
}

// encode encodes the to-be-signed certificate for req, nil when x509 must (a device ID
// that is not a PrintableString, a time that is neither UTCTime nor GeneralizedTime).
func (t *tbsTemplate) encode(req IssueRequest, sn *big.Int) []byte {
	if t == nil {
		return nil
	}
	pub, ok := p256(req.DevicePublicKey)
	if !ok {
		return nil
	}
	point, err := pub.Bytes()
	if err != nil {
		return nil
	}
	for _, c := range []byte(req.DeviceID) {
		if !alphanumeric(c) {
			return nil
		}
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 512))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(t.version)
		b.AddASN1BigInt(sn)
		b.AddBytes(t.sigAlg)
		b.AddBytes(t.issuer)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, req.NotBefore)
			addTime(b, req.NotAfter)
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(t.subjectHead)
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidCommonName)
					b.AddASN1(cbasn1.PrintableString, func(b *cryptobyte.Builder) { b.AddBytes([]byte(req.DeviceID)) })
				})
			})
			b.AddBytes(t.subjectTail)
		})
		b.AddBytes(t.spkiPrefix)
		b.AddBytes(point)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(t.extsHead)
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidSubjectAltName)
					b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) {
								b.AddBytes([]byte(t.uriPrefix))
								b.AddBytes([]byte(req.DeviceID))
							})
						})
					})
				})
				b.AddBytes(t.extsTail)
			})
		})
	})
	der, err := b.Bytes()
	if err != nil {
		return nil
	}
	return der
}

// alphanumeric: c is a PrintableString character the template encodes as is.
func alphanumeric(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// addTime encodes a validity time as x509 does: UTCTime from 1950 to 2049, GeneralizedTime
// otherwise (RFC 5280 section 4.1.2.5), to the second, in UTC.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
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
