package image_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-iot/moat/internal/image"
	"github.com/moat-iot/moat/internal/problem"
)

// fieldsOf returns the fields a validation error names, in order.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	p, ok := errors.AsType[*problem.Error](err)
	if !ok {
		t.Fatalf("error %v is not a *problem.Error", err)
	}
	if p.Kind != problem.Invalid {
		t.Errorf("problem kind = %v, want invalid", p.Kind)
	}
	var fields []string
	for _, f := range p.Fields {
		fields = append(fields, f.Field)
	}
	return fields
}

// TestManifest_Validate is the kind, product and app consistency table, and one case per
// field rule. Each case lists every field it expects named, so a missing or extra problem
// fails.
func TestManifest_Validate(t *testing.T) {
	t.Parallel()
	caps := func(change func(c *image.Capabilities)) image.Manifest {
		m := validApp()
		change(&m.App.Capabilities)
		return m
	}
	with := func(m image.Manifest, change func(m *image.Manifest)) image.Manifest {
		change(&m)
		return m
	}
	for _, tc := range []struct {
		name   string
		m      image.Manifest
		fields []string
	}{
		{"valid app", validApp(), nil},
		{"valid os", validOS(), nil},
		{"app without capabilities", with(validApp(), func(m *image.Manifest) { m.App.Capabilities = image.Capabilities{} }), nil},
		{"security version 0", with(validApp(), func(m *image.Manifest) { m.SecurityVersion = 0 }), nil},

		// Kind, product and app must agree.
		{"app without product", with(validApp(), func(m *image.Manifest) { m.Product = "" }), []string{"product"}},
		{"app without app section", with(validApp(), func(m *image.Manifest) { m.App = nil }), []string{"app"}},
		{"app without either", with(validApp(), func(m *image.Manifest) { m.Product, m.App = "", nil }), []string{"product", "app"}},
		{"os with product", with(validOS(), func(m *image.Manifest) { m.Product = "DW100" }), []string{"product"}},
		{"os with app section", with(validOS(), func(m *image.Manifest) { m.App = validApp().App }), []string{"app"}},
		{"os with both", with(validOS(), func(m *image.Manifest) { m.Product, m.App = "DW100", validApp().App }), []string{"product", "app"}},
		{"no kind", with(validApp(), func(m *image.Manifest) { m.Kind = "" }), []string{"kind"}},
		{"other kind", with(validApp(), func(m *image.Manifest) { m.Kind = "firmware" }), []string{"kind"}},
		{"kind in capitals", with(validApp(), func(m *image.Manifest) { m.Kind = "APP" }), []string{"kind"}},
		{"bad product name", with(validApp(), func(m *image.Manifest) { m.Product = " DW100" }), []string{"product"}},

		// Header fields.
		{"format 0", with(validApp(), func(m *image.Manifest) { m.Format = 0 }), []string{"format"}},
		{"format 2", with(validApp(), func(m *image.Manifest) { m.Format = 2 }), []string{"format"}},
		{"no component id", with(validApp(), func(m *image.Manifest) { m.ComponentID = "" }), []string{"component_id"}},
		{"upper-case component id", with(validApp(), func(m *image.Manifest) { m.ComponentID = strings.ToUpper(testComponentID) }), []string{"component_id"}},
		{"component id without dashes", with(validApp(), func(m *image.Manifest) { m.ComponentID = strings.ReplaceAll(testComponentID, "-", "") }), []string{"component_id"}},
		{"nil component id", with(validApp(), func(m *image.Manifest) { m.ComponentID = "00000000-0000-0000-0000-000000000000" }), []string{"component_id"}},
		{"braced component id", with(validApp(), func(m *image.Manifest) { m.ComponentID = "{" + testComponentID[1:35] + "}" }), []string{"component_id"}},
		{"no name", with(validApp(), func(m *image.Manifest) { m.Name = "" }), []string{"name"}},
		{"long name", with(validApp(), func(m *image.Manifest) { m.Name = strings.Repeat("n", 65) }), []string{"name"}},
		{"64-character name", with(validApp(), func(m *image.Manifest) { m.Name = strings.Repeat("n", 64) }), nil},
		{"name with control character", with(validApp(), func(m *image.Manifest) { m.Name = "dw\x1b[31m" }), []string{"name"}},
		{"no version", with(validApp(), func(m *image.Manifest) { m.Version = "" }), []string{"version"}},
		{"v-prefixed version", with(validApp(), func(m *image.Manifest) { m.Version = "v1.2.0" }), []string{"version"}},
		{"pre-release version", with(validApp(), func(m *image.Manifest) { m.Version = "1.2.0-rc.1+build.5" }), nil},

		// The app section.
		{"no entry point", with(validApp(), func(m *image.Manifest) { m.App.EntryPoint = "" }), []string{"app.entry_point"}},
		{"absolute entry point", with(validApp(), func(m *image.Manifest) { m.App.EntryPoint = "/bin/sh" }), []string{"app.entry_point"}},
		{"dot-dot entry point", with(validApp(), func(m *image.Manifest) { m.App.EntryPoint = "../bin/sh" }), []string{"app.entry_point"}},
		{"unclean entry point", with(validApp(), func(m *image.Manifest) { m.App.EntryPoint = "bin//dw100" }), []string{"app.entry_point"}},
		{"host and IP hosts", caps(func(c *image.Capabilities) {
			c.AllowedHosts = []string{"a.example:1", "192.0.2.1:65535", "[2001:db8::1]:443", "localhost:8080"}
		}), nil},
		{"bad hosts", caps(func(c *image.Capabilities) {
			c.AllowedHosts = []string{"telemetry.contoso.example", "Telemetry.example:1", "a.example:0", "a.example:65536",
				"a.example:08883", "*.example:1", "2001:db8::1:443", "[fe80::1%eth0]:1", "a_b.example:1", "1.2.3.999:1", "a.example.:1", ":1"}
		}), []string{
			"app.capabilities.allowed_hosts[0]", "app.capabilities.allowed_hosts[1]", "app.capabilities.allowed_hosts[2]",
			"app.capabilities.allowed_hosts[3]", "app.capabilities.allowed_hosts[4]", "app.capabilities.allowed_hosts[5]",
			"app.capabilities.allowed_hosts[6]", "app.capabilities.allowed_hosts[7]", "app.capabilities.allowed_hosts[8]",
			"app.capabilities.allowed_hosts[9]", "app.capabilities.allowed_hosts[10]", "app.capabilities.allowed_hosts[11]",
		}},
		{"duplicate host", caps(func(c *image.Capabilities) {
			c.AllowedHosts = []string{"a.example:1", "b.example:1", "a.example:1"}
		}), []string{"app.capabilities.allowed_hosts[2]"}},
		{"pins", caps(func(c *image.Capabilities) { c.GPIO, c.ADC = []int{0, 255}, []int{-1, 256} }),
			[]string{"app.capabilities.adc[0]", "app.capabilities.adc[1]"}},
		{"duplicate pins", caps(func(c *image.Capabilities) { c.GPIO, c.ADC = []int{4, 17, 4}, []int{1, 1} }),
			[]string{"app.capabilities.gpio[2]", "app.capabilities.adc[1]"}},
		{"peripherals", caps(func(c *image.Capabilities) {
			c.UART, c.I2CMaster, c.PWM = []string{"ISU0", "ISU1"}, []string{"ISU2"}, []string{"PWM-CONTROLLER-0"}
		}), nil},
		{"bad peripherals", caps(func(c *image.Capabilities) {
			c.UART, c.I2CMaster, c.PWM = []string{"", "0ISU"}, []string{"ISU 2", strings.Repeat("A", 33)}, []string{"../pwm"}
		}), []string{"app.capabilities.uart[0]", "app.capabilities.uart[1]", "app.capabilities.i2c_master[0]",
			"app.capabilities.i2c_master[1]", "app.capabilities.pwm[0]"}},
		{"duplicate peripherals", caps(func(c *image.Capabilities) {
			c.UART, c.I2CMaster, c.PWM = []string{"ISU0", "ISU0"}, []string{"ISU1", "ISU1"}, []string{"P", "P"}
		}), []string{"app.capabilities.uart[1]", "app.capabilities.i2c_master[1]", "app.capabilities.pwm[1]"}},

		// The payload section.
		{"payload", with(validApp(), func(m *image.Manifest) { m.Payload = image.Payload{} }),
			[]string{"payload.sha256", "payload.length", "payload.compression", "payload.format"}},
		{"upper-case sha256", with(validApp(), func(m *image.Manifest) { m.Payload.SHA256 = strings.Repeat("AB", 32) }), []string{"payload.sha256"}},
		{"short sha256", with(validApp(), func(m *image.Manifest) { m.Payload.SHA256 = "abcd" }), []string{"payload.sha256"}},
		{"negative length", with(validApp(), func(m *image.Manifest) { m.Payload.Length = -1 }), []string{"payload.length"}},
		{"gzip", with(validApp(), func(m *image.Manifest) { m.Payload.Compression = "gzip" }), []string{"payload.compression"}},
		{"zip", with(validApp(), func(m *image.Manifest) { m.Payload.Format = "zip" }), []string{"payload.format"}},

		// Every problem at once.
		{"everything wrong", image.Manifest{Kind: "app", App: &image.App{Capabilities: image.Capabilities{GPIO: []int{300}}}}, []string{
			"format", "component_id", "name", "version", "product", "app.entry_point", "app.capabilities.gpio[0]",
			"payload.sha256", "payload.length", "payload.compression", "payload.format"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.m.Validate()
			if diff := cmp.Diff(tc.fields, fieldsOf(t, err)); diff != "" {
				t.Errorf("Validate() = %v; fields named (-want +got):\n%s", err, diff)
			}
		})
	}
}

// TestParseManifest_RoundTrip checks that the canonical encoding of a valid manifest parses
// back to the same value.
func TestParseManifest_RoundTrip(t *testing.T) {
	t.Parallel()
	for _, m := range []image.Manifest{validApp(), validOS()} {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := image.ParseManifest(b)
		if err != nil {
			t.Fatalf("ParseManifest(%s) = %v", b, err)
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Errorf("ParseManifest(Marshal(m)) differs (-want +got):\n%s", diff)
		}
	}
	// The canonical form has fixed field order and omits empty optional fields.
	b, _ := json.Marshal(validOS())
	want := `{"format":1,"component_id":"0f8fad5b-d9cb-469f-a165-70867728950e","name":"moat-os","kind":"os","version":"24.10.0","security_version":7,"payload":{"sha256":"` +
		strings.Repeat("cd", 32) + `","length":10,"compression":"zstd","format":"tar"}}`
	if string(b) != want {
		t.Errorf("canonical OS manifest =\n%s\nwant\n%s", b, want)
	}
}
