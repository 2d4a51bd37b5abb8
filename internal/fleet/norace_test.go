//go:build !race

package fleet_test

// sqliteFleet: without the race detector SQLite takes the whole fleet (see race_test.go).
const sqliteFleet = 1000
