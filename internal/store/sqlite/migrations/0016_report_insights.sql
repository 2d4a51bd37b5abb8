-- moat schema 16 (SQLite): error-report insights (issue 11): the tenant-wide report list and
-- download, and per-image-version health.
--
-- devices: running_os_since and running_app_since are when the device started running the
-- OS and application version of running_os_* and running_app_*: the time of the first
-- successful attestation that showed them (the store sets them when an attestation changes
-- the running version). Before this migration that time was not kept: the last attestation
-- is the best that is known, so existing devices start at attested_at.
ALTER TABLE devices ADD COLUMN running_os_since TIMESTAMP;
ALTER TABLE devices ADD COLUMN running_app_since TIMESTAMP;
UPDATE devices SET running_os_since = attested_at WHERE running_os_target <> '';
UPDATE devices SET running_app_since = attested_at WHERE running_app_target <> '';

-- The tenant's reports newest received first, keyset-paged on (received_at, device_id, id):
-- the list and the streamed download walk this index backwards.
CREATE INDEX error_reports_recent ON error_reports (tenant_id, received_at, device_id, id);
-- The app_crash reports naming an image version in a window, and the devices that made
-- them (version health).
CREATE INDEX error_reports_kind_image ON error_reports (tenant_id, kind, image_path, image_version, received_at, device_id);
-- The devices running each version, with what device-hours need.
CREATE INDEX devices_app_version ON devices (tenant_id, running_app_target, running_app_version);
CREATE INDEX devices_os_version ON devices (tenant_id, running_os_target, running_os_version);
