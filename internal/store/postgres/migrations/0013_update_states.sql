-- moat schema 13 (PostgreSQL): each device's update state as the device reports it, and when
-- the service last heard from it, for the fleet-status and console queries (issue 11). See
-- the SQLite migration of the same number for what each column holds.
ALTER TABLE devices
	ADD COLUMN last_seen_at TIMESTAMPTZ,
	ADD COLUMN update_state TEXT NOT NULL DEFAULT '',
	ADD COLUMN update_state_at TIMESTAMPTZ;
UPDATE devices SET last_seen_at = attested_at;

CREATE INDEX devices_update_state ON devices (tenant_id, product_id, group_id, update_state, id);
CREATE INDEX devices_last_seen ON devices (tenant_id, last_seen_at);

CREATE TABLE device_update_events (
	tenant_id   TEXT NOT NULL,
	device_id   TEXT NOT NULL,
	id          TEXT NOT NULL,
	state       TEXT NOT NULL,
	at          TIMESTAMPTZ NOT NULL,
	received_at TIMESTAMPTZ NOT NULL,
	body        TEXT NOT NULL,
	PRIMARY KEY (tenant_id, device_id, id),
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id)
);
CREATE INDEX device_update_events_at ON device_update_events (tenant_id, device_id, at, id);
