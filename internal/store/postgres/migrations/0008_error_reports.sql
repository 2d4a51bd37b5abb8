-- moat schema 8 (PostgreSQL): the error reports of tenants' devices.
--
-- A report is keyed by its tenant, its device and the ID the device gave it, so a report
-- delivered twice is stored once. Its device must be one the tenant claimed (the foreign key
-- carries tenant_id, so a row cannot name another tenant's device). body is the report's
-- JSON as validated; kind and at are copied out of it for queries. error_report_counts keeps
-- each device's number of reports, so that bounding them costs one row update rather than a
-- count of up to 10000 rows per report; its row also serializes concurrent uploads of one
-- device.
CREATE UNIQUE INDEX devices_tenant_device ON devices (tenant_id, id);

CREATE TABLE error_reports (
	tenant_id   TEXT NOT NULL,
	device_id   TEXT NOT NULL,
	id          TEXT NOT NULL,
	kind        TEXT NOT NULL,
	at          TIMESTAMPTZ NOT NULL,
	received_at TIMESTAMPTZ NOT NULL,
	body        TEXT NOT NULL,
	PRIMARY KEY (tenant_id, device_id, id),
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id)
);
CREATE INDEX error_reports_received ON error_reports (tenant_id, device_id, received_at, id);

CREATE TABLE error_report_counts (
	tenant_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	n         BIGINT NOT NULL CHECK (n >= 0),
	PRIMARY KEY (tenant_id, device_id),
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id)
);
