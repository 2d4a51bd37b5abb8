-- moat schema 10 (SQLite): indexed columns for fleet queries, copied out of the JSON text
-- that the device and error-report rows already hold, so that counting and filtering
-- devices and reports runs on indexes instead of decoding every row.
--
-- devices: what the device runs by its last successful attestation (device.Running: the
-- OS and application target paths and versions; '' for a kind not measured), and the time
-- and refusal reason of its last attestation (attested_at NULL: never attested;
-- refusal '': the last one succeeded). The store's writes keep them in step with the
-- attestation column. error_reports: the image path and version the report names.
ALTER TABLE devices ADD COLUMN running_os_target TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN running_os_version TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN running_app_target TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN running_app_version TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN attested_at TIMESTAMP;
ALTER TABLE devices ADD COLUMN refusal TEXT NOT NULL DEFAULT '';

-- The images of each device's last successful attestation: those of its last attestation
-- when that succeeded (no refusal), else those of the newest certificate issued to it (one
-- is issued on every success, with the images attested).
CREATE TEMP TABLE running_0010 AS
SELECT d.id AS device_id,
	CASE WHEN json_extract(d.attestation, '$.refusal') IS NULL THEN json_extract(d.attestation, '$.images')
	ELSE (SELECT c.images FROM device_certificates c WHERE c.tenant_id = d.tenant_id AND c.device_id = d.id
		ORDER BY c.issued_at DESC, c.serial DESC LIMIT 1)
	END AS images
FROM devices d WHERE d.attestation IS NOT NULL;

-- attested_at is written as the driver writes a UTC time.Time (Go's Time.String:
-- "2006-01-02 15:04:05.999999999 +0000 UTC"), so that it compares with times the store
-- binds. The JSON holds RFC 3339 UTC ("...T15:04:05.999999999Z"): the same digits.
UPDATE devices SET
	running_os_target = COALESCE((SELECT json_extract(m.value, '$.path') FROM running_0010 r, json_each(r.images) m
		WHERE r.device_id = devices.id AND json_extract(m.value, '$.kind') = 'os' LIMIT 1), ''),
	running_os_version = COALESCE((SELECT json_extract(m.value, '$.version') FROM running_0010 r, json_each(r.images) m
		WHERE r.device_id = devices.id AND json_extract(m.value, '$.kind') = 'os' LIMIT 1), ''),
	running_app_target = COALESCE((SELECT json_extract(m.value, '$.path') FROM running_0010 r, json_each(r.images) m
		WHERE r.device_id = devices.id AND json_extract(m.value, '$.kind') = 'app' LIMIT 1), ''),
	running_app_version = COALESCE((SELECT json_extract(m.value, '$.version') FROM running_0010 r, json_each(r.images) m
		WHERE r.device_id = devices.id AND json_extract(m.value, '$.kind') = 'app' LIMIT 1), ''),
	attested_at = CASE WHEN json_extract(attestation, '$.at') LIKE '%Z'
		THEN replace(replace(json_extract(attestation, '$.at'), 'T', ' '), 'Z', ' +0000 UTC') END,
	refusal = COALESCE(json_extract(attestation, '$.refusal'), '')
WHERE attestation IS NOT NULL;

DROP TABLE running_0010;

-- The fleet status count (devices per group and what they run) reads only this index.
CREATE INDEX devices_running ON devices (tenant_id, product_id, group_id,
	running_os_target, running_os_version, running_app_target, running_app_version);
CREATE INDEX devices_running_app ON devices (tenant_id, running_app_target, id);
CREATE INDEX devices_running_os ON devices (tenant_id, running_os_target, id);
CREATE INDEX devices_refusal ON devices (tenant_id, refusal, id);
CREATE INDEX devices_attested ON devices (tenant_id, attested_at);

ALTER TABLE error_reports ADD COLUMN image_path TEXT NOT NULL DEFAULT '';
ALTER TABLE error_reports ADD COLUMN image_version TEXT NOT NULL DEFAULT '';
UPDATE error_reports SET
	image_path = COALESCE(json_extract(body, '$.image_path'), ''),
	image_version = COALESCE(json_extract(body, '$.image_version'), '');
-- Reports per image version since a time read only this index.
CREATE INDEX error_reports_image ON error_reports (tenant_id, received_at, image_path, image_version, kind);
