-- The cloud's own database. Times are microseconds since the Unix epoch (UTC) in *_us
-- columns: exact, ordered, and the same in both dialects. Retention deletes by the
-- cloud's own clock (received_us, updated_us), never by a device's clock.

CREATE TABLE devices (
	id                TEXT PRIMARY KEY,
	product           TEXT NOT NULL,
	first_seen_us     BIGINT NOT NULL,
	last_seen_us      BIGINT NOT NULL,
	cert_not_after_us BIGINT NOT NULL,
	cert_serial       TEXT NOT NULL
);
CREATE INDEX devices_product ON devices (product, id);

-- One row per stored stream message: its JetStream sequence is the natural key that makes
-- a redelivered message a no-op.
CREATE TABLE ingested (
	seq         BIGINT PRIMARY KEY,
	received_us BIGINT NOT NULL
);
CREATE INDEX ingested_received ON ingested (received_us);

CREATE TABLE readings (
	device      TEXT NOT NULL,
	time_us     BIGINT NOT NULL,
	seq         BIGINT NOT NULL,
	metric      TEXT NOT NULL,
	product     TEXT NOT NULL,
	received_us BIGINT NOT NULL,
	cycle       TEXT NOT NULL,
	phase       TEXT NOT NULL,
	value       DOUBLE PRECISION NOT NULL,
	unit        TEXT NOT NULL,
	PRIMARY KEY (device, time_us, seq, metric)
);
CREATE INDEX readings_received ON readings (received_us);
CREATE INDEX readings_fleet ON readings (product, metric, time_us);

CREATE TABLE cycle_summaries (
	device     TEXT NOT NULL,
	cycle      TEXT NOT NULL,
	phase      TEXT NOT NULL,
	metric     TEXT NOT NULL,
	product    TEXT NOT NULL,
	unit       TEXT NOT NULL,
	min_value  DOUBLE PRECISION NOT NULL,
	max_value  DOUBLE PRECISION NOT NULL,
	sum_value  DOUBLE PRECISION NOT NULL,
	samples    BIGINT NOT NULL,
	first_us   BIGINT NOT NULL,
	last_us    BIGINT NOT NULL,
	updated_us BIGINT NOT NULL,
	PRIMARY KEY (device, cycle, phase, metric)
);
CREATE INDEX cycle_summaries_device ON cycle_summaries (device, last_us);
CREATE INDEX cycle_summaries_fleet ON cycle_summaries (product, metric, phase, last_us);
CREATE INDEX cycle_summaries_updated ON cycle_summaries (updated_us);

CREATE TABLE hourly_summaries (
	device     TEXT NOT NULL,
	hour_us    BIGINT NOT NULL,
	metric     TEXT NOT NULL,
	product    TEXT NOT NULL,
	unit       TEXT NOT NULL,
	min_value  DOUBLE PRECISION NOT NULL,
	max_value  DOUBLE PRECISION NOT NULL,
	sum_value  DOUBLE PRECISION NOT NULL,
	samples    BIGINT NOT NULL,
	updated_us BIGINT NOT NULL,
	PRIMARY KEY (device, hour_us, metric)
);
CREATE INDEX hourly_summaries_updated ON hourly_summaries (updated_us);

CREATE TABLE events (
	seq         BIGINT PRIMARY KEY,
	device      TEXT NOT NULL,
	time_us     BIGINT NOT NULL,
	received_us BIGINT NOT NULL,
	product     TEXT NOT NULL,
	name        TEXT NOT NULL,
	cycle       TEXT NOT NULL,
	readings    TEXT NOT NULL,
	message     TEXT NOT NULL
);
CREATE INDEX events_device ON events (device, time_us, seq);
CREATE INDEX events_received ON events (received_us);

CREATE TABLE alerts (
	id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	product           TEXT NOT NULL,
	device            TEXT NOT NULL,
	rule              TEXT NOT NULL,
	severity          TEXT NOT NULL,
	state             TEXT NOT NULL CHECK (state IN ('open', 'cleared')),
	opened_us         BIGINT NOT NULL,
	cleared_us        BIGINT,
	value             DOUBLE PRECISION NOT NULL,
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
	requested_us BIGINT NOT NULL,
	deadline_us  BIGINT NOT NULL,
	state        TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'succeeded', 'failed', 'timed_out')),
	result       TEXT,
	error        TEXT NOT NULL,
	finished_us  BIGINT,
	device_at_us BIGINT,
	alert_id     BIGINT REFERENCES alerts (id)
);
CREATE INDEX diagnostics_open ON diagnostics (state, deadline_us);
CREATE INDEX diagnostics_device ON diagnostics (device, requested_us);
CREATE INDEX diagnostics_alert ON diagnostics (alert_id);
