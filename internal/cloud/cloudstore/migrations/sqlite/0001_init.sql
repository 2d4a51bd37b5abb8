-- The cloud's own database. Times are microseconds since the Unix epoch (UTC) in *_us
-- columns: exact, ordered, and the same in both dialects. Retention deletes by the
-- cloud's own clock (received_us, updated_us), never by a device's clock.

CREATE TABLE devices (
	id                TEXT PRIMARY KEY,
	product           TEXT NOT NULL,
	first_seen_us     INTEGER NOT NULL,
	last_seen_us      INTEGER NOT NULL,
	cert_not_after_us INTEGER NOT NULL,
	cert_serial       TEXT NOT NULL
);
CREATE INDEX devices_product ON devices (product, id);

-- One row per stored stream message: its JetStream sequence is the natural key that makes
-- a redelivered message a no-op.
CREATE TABLE ingested (
	seq         INTEGER PRIMARY KEY,
	received_us INTEGER NOT NULL
);
CREATE INDEX ingested_received ON ingested (received_us);

CREATE TABLE readings (
	device      TEXT NOT NULL,
	time_us     INTEGER NOT NULL,
	seq         INTEGER NOT NULL,
	metric      TEXT NOT NULL,
	product     TEXT NOT NULL,
	received_us INTEGER NOT NULL,
	cycle       TEXT NOT NULL,
	phase       TEXT NOT NULL,
	value       REAL NOT NULL,
	unit        TEXT NOT NULL,
	PRIMARY KEY (device, time_us, seq, metric)
) WITHOUT ROWID;
CREATE INDEX readings_received ON readings (received_us);
CREATE INDEX readings_fleet ON readings (product, metric, time_us);

CREATE TABLE cycle_summaries (
	device     TEXT NOT NULL,
	cycle      TEXT NOT NULL,
	phase      TEXT NOT NULL,
	metric     TEXT NOT NULL,
	product    TEXT NOT NULL,
	unit       TEXT NOT NULL,
	min_value  REAL NOT NULL,
	max_value  REAL NOT NULL,
	sum_value  REAL NOT NULL,
	samples    INTEGER NOT NULL,
	first_us   INTEGER NOT NULL,
	last_us    INTEGER NOT NULL,
	updated_us INTEGER NOT NULL,
	PRIMARY KEY (device, cycle, phase, metric)
) WITHOUT ROWID;
CREATE INDEX cycle_summaries_device ON cycle_summaries (device, last_us);
CREATE INDEX cycle_summaries_fleet ON cycle_summaries (product, metric, phase, last_us);
CREATE INDEX cycle_summaries_updated ON cycle_summaries (updated_us);

CREATE TABLE hourly_summaries (
	device     TEXT NOT NULL,
	hour_us    INTEGER NOT NULL,
	metric     TEXT NOT NULL,
	product    TEXT NOT NULL,
	unit       TEXT NOT NULL,
	min_value  REAL NOT NULL,
	max_value  REAL NOT NULL,
	sum_value  REAL NOT NULL,
	samples    INTEGER NOT NULL,
	updated_us INTEGER NOT NULL,
	PRIMARY KEY (device, hour_us, metric)
) WITHOUT ROWID;
CREATE INDEX hourly_summaries_updated ON hourly_summaries (updated_us);

CREATE TABLE events (
	seq         INTEGER PRIMARY KEY,
	device      TEXT NOT NULL,
	time_us     INTEGER NOT NULL,
	received_us INTEGER NOT NULL,
	product     TEXT NOT NULL,
	name        TEXT NOT NULL,
	cycle       TEXT NOT NULL,
	readings    TEXT NOT NULL,
	message     TEXT NOT NULL
);
CREATE INDEX events_device ON events (device, time_us, seq);
CREATE INDEX events_received ON events (received_us);

CREATE TABLE alerts (
	id                INTEGER PRIMARY KEY AUTOINCREMENT,
	product           TEXT NOT NULL,
	device            TEXT NOT NULL,
	rule              TEXT NOT NULL,
	severity          TEXT NOT NULL,
	state             TEXT NOT NULL CHECK (state IN ('open', 'cleared')),
	opened_us         INTEGER NOT NULL,
	cleared_us        INTEGER,
	value             REAL NOT NULL,
	message           TEXT NOT NULL,
	evidence          TEXT NOT NULL,
	diagnostic_id     TEXT,
	diagnostic_state  TEXT,
	diagnostic_result TEXT
);
-- One episode at a time: a second open alert of the same rule on the same device is a
-- conflict (the rules engine fires once per episode).
CREATE UNIQUE INDEX alerts_one_open ON alerts (device, rule) WHERE state = 'open';
CREATE INDEX alerts_state ON alerts (state, id);
CREATE INDEX alerts_device ON alerts (device, id);
CREATE INDEX alerts_product ON alerts (product, id);

CREATE TABLE diagnostics (
	id           TEXT PRIMARY KEY,
	device       TEXT NOT NULL,
	command      TEXT NOT NULL,
	args         TEXT,
	requested_by TEXT NOT NULL,
	requested_us INTEGER NOT NULL,
	deadline_us  INTEGER NOT NULL,
	state        TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'succeeded', 'failed', 'timed_out')),
	result       TEXT,
	error        TEXT NOT NULL,
	finished_us  INTEGER,
	device_at_us INTEGER,
	alert_id     INTEGER REFERENCES alerts (id)
);
CREATE INDEX diagnostics_open ON diagnostics (state, deadline_us);
CREATE INDEX diagnostics_device ON diagnostics (device, requested_us);
CREATE INDEX diagnostics_alert ON diagnostics (alert_id);
