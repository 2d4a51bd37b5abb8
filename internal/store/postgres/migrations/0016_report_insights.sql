-- moat schema 16 (PostgreSQL): error-report insights (issue 11). See the SQLite migration of
-- the same number for what each column and index is for.
ALTER TABLE devices
	ADD COLUMN running_os_since TIMESTAMPTZ,
	ADD COLUMN running_app_since TIMESTAMPTZ;
UPDATE devices SET running_os_since = attested_at WHERE running_os_target <> '';
UPDATE devices SET running_app_since = attested_at WHERE running_app_target <> '';

CREATE INDEX error_reports_recent ON error_reports (tenant_id, received_at, device_id, id);
CREATE INDEX error_reports_kind_image ON error_reports (tenant_id, kind, image_path, image_version, received_at, device_id);
CREATE INDEX devices_app_version ON devices (tenant_id, running_app_target, running_app_version);
CREATE INDEX devices_os_version ON devices (tenant_id, running_os_target, running_os_version);
