-- moat schema 10 (PostgreSQL): indexed columns for fleet queries, copied out of the JSON
-- text that the device and error-report rows already hold, so that counting and filtering
-- devices and reports runs on indexes instead of decoding every row.
--
-- devices: what the device runs by its last successful attestation (device.Running: the
-- OS and application target paths and versions; '' for a kind not measured), and the time
-- and refusal reason of its last attestation (attested_at NULL: never attested;
-- refusal '': the last one succeeded). The store's writes keep them in step with the
-- attestation column. error_reports: the image path and version the report names.
ALTER TABLE devices
	ADD COLUMN running_os_target TEXT NOT NULL DEFAULT '',
	ADD COLUMN running_os_version TEXT NOT NULL DEFAULT '',
	ADD COLUMN running_app_target TEXT NOT NULL DEFAULT '',
	ADD COLUMN running_app_version TEXT NOT NULL DEFAULT '',
	ADD COLUMN attested_at TIMESTAMPTZ,
	ADD COLUMN refusal TEXT NOT NULL DEFAULT '';

-- The images of each device's last successful attestation: those of its last attestation
-- when that succeeded (no refusal), else those of the newest certificate issued to it (one
-- is issued on every success, with the images attested).
CREATE TEMP TABLE running_0010 ON COMMIT DROP AS
SELECT d.id AS device_id,
	CASE WHEN d.attestation::jsonb ->> 'refusal' IS NULL THEN d.attestation::jsonb -> 'images'
	ELSE (SELECT c.images::jsonb FROM device_certificates c WHERE c.tenant_id = d.tenant_id AND c.device_id = d.id
		ORDER BY c.issued_at DESC, c.serial DESC LIMIT 1)
	END AS images
FROM devices d WHERE d.attestation IS NOT NULL;

UPDATE devices d SET
	running_os_target = COALESCE((SELECT m ->> 'path' FROM running_0010 r, jsonb_array_elements(r.images) m
		WHERE r.device_id = d.id AND m ->> 'kind' = 'os' LIMIT 1), ''),
	running_os_version = COALESCE((SELECT m ->> 'version' FROM running_0010 r, jsonb_array_elements(r.images) m
		WHERE r.device_id = d.id AND m ->> 'kind' = 'os' LIMIT 1), ''),
	running_app_target = COALESCE((SELECT m ->> 'path' FROM running_0010 r, jsonb_array_elements(r.images) m
		WHERE r.device_id = d.id AND m ->> 'kind' = 'app' LIMIT 1), ''),
	running_app_version = COALESCE((SELECT m ->> 'version' FROM running_0010 r, jsonb_array_elements(r.images) m
		WHERE r.device_id = d.id AND m ->> 'kind' = 'app' LIMIT 1), ''),
	attested_at = (d.attestation::jsonb ->> 'at')::timestamptz,
	refusal = COALESCE(d.attestation::jsonb ->> 'refusal', '')
WHERE d.attestation IS NOT NULL;

-- The fleet status count (devices per group and what they run) reads only this index.
CREATE INDEX devices_running ON devices (tenant_id, product_id, group_id,
	running_os_target, running_os_version, running_app_target, running_app_version);
CREATE INDEX devices_running_app ON devices (tenant_id, running_app_target, id);
CREATE INDEX devices_running_os ON devices (tenant_id, running_os_target, id);
CREATE INDEX devices_refusal ON devices (tenant_id, refusal, id);
CREATE INDEX devices_attested ON devices (tenant_id, attested_at);

ALTER TABLE error_reports
	ADD COLUMN image_path TEXT NOT NULL DEFAULT '',
	ADD COLUMN image_version TEXT NOT NULL DEFAULT '';
UPDATE error_reports SET
	image_path = COALESCE(body::jsonb ->> 'image_path', ''),
	image_version = COALESCE(body::jsonb ->> 'image_version', '');
-- Reports per image version since a time read only this index.
CREATE INDEX error_reports_image ON error_reports (tenant_id, received_at, image_path, image_version, kind);
