-- moat schema 14 (PostgreSQL): error reports grouped into issues (issue 11).
--
-- A report's issue is the hash of its signature (errreport.Signature, errreport.IssueID):
-- kind, image name, exit code or signal, code, step, target name, capability and the
-- normalised message. error_reports.issue_id holds it. SQL cannot compute it, so the
-- store's Go step for this migration (sqldb.backfillErrorIssues, run in the same
-- transaction right after this file) fills it in for the reports stored before, then builds
-- the tables below from them.
--
-- The tables below are aggregates that ErrorReports.Add keeps in step with every report it
-- stores, and that every deletion (the per-device bound, retention) takes back, so listing
-- a tenant's issues reads one row per issue, never the reports:
--   error_issues: per issue, its reports, the devices that sent at least one (exact: the
--     count of error_issue_devices rows), when the first and the last of its reports still
--     stored was received, its kind and image name, and the message of its newest report;
--   error_issue_devices: per issue and device, that device's reports of it;
--   error_issue_versions: per issue and image version (the reports' image_version), its
--     reports;
--   error_issue_days: per issue and UTC day of receipt (YYYY-MM-DD), its reports.
ALTER TABLE error_reports ADD COLUMN issue_id TEXT NOT NULL DEFAULT '';
-- An issue's reports, newest first, and its first and last received.
CREATE INDEX error_reports_issue ON error_reports (tenant_id, issue_id, received_at, device_id, id);
-- Retention: the oldest received reports of a tenant.
CREATE INDEX error_reports_tenant_received ON error_reports (tenant_id, received_at, device_id, id);

CREATE TABLE error_issues (
	tenant_id  TEXT NOT NULL,
	id         TEXT NOT NULL,
	signature  TEXT NOT NULL,
	kind       TEXT NOT NULL,
	image_name TEXT NOT NULL,
	message    TEXT NOT NULL,
	reports    BIGINT NOT NULL CHECK (reports > 0),
	devices    BIGINT NOT NULL CHECK (devices >= 0),
	first_seen TIMESTAMPTZ NOT NULL,
	last_seen  TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (tenant_id, id)
);
CREATE INDEX error_issues_last_seen ON error_issues (tenant_id, last_seen, id);
CREATE INDEX error_issues_reports ON error_issues (tenant_id, reports, id);

CREATE TABLE error_issue_devices (
	tenant_id TEXT NOT NULL,
	issue_id  TEXT NOT NULL,
	device_id TEXT NOT NULL,
	reports   BIGINT NOT NULL CHECK (reports > 0),
	PRIMARY KEY (tenant_id, issue_id, device_id)
);

CREATE TABLE error_issue_versions (
	tenant_id TEXT NOT NULL,
	issue_id  TEXT NOT NULL,
	version   TEXT NOT NULL,
	reports   BIGINT NOT NULL CHECK (reports > 0),
	PRIMARY KEY (tenant_id, issue_id, version)
);

CREATE TABLE error_issue_days (
	tenant_id TEXT NOT NULL,
	issue_id  TEXT NOT NULL,
	day       TEXT NOT NULL,
	reports   BIGINT NOT NULL CHECK (reports > 0),
	PRIMARY KEY (tenant_id, issue_id, day)
);
