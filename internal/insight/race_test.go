//go:build race

package insight_test

// scale divides the row counts of the constant-memory test: under the race detector the
// pure-Go SQLite that generates and reads the rows runs some twenty times slower, and the
// race run checks for races, not memory; the test still exports ten times the rows of its
// baseline.
const scale = 10
