-- moat schema 13 (SQLite): each device's update state as the device reports it, and when the
-- service last heard from it, for the fleet-status and console queries (issue 11).
--
-- devices: last_seen_at is the last time the device called the device API with its
-- certificate (attestation, an update check, an upload), kept coarse (the service writes it
-- at most every few minutes per device, so that a check-in is not a write). update_state is
-- the device's latest reported update step ('' before its first report: assigned,
-- downloading, installed, committed, rolled_back, failed, deferred) and update_state_at
-- when the device says it happened; the full report is the newest row of
-- device_update_events.
--
-- device_update_events: each device's bounded update history, keyed like error reports by
-- the ID the device gave each report, so a report delivered twice is stored once; state and
-- at are copied out of body for queries.
ALTER TABLE devices ADD COLUMN last_seen_at TIMESTAMP;
ALTER TABLE devices ADD COLUMN update_state TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN update_state_at TIMESTAMP;
UPDATE devices SET last_seen_at = attested_at;

CREATE INDEX devices_update_state ON devices (tenant_id, product_id, group_id, update_state, id);
CREATE INDEX devices_last_seen ON devices (tenant_id, last_seen_at);

CREATE TABLE device_update_events (
	tenant_id   TEXT NOT NULL,
	device_id   TEXT NOT NULL,
	id          TEXT NOT NULL,
	state       TEXT NOT NULL,
	at          TIMESTAMP NOT NULL,
	received_at TIMESTAMP NOT NULL,
	body        TEXT NOT NULL,
	PRIMARY KEY (tenant_id, device_id, id),
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id)
);
CREATE INDEX device_update_events_at ON device_update_events (tenant_id, device_id, at, id);
