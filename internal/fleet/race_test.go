//go:build race

package fleet_test

// sqliteFleet is how many devices TestAttest_1000Concurrent starts at once on SQLite. Under
// the race detector the pure-Go SQLite (translated from C, every memory access
// instrumented) runs some forty times slower: a thousand attestations took 316 s on the
// 2-core machine alone and over 600 s beside the other packages. The race run checks for
// races with 300; scripts/test.sh also runs the test without the race detector, where
// SQLite takes the whole thousand (about 8 s).
const sqliteFleet = 300

// postgresFleet is the same for PostgreSQL under the race detector: a thousand devices'
// TLS handshakes and attestations, every one instrumented, ran past the test's 10 minutes
// (30 of 1000 attested) on the 2-core machine at load average 12; without the race
// detector the thousand took 10.6 s on the same machine, and scripts/test.sh runs that too.
const postgresFleet = 300
