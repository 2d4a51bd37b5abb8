package target_test

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/moat-iot/moat/internal/target"
	"github.com/moat-iot/moat/internal/target/targettest"
)

func TestDecodeCustom_JudgesTheSuite(t *testing.T) {
	t.Parallel()
	targettest.RunCustom(t, func(path string, tf *metadata.TargetFiles) error {
		var raw []byte
		if tf.Custom != nil {
			raw = *tf.Custom
		}
		_, err := target.DecodeCustom(path, raw)
		if err != nil && !errors.Is(err, target.ErrBadCustom) {
			t.Errorf("DecodeCustom(%s) = %v, want ErrBadCustom", path, err)
		}
		return err
	})
}

func TestCustom_EncodeRoundTrips(t *testing.T) {
	t.Parallel()
	for path, c := range map[string]target.Custom{
		targettest.OSPath:  {Kind: target.KindOS, Version: "1.0.0", SecurityVersion: 7, ComponentID: targettest.ComponentID, Feeds: []string{"RetailEval", "Retail"}},
		targettest.AppPath: {Kind: target.KindApp, Version: "1.0.0", SecurityVersion: 0, ComponentID: targettest.ComponentID, Product: "DW100"},
	} {
		raw, err := c.Encode(path)
		if err != nil {
			t.Fatalf("Encode(%s) = %v", path, err)
		}
		got, err := target.DecodeCustom(path, raw)
		if err != nil {
			t.Fatalf("DecodeCustom(%s, %s) = %v", path, raw, err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Errorf("DecodeCustom(Encode(%s)) differs (-want +got):\n%s", path, diff)
		}
	}
}

func TestCustom_EncodeRejectsInvalid(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		path string
		c    target.Custom
	}{
		"zero":                {targettest.AppPath, target.Custom{}},
		"app without product": {targettest.AppPath, target.Custom{Kind: target.KindApp, Version: "1.0.0", ComponentID: targettest.ComponentID}},
		"os without feeds":    {targettest.OSPath, target.Custom{Kind: target.KindOS, Version: "1.0.0", ComponentID: targettest.ComponentID}},
		"os at an app path":   {targettest.AppPath, target.Custom{Kind: target.KindOS, Version: "1.0.0", ComponentID: targettest.ComponentID, Feeds: []string{"Retail"}}},
		"other version":       {targettest.AppPath, target.Custom{Kind: target.KindApp, Version: "1.0.1", ComponentID: targettest.ComponentID, Product: "DW100"}},
		"bad path":            {"apps/x", target.Custom{Kind: target.KindApp, Version: "1.0.0", ComponentID: targettest.ComponentID, Product: "DW100"}},
	} {
		if _, err := tc.c.Encode(tc.path); !errors.Is(err, target.ErrBadCustom) {
			t.Errorf("%s: Encode(%s) = %v, want ErrBadCustom", name, tc.path, err)
		}
	}
}

// FuzzDecodeCustom: no panic, bounded input, and whatever decodes encodes again to a
// document that decodes to the same value (stable re-encoding).
func FuzzDecodeCustom(f *testing.F) {
	for _, c := range targettest.Cases {
		f.Add(c.Path, []byte(c.Custom))
	}
	f.Fuzz(func(t *testing.T, path string, raw []byte) {
		c, err := target.DecodeCustom(path, raw)
		if err != nil {
			return
		}
		enc, err := c.Encode(path)
		if err != nil {
			t.Fatalf("Encode(DecodeCustom(%q)) = %v", raw, err)
		}
		again, err := target.DecodeCustom(path, enc)
		if err != nil {
			t.Fatalf("DecodeCustom(%s) = %v", enc, err)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("re-encoding changed the value (-first +again):\n%s", diff)
		}
		if enc2, _ := again.Encode(path); string(enc2) != string(enc) {
			t.Fatalf("re-encoding is not stable: %s, then %s", enc, enc2)
		}
	})
}

// TestCustom_DocumentedInImageFormat: docs/image-format.md's table names every field of
// Custom, and its examples decode.
func TestCustom_DocumentedInImageFormat(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/image-format.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, section, ok := strings.Cut(doc, "## Signed target metadata")
	if !ok {
		t.Fatal("docs/image-format.md has no section \"Signed target metadata\"")
	}
	ct := reflect.TypeFor[target.Custom]()
	for i := range ct.NumField() {
		key, _, _ := strings.Cut(ct.Field(i).Tag.Get("json"), ",")
		if !strings.Contains(section, "| `"+key+"` |") {
			t.Errorf("docs/image-format.md does not document custom field %q", key)
		}
	}
	for _, ex := range []struct{ path, marker string }{
		{"os/moat-os/1.0.0", `{"kind":"os"`}, {"apps/dw100-app/1.0.0", `{"kind":"app"`},
	} {
		i := strings.Index(section, ex.marker)
		if i < 0 {
			t.Fatalf("no example starting %s", ex.marker)
		}
		line, _, _ := strings.Cut(section[i:], "\n")
		if _, err := target.DecodeCustom(ex.path, []byte(line)); err != nil {
			t.Errorf("the documented example %s: %v", line, err)
		}
	}
}
