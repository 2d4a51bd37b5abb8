package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun_RefusesPlainHTTPOffLoopback: without TLS the bearer token must not cross a
// network in clear.
func TestRun_RefusesPlainHTTPOffLoopback(t *testing.T) {
	t.Parallel()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("shop-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:8480", "[::]:0"} {
		err := run(t.Context(), []string{"--addr", addr, "--token-file", tok}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "plain HTTP only on a loopback address") {
			t.Errorf("run(--addr %s) = %v, want a refusal", addr, err)
		}
	}
	if err := run(t.Context(), []string{"--addr", "127.0.0.1:0"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--token-file: required") {
		t.Errorf("run() without a token = %v", err)
	}
}
