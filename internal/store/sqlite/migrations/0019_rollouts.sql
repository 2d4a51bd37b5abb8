-- moat schema 19 (SQLite): staged rollouts, maintenance windows and update deferral
-- (issue 12).
--
-- deployments: rollout is the staged part of a deployment (device.Rollout as JSON), NULL
-- for one that goes to its whole group at once; rollout_state and rollout_version are
-- copied out of it, so that the advance job finds running rollouts on an index and a
-- change is written only over the version it read (one conditional UPDATE: each stage
-- advances once however many replicas try). ignore_window: the image is installed outside
-- the group's maintenance window (a security update).
ALTER TABLE deployments ADD COLUMN rollout TEXT;
ALTER TABLE deployments ADD COLUMN rollout_state TEXT;
ALTER TABLE deployments ADD COLUMN rollout_version BIGINT;
ALTER TABLE deployments ADD COLUMN ignore_window BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX deployments_rollout ON deployments (rollout_state, id) WHERE rollout_state IS NOT NULL;

-- device_update_events: the target the step was for, copied out of the body, so that the
-- gate counts failed installs of one image with an index.
ALTER TABLE device_update_events ADD COLUMN target TEXT NOT NULL DEFAULT '';
UPDATE device_update_events SET target = COALESCE(json_extract(body, '$.target'), '');
CREATE INDEX device_update_events_target ON device_update_events (tenant_id, target, device_id, at, id);

-- device_groups: the maintenance window (product.MaintenanceWindow as JSON), NULL: any time.
ALTER TABLE device_groups ADD COLUMN maintenance_window TEXT;

-- products: how long an application may defer an update (seconds, default 24 h).
ALTER TABLE products ADD COLUMN max_update_deferral_seconds BIGINT NOT NULL DEFAULT 86400;
