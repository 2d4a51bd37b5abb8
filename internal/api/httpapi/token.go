package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/moat-iot/moat/internal/problem"
)

// ReadTokenFile reads a bearer token from the file the flag flag names (--metrics-token-file):
// one line, at least 16 characters, in a file only its owner may read (secrets by file,
// STYLE). An empty path is no token.
func ReadTokenFile(flag, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s %s: mode %v lets others read it; chmod 600", flag, path, info.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%s %s: want one token of at least 16 characters without spaces", flag, path)
	}
	return tok, nil
}

// RequireToken answers 401 unless the request carries "Authorization: Bearer token" (the
// /metrics token). The comparison is of SHA-256 digests in constant time, so neither the
// token's bytes nor its length leak through timing. Attacked by server's
// TestServer_MetricsToken.
func RequireToken(token string, h http.Handler) http.Handler {
	want := sha256.Sum256([]byte("Bearer " + token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			problem.Write(w, r, problem.New(problem.Unauthenticated, "metrics_token_required",
				"/metrics requires the metrics token: Authorization: Bearer TOKEN"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
