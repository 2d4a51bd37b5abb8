package deviceca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/cryptotest"

	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
)

var update = flag.Bool("update", false, "rewrite the seed corpora in testdata/fuzz")

// errUnparsable stands for input that x509.ParseCertificate already refuses.
var errUnparsable = errors.New("x509.ParseCertificate refuses it")

// FuzzParseCSR (rule 5): ParseCSR never panics, on PEM and, wrapped in PEM, on DER; what it
// accepts names valid tenant and CA IDs and a P-256 key, and parses again the same.
func FuzzParseCSR(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, csrPEM(data)} {
			info, err := deviceca.ParseCSR(in)
			if err != nil {
				if !errors.Is(err, deviceca.ErrBadCSR) || info != (deviceca.CSRInfo{}) {
					t.Fatalf("ParseCSR = %+v, %v; want zero, %v", info, err, deviceca.ErrBadCSR)
				}
				continue
			}
			if info.PublicKey.Curve != elliptic.P256() || !validCSRIDs(info) {
				t.Fatalf("ParseCSR accepted %+v", info)
			}
			again, err := deviceca.ParseCSR(bytes.Clone(in))
			if err != nil || again.TenantID != info.TenantID || again.CAID != info.CAID || !again.PublicKey.Equal(info.PublicKey) {
				t.Fatalf("second ParseCSR = %+v, %v; first %+v", again, err, info)
			}
		}
	})
}

// validCSRIDs reports whether NewCSR takes the IDs of info, as it does only valid ones.
func validCSRIDs(info deviceca.CSRInfo) bool {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false
	}
	_, err = deviceca.NewCSR(key, info.TenantID, info.CAID)
	return err == nil
}

func csrPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// FuzzParseDeviceURI (rule 5): on any certificate DER that x509.ParseCertificate takes,
// ParseDeviceURI never panics, and what it accepts names, in its one URI, the device whose
// key the certificate carries and agrees with the subject.
func FuzzParseDeviceURI(f *testing.F) {
	f.Fuzz(func(t *testing.T, der []byte) {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		tenantID, deviceID, err := deviceca.ParseDeviceURI(cert)
		if err != nil {
			if tenantID != "" || deviceID != "" {
				t.Fatalf("ParseDeviceURI = %q, %q with error %v", tenantID, deviceID, err)
			}
			return
		}
		pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
		if !ok || string(identity.IDFromPublicKey(pub)) != deviceID {
			t.Fatalf("ParseDeviceURI accepted device %s for another key", deviceID)
		}
		want := "urn:moat:tenant:" + tenantID + ":device:" + deviceID
		if len(cert.URIs) != 1 || cert.URIs[0].String() != want || cert.Subject.CommonName != deviceID {
			t.Fatalf("ParseDeviceURI accepted URIs %v, CN %q as %s", cert.URIs, cert.Subject.CommonName, want)
		}
	})
}

type seed struct {
	data []byte
	want error // nil: accepted
}

// csrSeeds is the seed corpus of FuzzParseCSR by file name: DER, except the PEM seed.
func csrSeeds(t *testing.T) map[string]seed {
	key := newKey(t)
	valid := newCSR(t, key, tenantA, caIDA)
	block, _ := pem.Decode(valid)
	craft := func(cn, o string) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject(cn, o)}, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384CSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject("moat device CA "+caIDA, "tenant "+tenantA)}, p384)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]seed{
		"valid-der":        {block.Bytes, nil},
		"valid-pem":        {valid, nil},
		"tampered-subject": {bytes.Replace(block.Bytes, []byte(tenantA), []byte(tenantB), 1), deviceca.ErrBadCSR},
		"cn-no-prefix":     {craft(caIDA, "tenant "+tenantA), deviceca.ErrBadCSR},
		"bad-tenant-id":    {craft("moat device CA "+caIDA, "tenant A:B"), deviceca.ErrBadCSR},
		"p384":             {p384CSR, deviceca.ErrBadCSR},
		"empty":            {[]byte{}, deviceca.ErrBadCSR},
	}
}

// parseCSRSeed parses a seed the way FuzzParseCSR's second input does for DER.
func parseCSRSeed(data []byte) error {
	if !bytes.HasPrefix(data, []byte("-----BEGIN")) {
		data = csrPEM(data)
	}
	_, err := deviceca.ParseCSR(data)
	return err
}

// deviceSeeds is the seed corpus of FuzzParseDeviceURI by file name: certificate DER.
func deviceSeeds(t *testing.T) map[string]seed {
	p := newPlatform(t)
	ca := p.newCA(t, tenantA, caIDA)
	d, other := newDevice(t), newDevice(t)
	with := func(change func(*x509.Certificate)) []byte {
		tmpl := leafTemplate(tenantA, d.id)
		change(tmpl)
		return ca.craft(t, tmpl, &d.key.PublicKey).Raw
	}
	valid := ca.issue(t, d).Raw
	return map[string]seed{
		"valid":          {valid, nil},
		"uri-other":      {with(func(c *x509.Certificate) { c.URIs[0] = mustURL("urn:moat:tenant:" + tenantA + ":device:" + other.id) }), deviceca.ErrWrongDevice},
		"two-uris":       {with(func(c *x509.Certificate) { c.URIs = append(c.URIs, c.URIs[0]) }), deviceca.ErrBadCertificate},
		"o-other-tenant": {with(func(c *x509.Certificate) { c.Subject.Organization = []string{"tenant " + tenantB} }), deviceca.ErrWrongTenant},
		"dns-san":        {with(func(c *x509.Certificate) { c.DNSNames = []string{"device.example"} }), deviceca.ErrBadCertificate},
		"spiffe-uri":     {with(func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL("spiffe://moat/" + d.id)} }), deviceca.ErrBadCertificate},
		"tenant-ca":      {ca.cert.Raw, deviceca.ErrBadCertificate},
		"root":           {p.root.Raw, deviceca.ErrBadCertificate},
		"truncated":      {valid[:len(valid)/2], errUnparsable},
		"empty":          {[]byte{}, errUnparsable},
	}
}

func parseDeviceSeed(data []byte) error {
	cert, err := x509.ParseCertificate(data)
	if err != nil {
		return errUnparsable
	}
	_, _, err = deviceca.ParseDeviceURI(cert)
	return err
}

// TestFuzzSeeds checks that the committed seed corpora still mean what their names say;
// with -update it writes them anew, from a fixed random stream so that they are stable.
func TestFuzzSeeds(t *testing.T) {
	for _, c := range []struct {
		fuzz  string
		seeds func(*testing.T) map[string]seed
		parse func([]byte) error
	}{
		{"FuzzParseCSR", csrSeeds, parseCSRSeed},
		{"FuzzParseDeviceURI", deviceSeeds, parseDeviceSeed},
	} {
		t.Run(c.fuzz, func(t *testing.T) {
			dir := filepath.Join("testdata", "fuzz", c.fuzz)
			if *update {
				cryptotest.SetGlobalRandom(t, 1)
				writeSeeds(t, dir, c.seeds(t))
			}
			checkSeeds(t, dir, c.seeds(t), c.parse)
		})
	}
}

func writeSeeds(t *testing.T, dir string, seeds map[string]seed) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s.data)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func checkSeeds(t *testing.T, dir string, seeds map[string]seed, parse func([]byte) error) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != len(seeds) {
		t.Fatalf("seed corpus %s: %d files, %v; want %d (run with -update)", dir, len(ents), err, len(seeds))
	}
	for _, e := range ents {
		s, ok := seeds[e.Name()]
		if !ok {
			t.Errorf("%s/%s: not a known seed (run with -update)", dir, e.Name())
			continue
		}
		data, err := readSeed(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Errorf("%s/%s: %v", dir, e.Name(), err)
			continue
		}
		err = parse(data)
		if s.want == nil && err != nil || s.want != nil && !errors.Is(err, s.want) {
			t.Errorf("parse %s/%s = %v, want %v", dir, e.Name(), err, s.want)
		}
	}
}

// readSeed reads a one-[]byte file of the go test fuzz corpus format.
func readSeed(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lit, ok := strings.CutPrefix(strings.TrimSpace(string(raw)), "go test fuzz v1\n[]byte(")
	lit, ok2 := strings.CutSuffix(lit, ")")
	data, err := strconv.Unquote(lit)
	if !ok || !ok2 || err != nil {
		return nil, fmt.Errorf("not a []byte seed: %w", err)
	}
	return []byte(data), nil
}
