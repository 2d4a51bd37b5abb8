//go:build race

package sandbox_test

// raceEnabled: the test binary has the race detector, so a program the tests build gets
// it too and reuses the race-built packages already in the build cache.
const raceEnabled = true
