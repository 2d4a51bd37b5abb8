//go:build !race

package fleet_test

// sqliteFleet: without the race detector SQLite takes the whole fleet (see race_test.go).
const sqliteFleet = 1000

// postgresFleet: without the race detector PostgreSQL takes the whole fleet too.
const postgresFleet = 1000
