// Package testenv holds what tests need to run moat's real components: an in-process server
// with a fresh data directory, and PostgreSQL databases created per test from
// MOAT_TEST_POSTGRES_DSN. Tests use real components, never mocks (STYLE, Testing).
//
// Without MOAT_TEST_POSTGRES_DSN the PostgreSQL tests skip, except in CI (CI=true), where a
// missing database fails them: a green CI run has always exercised PostgreSQL. `make test`
// (scripts/test.sh) starts a throwaway PostgreSQL and sets the variable.
//
// Every function here is safe to call from parallel tests.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresDSNEnv names the variable holding a connection string to a PostgreSQL server on
// which tests may create and drop databases.
const PostgresDSNEnv = "MOAT_TEST_POSTGRES_DSN"

// PostgresDSN returns the PostgreSQL server tests may use. When there is none it skips the
// test, or fails it when CI=true.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(PostgresDSNEnv)
	if dsn != "" {
		return dsn
	}
	const how = PostgresDSNEnv + " is not set; run `make test`, which starts a throwaway PostgreSQL, " +
		"or set it to a postgres:// URL of a server where tests may create databases"
	if os.Getenv("CI") == "true" {
		t.Fatal(how + " (CI=true: PostgreSQL tests must run in CI)")
	}
	t.Skip(how)
	return ""
}

// FreshPostgresDatabase creates an empty database with a random name on the server from
// PostgresDSN, drops it when the test ends, and returns a connection string for it. Tests
// using one may run in parallel with any other.
func FreshPostgresDatabase(t testing.TB) string {
	t.Helper()
	dsn := PostgresDSN(t)
	var b [8]byte
	rand.Read(b[:])
	name := "moat_test_" + hex.EncodeToString(b[:])
	ident := pgx.Identifier{name}.Sanitize()

	if err := adminExec(dsn, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("create test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// FORCE: a test that failed half-way may have left connections open.
		if err := adminExec(dsn, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	out, err := withDatabase(dsn, name)
	if err != nil {
		t.Fatalf("connection string for test database %s: %v", name, err)
	}
	return out
}

// adminExec runs one statement on the server's maintenance connection. It does not use the
// test's context: cleanup runs after that is cancelled.
func adminExec(dsn, stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		// pgx errors can quote the connection string; it may hold a password.
		return fmt.Errorf("connect to %s: %w", PostgresDSNEnv, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, stmt)
	return err
}

// withDatabase returns dsn naming database name instead of its own, for URLs
// (postgres://...) and keyword/value strings (host=... dbname=...) alike.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse %s as a URL: invalid format", PostgresDSNEnv)
		}
		u.Path, u.RawPath = "/"+name, ""
		return u.String(), nil
	}
	// In keyword/value form a later keyword overrides an earlier one.
	return dsn + " dbname=" + name, nil
}
