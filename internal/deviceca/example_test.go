package deviceca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/moat-iot/moat/internal/deviceca"
	"github.com/moat-iot/moat/internal/identity"
)

// Example shows the whole flow: the operator makes the platform root offline; the server
// makes a tenant CA key and CSR; the operator signs it offline; the server checks the
// signed certificate, stores the key wrapped, and issues a device certificate after
// attestation; the tenant's cloud verifies it.
func Example() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const tenantID, caID = "tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f", "dca_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f"

	// Operator, offline: the platform root.
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootPEM, err := deviceca.NewRootCertificate(rootKey, "moat platform root", now, 10*365*24*time.Hour)
	if err != nil {
		fmt.Println(err)
		return
	}
	root, _ := deviceca.ParseRootCertificate(rootPEM)

	// Server: a tenant CA key, wrapped for storage, and its CSR.
	caKey, _ := deviceca.NewCAKey()
	kek := make([]byte, deviceca.KEKSize)
	rand.Read(kek)
	wrapped, _ := deviceca.Wrap(kek, caKey, tenantID+"/"+caID)
	csrPEM, _ := deviceca.NewCSR(caKey, tenantID, caID)

	// Operator, offline: sign the CSR with the root key.
	caPEM, err := deviceca.SignCA(root, rootKey, csrPEM, now, 365*24*time.Hour)
	if err != nil {
		fmt.Println(err)
		return
	}

	// Server: accept the uploaded CA certificate for the CSR it made.
	csr, _ := deviceca.ParseCSR(csrPEM)
	ca, err := deviceca.CheckCA(root, caPEM, csr, now)
	if err != nil {
		fmt.Println(err)
		return
	}

	// Server, after the device attested: a 24-hour device certificate.
	deviceKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	deviceID := string(identity.IDFromPublicKey(&deviceKey.PublicKey))
	signer, err := deviceca.Unwrap(kek, wrapped, tenantID+"/"+caID)
	if err != nil {
		fmt.Println(err)
		return
	}
	der, _, err := deviceca.Issue(ca, signer, deviceca.IssueRequest{
		DevicePublicKey: &deviceKey.PublicKey,
		TenantID:        tenantID,
		DeviceID:        deviceID,
		NotBefore:       now,
		NotAfter:        now.Add(24 * time.Hour),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// Tenant cloud: verify the device certificate presented in a TLS handshake.
	cert, _ := x509.ParseCertificate(der)
	gotTenant, gotDevice, _, err := deviceca.VerifyDevice(cert, []*x509.Certificate{ca}, root, now.Add(time.Hour))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(gotTenant)
	fmt.Println(gotDevice == deviceID)
	fmt.Println(cert.URIs[0].String() == "urn:moat:tenant:"+tenantID+":device:"+deviceID)
	// Output:
	// tnt_0193f1c2a4b57d0e9c1f2a3b4c5d6e7f
	// true
	// true
}
