package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/moat-iot/moat/internal/ident"
	"github.com/moat-iot/moat/internal/problem"
)

// Kind says what an image is for.
type Kind string

const (
	// KindOS is an operating system image, published by the platform operator.
	KindOS Kind = "os"
	// KindApp is an application image, published by a tenant for one of its products.
	KindApp Kind = "app"
)

// Payload description constants; the only values format 1 allows.
const (
	CompressionZstd = "zstd"
	PayloadTar      = "tar"
)

// Manifest describes an image. Its JSON encoding, with the fields in this order and no
// white space, is the manifest section of a package (the canonical encoding). Optional
// fields are omitted when empty so that every manifest has exactly one encoding.
type Manifest struct {
	// Format is FormatVersion.
	Format int `json:"format"`
	// ComponentID is a lower-case UUID naming the component; it stays the same across
	// versions of one component.
	ComponentID string `json:"component_id"`
	// Name is a human name such as "dw100-app"; the rules of ident.CheckName apply.
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Version is a semantic version (SemVer 2.0.0, no "v" prefix) for people.
	Version string `json:"version"`
	// SecurityVersion is the anti-rollback floor: a device refuses an image whose security
	// version is below the highest it has installed for the component.
	SecurityVersion uint32 `json:"security_version"`
	// Product names the product an app is for; absent for OS images.
	Product string `json:"product,omitempty"`
	// App is the application manifest; required for apps, absent for OS images.
	App     *App    `json:"app,omitempty"`
	Payload Payload `json:"payload"`
}

// App is the application manifest: what the device runs and what it may use (rule 6).
type App struct {
	// EntryPoint is the path, inside the payload, of the file to run.
	EntryPoint   string       `json:"entry_point"`
	Capabilities Capabilities `json:"capabilities"`
}

// Capabilities are the peripherals and network hosts an application may use; anything not
// listed is denied.
type Capabilities struct {
	// AllowedHosts are "host:port" pairs the app may connect to; host is a DNS name or an
	// IP address (IPv6 in brackets).
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
	GPIO         []int    `json:"gpio,omitempty"`
	ADC          []int    `json:"adc,omitempty"`
	UART         []string `json:"uart,omitempty"`
	I2CMaster    []string `json:"i2c_master,omitempty"`
	PWM          []string `json:"pwm,omitempty"`
	// SoftwareUpdateDeferral lets the app defer updates while it is busy (the local API's
	// update.defer; Azure Sphere's capability of the same name). Bounded by the product's
	// max_update_deferral however it asks (docs/rollouts.md).
	SoftwareUpdateDeferral bool `json:"software_update_deferral,omitempty"`
}

// Payload describes the payload section: a zstd-compressed tar of exactly Length bytes
// with the given SHA-256.
type Payload struct {
	// SHA256 is the lower-case hex SHA-256 of the compressed payload.
	SHA256 string `json:"sha256"`
	// Length is the size of the compressed payload in bytes.
	Length      int64  `json:"length"`
	Compression string `json:"compression"`
	Format      string `json:"format"`
}

// Validate reports every problem with the manifest, each with its field path, as one
// *problem.Error of kind Invalid.
func (m Manifest) Validate() error {
	var v problem.Validation
	m.check(&v)
	m.Payload.check(&v)
	return v.Err()
}

// check validates everything but the payload section, which Pack fills in last.
func (m Manifest) check(v *problem.Validation) {
	if m.Format != FormatVersion {
		v.Add("format", "unsupported_format", "format must be %d, got %d", FormatVersion, m.Format)
	}
	if !validUUID(m.ComponentID) {
		v.Add("component_id", "invalid_component_id", "component_id must be a lower-case UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e")
	}
	ident.CheckName(v, "name", m.Name)
	if !validSemver(m.Version) {
		v.Add("version", "invalid_version", "version must be a semantic version such as 1.2.0 (SemVer 2.0.0, no \"v\" prefix)")
	}
	switch m.Kind {
	case KindOS:
		if m.Product != "" {
			v.Add("product", "product_not_allowed", "an os image names no product")
		}
		if m.App != nil {
			v.Add("app", "app_not_allowed", "an os image has no app section")
		}
	case KindApp:
		if m.Product == "" {
			v.Add("product", "product_required", "an app image must name its product")
		} else {
			ident.CheckName(v, "product", m.Product)
		}
		if m.App == nil {
			v.Add("app", "app_required", "an app image needs an app section with entry_point and capabilities")
		} else {
			m.App.check(v, "app")
		}
	default:
		v.Add("kind", "invalid_kind", "kind must be %q or %q, got %q", KindOS, KindApp, m.Kind)
	}
}

func (a *App) check(v *problem.Validation, field string) {
	if err := checkPath(a.EntryPoint); err != nil {
		v.Add(field+".entry_point", "invalid_entry_point", "entry_point must be a relative path inside the payload: %v", err)
	}
	c := a.Capabilities
	field += ".capabilities"
	checkList(v, field+".allowed_hosts", c.AllowedHosts, checkHostPort)
	checkList(v, field+".gpio", c.GPIO, checkPin)
	checkList(v, field+".adc", c.ADC, checkPin)
	checkList(v, field+".uart", c.UART, checkPeripheral)
	checkList(v, field+".i2c_master", c.I2CMaster, checkPeripheral)
	checkList(v, field+".pwm", c.PWM, checkPeripheral)
}

// checkList checks each element and refuses duplicates, which would let two spellings of one
// grant differ between what a reviewer reads and what a device enforces.
func checkList[T comparable](v *problem.Validation, field string, items []T, check func(T) error) {
	seen := make(map[T]bool, len(items))
	for i, it := range items {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := check(it); err != nil {
			v.Add(f, "invalid_capability", "%s: %v", f, err)
			continue
		}
		if seen[it] {
			v.Add(f, "duplicate_capability", "%s: %v is listed twice", f, it)
		}
		seen[it] = true
	}
}

func (p Payload) check(v *problem.Validation) {
	if !validSHA256(p.SHA256) {
		v.Add("payload.sha256", "invalid_sha256", "payload.sha256 must be 64 lower-case hex digits")
	}
	if p.Length <= 0 {
		v.Add("payload.length", "invalid_length", "payload.length must be positive, got %d", p.Length)
	}
	if p.Compression != CompressionZstd {
		v.Add("payload.compression", "unsupported_compression", "payload.compression must be %q, got %q", CompressionZstd, p.Compression)
	}
	if p.Format != PayloadTar {
		v.Add("payload.format", "unsupported_payload_format", "payload.format must be %q, got %q", PayloadTar, p.Format)
	}
}

// canonical returns the manifest's canonical encoding: encoding/json of the struct.
func (m Manifest) canonical() ([]byte, error) {
	return json.Marshal(m)
}

// ParseManifest decodes and checks a manifest section. It accepts only the canonical
// encoding of a valid manifest: anything else is ErrNotCanonical or ErrInvalidManifest.
func ParseManifest(b []byte) (Manifest, error) {
	if len(b) > MaxManifestBytes {
		return Manifest{}, fmt.Errorf("manifest of %d bytes, at most %d allowed: %w", len(b), MaxManifestBytes, ErrTooLarge)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrInvalidManifest, err)
	}
	// Decoding ignores unknown fields and lets a later duplicate key win; comparing with
	// the re-encoding refuses both, and any other second spelling of the same manifest.
	// Enforces rule 2 for the manifest; attacked by TestOpen_RejectsDuplicateKey.
	c, err := m.canonical()
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrInvalidManifest, err)
	}
	if !bytes.Equal(c, b) {
		return Manifest{}, fmt.Errorf("%w: %s", ErrNotCanonical, firstDifference(b, c))
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrInvalidManifest, err)
	}
	return m, nil
}

// firstDifference says where got first departs from the canonical want.
func firstDifference(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("differs from its canonical encoding at byte %d", i)
}

// clone returns a deep copy, so a caller cannot change a Reader's manifest.
func (m Manifest) clone() Manifest {
	if m.App != nil {
		a := *m.App
		c := &a.Capabilities
		c.AllowedHosts = slices.Clone(c.AllowedHosts)
		c.GPIO, c.ADC = slices.Clone(c.GPIO), slices.Clone(c.ADC)
		c.UART, c.I2CMaster, c.PWM = slices.Clone(c.UART), slices.Clone(c.I2CMaster), slices.Clone(c.PWM)
		m.App = &a
	}
	return m
}
