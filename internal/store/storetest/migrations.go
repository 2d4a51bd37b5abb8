package storetest

import (
	"database/sql"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// CheckMigrations fails the test unless db's schema_migrations records every migration file
// matching glob exactly once, in order, under the version its name starts with (NNNN_).
// Numbers may have gaps: parallel branches reserve theirs before they merge.
func CheckMigrations(t *testing.T, db *sql.DB, glob string) {
	t.Helper()
	type applied struct {
		Version int
		Name    string
	}
	rows, err := db.QueryContext(t.Context(), `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []applied
	for rows.Next() {
		var a applied
		if err := rows.Scan(&a.Version, &a.Name); err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("migration files %s: %v, %v", glob, files, err)
	}
	var want []applied
	for _, f := range files {
		num, _, _ := strings.Cut(filepath.Base(f), "_")
		v, err := strconv.Atoi(num)
		if err != nil {
			t.Fatalf("migration file %s: name must be NNNN_name.sql", f)
		}
		want = append(want, applied{v, filepath.Base(f)})
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("schema_migrations mismatch (-want +got):\n%s", d)
	}
}
