package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSlimBuild_LinksNoServerPackage: the device build links none of the security
// service's, the cloud's or the management CLI's packages.
func TestSlimBuild_LinksNoServerPackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"/internal/server", "/internal/api/", "/internal/store", "/internal/fleet", "/internal/repo",
		"/internal/cli", "/internal/demo", "/internal/deviceca", "/internal/cloud", "/internal/tuf",
		"github.com/jackc/pgx", "modernc.org/sqlite", "github.com/getkin/kin-openapi", "github.com/prometheus",
	}
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		for _, f := range forbidden {
			if strings.Contains(dep, f) {
				t.Errorf("moat-agent links %s", dep)
			}
		}
	}
}
