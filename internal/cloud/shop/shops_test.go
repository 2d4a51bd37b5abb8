package shop_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moat-iot/moat/internal/cloud/shop"
)

func TestLoadShops(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "shops.yaml")
	src := "version: 1\nshops:\n  seattle-north:\n    name: Seattle North Appliance Repair\n    url: https://inventory.seattle-north.example/api\n    token_file: seattle-north.token\n  demo:\n    name: Demo shop\n    url: http://127.0.0.1:8480\n    token_file: /run/demo.token\n"
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	shops, err := shop.LoadShops(p)
	if err != nil {
		t.Fatalf("LoadShops() = %v", err)
	}
	if len(shops) != 2 || shops[0].ID != "seattle-north" || shops[0].TokenFile != filepath.Join(dir, "seattle-north.token") ||
		shops[1].TokenFile != "/run/demo.token" || shops[0].Line != 3 {
		t.Errorf("LoadShops() = %+v", shops)
	}
}

// TestParseShops_Errors: each problem at its line; plain http off loopback is refused
// (the bearer token would cross a network in clear).
func TestParseShops_Errors(t *testing.T) {
	t.Parallel()
	const head = "version: 1\nshops:\n"
	shopAt := func(id, url string) string {
		return fmt.Sprintf("  %s:\n    name: A shop\n    url: %s\n    token_file: t\n", id, url)
	}
	for _, tt := range []struct {
		name, src string
		line      int
		want      string
	}{
		{"missing version", "shops: {}\n", 1, `missing field "version"`},
		{"bad version", "version: 2\nshops: {}\n", 1, "version must be 1"},
		{"unknown field", "version: 1\nshop: {}\n", 2, `unknown field "shop"`},
		{"bad id", head + shopAt("Seattle_North", "https://a.example"), 3, `shop ID "Seattle_North"`},
		{"http off loopback", head + shopAt("a", "http://a.example"), 5, "plain http is allowed only to a loopback address"},
		{"ftp", head + shopAt("a", "ftp://a.example"), 5, "must be an https URL"},
		{"user info", head + shopAt("a", "https://u:p@a.example"), 5, "without user information"},
		{"query", head + shopAt("a", "https://a.example/?x=1"), 5, "query"},
		{"unknown shop field", head + "  a:\n    name: A\n    url: https://a.example\n    token_file: t\n    token: abc\n", 7, `unknown field "token"`},
		{"missing token_file", head + "  a:\n    name: A\n    url: https://a.example\n", 4, `missing field "token_file"`},
		{"duplicate", head + shopAt("a", "https://a.example") + shopAt("a", "https://b.example"), 7, `duplicate shop "a"`},
		{"alias", "version: 1\nshops: &s {}\n", 2, "anchors and aliases"},
		{"syntax", "version: 1\nshops: [\n", 2, "invalid YAML"},
		{"empty", "", 1, "file is empty"},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			_, err := shop.ParseShops([]byte(tt.src), "shops.yaml")
			fe, ok := errors.AsType[*shop.FileError](err)
			if !ok {
				t.Fatalf("ParseShops() = %v, want a *FileError", err)
			}
			prefix := fmt.Sprintf("shops.yaml:%d: ", tt.line)
			for _, p := range fe.Problems {
				if strings.HasPrefix(p, prefix) && strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("ParseShops() =\n%v\nwant %q...%q", err, prefix, tt.want)
		})
	}
}
