//go:build !race

package insight_test

// scale divides the row counts of the constant-memory test (see race_test.go).
const scale = 1
