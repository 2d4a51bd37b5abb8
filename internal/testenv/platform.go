package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/moat-iot/moat/client"
	"github.com/moat-iot/moat/internal/attest"
	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/keys"
	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/tuf"
)

// Platform is a real server with everything a device needs, made the way the CLI makes
// it: the platform's offline root and OS keys (TUF root, X.509 root certificate), a tenant
// with its device CA certified by that root, an image signing key, product DW100, and
// methods to publish OS and app images and to make, claim and attest devices.
type Platform struct {
	t        testing.TB
	Server   *Server
	Op       *client.Client // platform operator
	Admin    *client.Client // the tenant's Administrator
	Tenant   string
	Product  string // DW100's ID
	Root     []byte // 1.root.json, what devices pin
	RootKey  *ecdsa.PrivateKey
	OSKey    *ecdsa.PrivateKey
	AppKey   *ecdsa.PrivateKey // the tenant's registered signing key
	RootCert *x509.Certificate
	Expires  time.Time

	mu       sync.Mutex
	os       map[string]tuf.TargetFile
	apps     map[string]tuf.TargetFile
	targetsV int64
	appsV    int64
}

// NewPlatform builds a platform on a fresh server; opts configure the server.
func NewPlatform(t testing.TB, opts ...ServerOption) *Platform {
	t.Helper()
	return NewPlatformOn(t, StartServer(t, opts...))
}

// NewPlatformOn builds a platform on a fresh server that runs already: one of
// StartServer, or ExternalServer (a `moat server` process).
func NewPlatformOn(t testing.TB, s *Server) *Platform {
	t.Helper()
	ctx := context.Background()
	p := &Platform{t: t, Server: s, Expires: time.Now().Add(365 * 24 * time.Hour),
		os: map[string]tuf.TargetFile{}, apps: map[string]tuf.TargetFile{}}
	p.Op = p.Client(s.OperatorToken)
	ok, err := p.Op.GetOnlineKey(ctx)
	p.must(err)
	online, err := keys.ParsePublicPEM([]byte(ok.PublicKeyPEM))
	p.must(err)
	p.RootKey, p.OSKey, p.AppKey = p.genKey(), p.genKey(), p.genKey()
	p.Root, err = tuf.NewRoot(p.signer(p.RootKey), &p.RootKey.PublicKey, &p.OSKey.PublicKey, online, p.Expires)
	p.must(err)
	_, err = p.Op.PutPlatformRoot(ctx, p.Root)
	p.must(err)
	rootPEM, err := deviceca.NewRootCertificate(p.RootKey, "moat platform root", time.Now(), 20*365*24*time.Hour)
	p.must(err)
	_, err = p.Op.PutPlatformCertificate(ctx, rootPEM)
	p.must(err)
	p.RootCert, err = deviceca.ParseRootCertificate(rootPEM)
	p.must(err)

	ten, err := p.Op.CreateTenant(ctx, client.TenantCreate{Name: "Contoso"})
	p.must(err)
	p.Tenant = ten.ID
	adm, err := p.Op.CreateMember(ctx, ten.ID, client.MemberCreate{Name: "contoso-admin", Role: client.RoleAdministrator})
	p.must(err)
	p.Admin = p.Client(adm.Secret)
	p.SignPendingCAs()
	pub, err := keys.EncodePublicPEM(&p.AppKey.PublicKey)
	p.must(err)
	_, err = p.Admin.CreateSigningKey(ctx, ten.ID, client.SigningKeyCreate{Name: "release", PublicKeyPEM: string(pub)})
	p.must(err)
	prod, err := p.Admin.CreateProduct(ctx, ten.ID, client.ProductCreate{Name: "DW100"})
	p.must(err)
	p.Product = prod.ID
	p.signTargets()
	return p
}

func (p *Platform) must(err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatal(err)
	}
}

func (p *Platform) genKey() *ecdsa.PrivateKey {
	k, err := keys.Generate()
	p.must(err)
	return k
}

func (p *Platform) signer(k *ecdsa.PrivateKey) signature.Signer {
	s, err := keys.Signer(k)
	p.must(err)
	return s
}

// Client returns an API client for token over the server's TLS.
func (p *Platform) Client(token string, opts ...client.Option) *client.Client {
	p.t.Helper()
	c, err := client.New(p.Server.URL, append([]client.Option{client.WithHTTPClient(p.Server.HTTPClient(p.t)), client.WithToken(token)}, opts...)...)
	p.must(err)
	return c
}

// SignPendingCAs plays `moat platform ca-sign`: the offline root certifies every pending
// tenant device CA.
func (p *Platform) SignPendingCAs() {
	p.t.Helper()
	ctx := context.Background()
	pending, err := p.Op.ListPendingDeviceCAs(ctx, client.ListOptions{})
	p.must(err)
	for _, ca := range pending.Items {
		cert, err := deviceca.SignCA(p.RootCert, p.RootKey, []byte(ca.CSRPEM), time.Now(), 5*365*24*time.Hour)
		p.must(err)
		_, err = p.Op.PutDeviceCACertificate(ctx, ca.TenantID, ca.ID, cert)
		p.must(err)
	}
}

// Image is a published image package.
type Image struct {
	Kind            string
	Path            string
	SHA256          string
	Length          int64
	Version         string
	SecurityVersion uint32
	Bytes           []byte
}

// Measurement is the image as a device that booted it measures it.
func (im Image) Measurement() attest.Measurement {
	return attest.Measurement{Kind: im.Kind, Path: im.Path, SHA256: im.SHA256, Version: im.Version, SecurityVersion: im.SecurityVersion}
}

// Pack packs an image package: kind "os" or "app" (for product), with a one-file payload:
// a shell script at the entry point (bin/moat-agent for an OS, bin/app for an app).
func (p *Platform) Pack(kind, name, version string, securityVersion uint32, product string) []byte {
	p.t.Helper()
	return p.PackWith(kind, name, version, securityVersion, product, []byte("#!/bin/sh\necho "+name+" "+version+"\n"))
}

// PackWith is Pack with the entry point's bytes given (a test app built with go build).
func (p *Platform) PackWith(kind, name, version string, securityVersion uint32, product string, entry []byte) []byte {
	p.t.Helper()
	return p.PackFiles(kind, name, version, securityVersion, product, entry, nil)
}

// PackFiles is PackWith with further payload files (name relative to the payload root).
func (p *Platform) PackFiles(kind, name, version string, securityVersion uint32, product string, entry []byte, files map[string][]byte) []byte {
	p.t.Helper()
	dir, err := os.MkdirTemp("", "moat-pack-")
	p.must(err)
	defer os.RemoveAll(dir)
	var manifest, file string
	switch kind {
	case "os":
		file = image.OSManifestFile
		manifest = fmt.Sprintf(`{"format":1,"component_id":"0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f","name":%q,"kind":"os","version":%q,"security_version":%d}`,
			name, version, securityVersion)
	default:
		file = image.AppManifestFile
		manifest = fmt.Sprintf(`{"format":1,"component_id":"3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10","name":%q,"kind":"app","version":%q,"security_version":%d,"product":%q,"app":{"entry_point":"bin/app","capabilities":{"software_update_deferral":true}}}`,
			name, version, securityVersion, product)
	}
	p.must(os.WriteFile(filepath.Join(dir, file), []byte(manifest), 0o600))
	p.must(os.MkdirAll(filepath.Join(dir, "bin"), 0o700))
	entryName := "app"
	if kind == "os" {
		entryName = "moat-agent"
	}
	p.must(os.WriteFile(filepath.Join(dir, "bin", entryName), entry, 0o700)) //nolint:gosec // G306: an entry point is executable
	for name, data := range files {
		p.must(os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700))
		p.must(os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
	var buf bytes.Buffer
	_, err = image.Pack(context.Background(), dir, &buf)
	p.must(err)
	return buf.Bytes()
}

// PublishOS uploads an OS image and signs it into the tenant's targets.json on the feeds.
func (p *Platform) PublishOS(name, version string, securityVersion uint32, feeds ...string) Image {
	p.t.Helper()
	return p.PublishOSWith(name, version, securityVersion, []byte("#!/bin/sh\necho "+name+" "+version+"\n"), feeds...)
}

// PublishOSWith is PublishOS with the bytes of its bin/moat-agent given.
func (p *Platform) PublishOSWith(name, version string, securityVersion uint32, agent []byte, feeds ...string) Image {
	p.t.Helper()
	pkg := p.PackWith("os", name, version, securityVersion, "", agent)
	bi, err := p.Op.UploadPlatformBlob(context.Background(), bytes.NewReader(pkg))
	p.must(err)
	im := Image{Kind: "os", Path: "os/" + name + "/" + version, SHA256: bi.Digest[len("sha256:"):], Length: bi.Size,
		Version: version, SecurityVersion: securityVersion, Bytes: pkg}
	p.mu.Lock()
	p.os[im.Path] = tuf.TargetFile{Length: im.Length, SHA256: im.SHA256, Custom: target.Custom{
		Kind: target.KindOS, Version: version, SecurityVersion: securityVersion, Feeds: feeds,
		ComponentID: "0f2d7c1e-8a55-4c2b-9d0e-6b1a2c3d4e5f"}}
	p.mu.Unlock()
	p.signTargets()
	return im
}

func (p *Platform) signTargets() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.targetsV++
	targets, err := tuf.SignTargets(p.signer(p.OSKey), p.targetsV, p.Expires, p.os, []*ecdsa.PublicKey{&p.AppKey.PublicKey})
	p.must(err)
	_, err = p.Op.PutTenantTargets(context.Background(), p.Tenant, targets)
	p.must(err)
}

// PublishApp uploads an app image for product and signs it into apps.json with the
// tenant's key.
func (p *Platform) PublishApp(name, version string, securityVersion uint32, product string) Image {
	p.t.Helper()
	return p.PublishAppWith(name, version, securityVersion, product, []byte("#!/bin/sh\necho "+name+" "+version+"\n"))
}

// PublishAppWith is PublishApp with the entry point's bytes given.
func (p *Platform) PublishAppWith(name, version string, securityVersion uint32, product string, entry []byte) Image {
	p.t.Helper()
	return p.PublishAppFiles(name, version, securityVersion, product, entry, nil)
}

// PublishAppFiles is PublishAppWith with further payload files.
func (p *Platform) PublishAppFiles(name, version string, securityVersion uint32, product string, entry []byte, files map[string][]byte) Image {
	p.t.Helper()
	pkg := p.PackFiles("app", name, version, securityVersion, product, entry, files)
	bi, err := p.Admin.UploadBlob(context.Background(), p.Tenant, bytes.NewReader(pkg))
	p.must(err)
	im := Image{Kind: "app", Path: "apps/" + name + "/" + version, SHA256: bi.Digest[len("sha256:"):], Length: bi.Size,
		Version: version, SecurityVersion: securityVersion, Bytes: pkg}
	p.mu.Lock()
	p.apps[im.Path] = tuf.TargetFile{Length: im.Length, SHA256: im.SHA256, Custom: target.Custom{
		Kind: target.KindApp, Version: version, SecurityVersion: securityVersion, Product: product,
		ComponentID: "3b0c6f2e-5a57-4d4b-9c6e-2f1a8d7b9e10"}}
	p.mu.Unlock()
	p.signApps()
	return im
}

// RevokeOS removes an OS image from the tenant's targets.json.
func (p *Platform) RevokeOS(path string) {
	p.t.Helper()
	p.mu.Lock()
	delete(p.os, path)
	p.mu.Unlock()
	p.signTargets()
}

// RevokeApp removes an app from apps.json (moat image revoke).
func (p *Platform) RevokeApp(path string) {
	p.t.Helper()
	p.mu.Lock()
	delete(p.apps, path)
	p.mu.Unlock()
	p.signApps()
}

func (p *Platform) signApps() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.appsV++
	apps, err := tuf.SignApps(p.signer(p.AppKey), p.appsV, p.Expires, p.apps)
	p.must(err)
	_, err = p.Admin.PutTenantApps(context.Background(), p.Tenant, apps)
	p.must(err)
}

// Device is a simulated device: its identity key and ID.
type Device struct {
	Key *identity.FileKey
	ID  string
}

// NewDevice makes a device identity and registers it; with claim it is claimed by the
// tenant, and with a group ("DW100/Production") also put in that group.
func (p *Platform) NewDevice(claim bool, group string) Device {
	p.t.Helper()
	ctx := context.Background()
	k, err := identity.CreateFileKey(filepath.Join(p.t.TempDir(), "identity.key"))
	p.must(err)
	pub, err := keys.EncodePublicPEM(k.Public())
	p.must(err)
	d, err := p.Op.RegisterDevice(ctx, client.DeviceRegister{PublicKeyPEM: string(pub)})
	p.must(err)
	if d.ID != string(k.ID()) {
		p.t.Fatalf("registered device ID %s, want %s", d.ID, k.ID())
	}
	if claim {
		_, err = p.Admin.ClaimDevices(ctx, p.Tenant, client.DeviceClaim{DeviceIDs: []string{d.ID}})
		p.must(err)
	}
	if group != "" {
		p.Update(d.ID, client.DeviceUpdate{DeviceGroup: &group})
	}
	return Device{Key: k, ID: d.ID}
}

// Update changes a device as the tenant's Administrator.
func (p *Platform) Update(id string, upd client.DeviceUpdate) client.Device {
	p.t.Helper()
	ctx := context.Background()
	d, err := p.Admin.GetDevice(ctx, p.Tenant, id)
	p.must(err)
	d, err = p.Admin.UpdateDevice(ctx, p.Tenant, id, d.Version, upd)
	p.must(err)
	return d
}

// Evidence gets a nonce for the device and returns evidence signed by its key.
func (p *Platform) Evidence(d Device, dev bool, ms ...attest.Measurement) []byte {
	p.t.Helper()
	n, err := p.Anon().CreateAttestationNonce(context.Background(), client.NonceRequest{DeviceID: d.ID})
	p.must(err)
	ev, err := attest.Sign(d.Key, attest.Evidence{DeviceID: d.ID, Nonce: n.Nonce, Time: time.Now(), DevelopmentMode: dev, Measurements: ms})
	p.must(err)
	return ev
}

// Anon is a device API client without credentials, as a device before attestation (nonces,
// attestation).
func (p *Platform) Anon() *client.Client {
	p.t.Helper()
	c, err := client.New(p.Server.DeviceURL, client.WithHTTPClient(p.Server.HTTPClient(p.t)))
	p.must(err)
	return c
}

// Attest attests the device with the measurements and returns its TLS certificate, or the
// server's error (a refusal is a *client.Error with status 403).
func (p *Platform) Attest(d Device, ms ...attest.Measurement) (tls.Certificate, error) {
	p.t.Helper()
	is, err := p.Anon().Attest(context.Background(), p.Evidence(d, false, ms...))
	if err != nil {
		return tls.Certificate{}, err
	}
	return TLSCertificate(p.t, is.ChainPEM, d.Key)
}

// TLSCertificate pairs an issued chain with the device key for a TLS client.
func TLSCertificate(t testing.TB, chainPEM string, key *identity.FileKey) (tls.Certificate, error) {
	t.Helper()
	var cert tls.Certificate
	rest := []byte(chainPEM)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		cert.Certificate = append(cert.Certificate, b.Bytes)
	}
	if len(cert.Certificate) == 0 {
		return cert, fmt.Errorf("no certificate in the issued chain")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return cert, err
	}
	cert.Leaf, cert.PrivateKey = leaf, identity.CryptoSigner(key)
	return cert, nil
}

// DeviceClient is the device API client of a device presenting cert (mutual TLS), on the
// device listener.
func (p *Platform) DeviceClient(cert tls.Certificate) *client.Client {
	p.t.Helper()
	c, err := client.New(p.Server.DeviceURL, client.WithHTTPClient(p.DeviceHTTPClient(cert)))
	p.must(err)
	return c
}

// DeviceHTTPClient is an HTTP client presenting cert and trusting only the server's CA;
// like Server.HTTPClient it sends device API paths to Server.DeviceURL and others to
// Server.URL (where no certificate is asked for, so none is sent).
func (p *Platform) DeviceHTTPClient(cert tls.Certificate) *http.Client {
	p.t.Helper()
	return p.Server.httpClient(p.t, []tls.Certificate{cert})
}

// ForgedCertificate is what an attacker without the platform root makes for d: a root
// and tenant CA of its own, naming the real tenant and device.
func (p *Platform) ForgedCertificate(d Device) tls.Certificate {
	p.t.Helper()
	rootKey, caKey := p.genKey(), p.genKey()
	rootPEM, err := deviceca.NewRootCertificate(rootKey, "moat platform root", time.Now(), 2*time.Hour)
	p.must(err)
	root, err := deviceca.ParseRootCertificate(rootPEM)
	p.must(err)
	csr, err := deviceca.NewCSR(caKey, p.Tenant, "dca_forged")
	p.must(err)
	caPEM, err := deviceca.SignCA(root, rootKey, csr, time.Now(), time.Hour)
	p.must(err)
	b, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(b.Bytes)
	p.must(err)
	der, _, err := deviceca.Issue(ca, caKey, deviceca.IssueRequest{DevicePublicKey: d.Key.Public(), TenantID: p.Tenant, DeviceID: d.ID,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * time.Minute)})
	p.must(err)
	chain := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) + string(caPEM)
	cert, err := TLSCertificate(p.t, chain, d.Key)
	p.must(err)
	return cert
}
