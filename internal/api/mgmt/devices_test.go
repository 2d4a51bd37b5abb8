package mgmt_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestAPI_Devices covers the device registry through the API: registration by the
// platform only, claiming once, groups by name, roles for blocking and the development
// capability, filters, and bad input that changes nothing.
func TestAPI_Devices(t *testing.T) {
	t.Parallel()
	onBothStores(t, func(t *testing.T, w *world) {
		a := "/api/v1/tenants/" + w.a.tenant
		// Only the platform registers devices.
		w.a.admin.must(http.StatusForbidden, "POST", "/api/v1/platform/devices", map[string]string{"public_key_pem": newPublicKeyPEM(t)}).problem(t)
		var dev struct {
			ID      string `json:"id"`
			Version int64  `json:"version"`
			Product string `json:"product_id"`
			Group   string `json:"device_group_id"`
			Blocked bool   `json:"blocked"`
			Dev     bool   `json:"development"`
		}
		pemKey := newPublicKeyPEM(t)
		w.op.must(201, "POST", "/api/v1/platform/devices", map[string]string{"public_key_pem": pemKey}).decode(t, &dev)
		if len(dev.ID) != 64 {
			t.Fatalf("device ID %q, want 64 hex digits", dev.ID)
		}
		if p := w.op.must(409, "POST", "/api/v1/platform/devices", map[string]string{"public_key_pem": pemKey}).problem(t); p.Code != "device_registered" {
			t.Errorf("registering twice: code %q", p.Code)
		}
		for name, body := range map[string]any{
			"garbage key":   map[string]string{"public_key_pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
			"empty":         map[string]string{"public_key_pem": ""},
			"unknown field": map[string]string{"public_key_pem": pemKey, "tenant_id": w.a.tenant},
		} {
			if r := w.op.do("POST", "/api/v1/platform/devices", body); r.Status != http.StatusBadRequest {
				t.Errorf("register %s = %d %s, want 400", name, r.Status, r.Body)
			}
		}

		// Unclaimed, it is nobody's; claims are by Administrators, once.
		w.a.admin.must(404, "GET", a+"/devices/"+dev.ID, nil).problem(t)
		w.contribA.must(http.StatusForbidden, "POST", a+"/device-claims", map[string]any{"device_ids": []string{dev.ID}}).problem(t)
		w.a.admin.must(200, "POST", a+"/device-claims", map[string]any{"device_ids": []string{dev.ID, dev.ID}})
		w.a.admin.must(200, "POST", a+"/device-claims", map[string]any{"device_ids": []string{dev.ID}}) // again: a no-op
		if p := w.b.admin.must(409, "POST", "/api/v1/tenants/"+w.b.tenant+"/device-claims", map[string]any{"device_ids": []string{dev.ID}}).problem(t); p.Code != "device_claimed" {
			t.Errorf("claim by another tenant: code %q, want device_claimed", p.Code)
		}
		w.b.admin.must(404, "GET", "/api/v1/tenants/"+w.b.tenant+"/devices/"+dev.ID, nil).problem(t)
		if p := w.a.admin.must(404, "POST", a+"/device-claims", map[string]any{"device_ids": []string{strings.Repeat("0", 64)}}).problem(t); p.Code != "device_not_found" {
			t.Errorf("claim of an unregistered device: code %q", p.Code)
		}
		for name, ids := range map[string]any{"none": []string{}, "not hex": []string{strings.Repeat("Z", 64)}, "too many": make([]string, 501)} {
			if r := w.a.admin.do("POST", a+"/device-claims", map[string]any{"device_ids": ids}); r.Status != http.StatusBadRequest {
				t.Errorf("claim %s = %d, want 400", name, r.Status)
			}
		}

		// Groups are named PRODUCT/GROUP; Contributors move devices, Administrators block.
		w.a.admin.must(200, "GET", a+"/devices/"+dev.ID, nil).decode(t, &dev)
		etag := `"` + jsonNumber(dev.Version) + `"`
		w.readerA.must(http.StatusForbidden, "PATCH", a+"/devices/"+dev.ID, map[string]string{"device_group": "DW100/Production"}, "If-Match", etag).problem(t)
		if p := w.contribA.must(400, "PATCH", a+"/devices/"+dev.ID, map[string]string{"device_group": "DW100/Nope"}, "If-Match", etag).problem(t); p.Code != "device_group_not_found" {
			t.Errorf("unknown group: code %q", p.Code)
		}
		w.contribA.must(200, "PATCH", a+"/devices/"+dev.ID, map[string]string{"device_group": "DW100/Production"}, "If-Match", etag).decode(t, &dev)
		if dev.Product != w.a.product.ID || dev.Group == "" {
			t.Errorf("device after update = %+v, want in DW100/Production", dev)
		}
		etag = `"` + jsonNumber(dev.Version) + `"`
		w.contribA.must(http.StatusForbidden, "PATCH", a+"/devices/"+dev.ID, map[string]bool{"blocked": true}, "If-Match", etag).problem(t)
		w.contribA.must(http.StatusForbidden, "PATCH", a+"/devices/"+dev.ID, map[string]bool{"development": true}, "If-Match", etag).problem(t)
		w.a.admin.must(428, "PATCH", a+"/devices/"+dev.ID, map[string]bool{"blocked": true}).problem(t)
		w.a.admin.must(200, "PATCH", a+"/devices/"+dev.ID, map[string]bool{"blocked": true}, "If-Match", etag).decode(t, &dev)
		if !dev.Blocked {
			t.Error("device not blocked")
		}
		// Another tenant's group cannot be named (names resolve inside the caller's tenant only).
		etag = `"` + jsonNumber(dev.Version) + `"`
		w.a.admin.must(400, "PATCH", a+"/devices/"+dev.ID, map[string]string{"device_group": "Nope/Production"}, "If-Match", etag).problem(t)
		// "" takes it out of its group.
		id := dev.ID
		dev.Product, dev.Group = "", ""
		w.a.admin.must(200, "PATCH", a+"/devices/"+id, map[string]string{"device_group": ""}, "If-Match", etag).decode(t, &dev)
		if dev.Product != "" || dev.Group != "" || dev.ID != id {
			t.Errorf("device after leaving its group = %+v", dev)
		}

		// Lists: the product filter, and only the tenant's devices.
		var l struct {
			Items []json.RawMessage `json:"items"`
		}
		w.a.admin.must(200, "GET", a+"/devices", nil).decode(t, &l)
		if len(l.Items) != 2 { // the fixture's device and this one
			t.Errorf("A lists %d devices, want 2", len(l.Items))
		}
		w.a.admin.must(200, "GET", a+"/devices?product=DW100", nil).decode(t, &l)
		if len(l.Items) != 0 {
			t.Errorf("A lists %d DW100 devices, want 0 (none is in a DW100 group now)", len(l.Items))
		}
		w.a.admin.must(404, "GET", a+"/devices?product=Nope", nil).problem(t)
	})
}

func jsonNumber(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
