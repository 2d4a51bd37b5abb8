-- moat schema 19 (PostgreSQL): staged rollouts, maintenance windows and update deferral
-- (issue 12). See the SQLite migration of the same number.
ALTER TABLE deployments ADD COLUMN rollout TEXT;
ALTER TABLE deployments ADD COLUMN rollout_state TEXT;
ALTER TABLE deployments ADD COLUMN rollout_version BIGINT;
ALTER TABLE deployments ADD COLUMN ignore_window BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX deployments_rollout ON deployments (rollout_state, id) WHERE rollout_state IS NOT NULL;

ALTER TABLE device_update_events ADD COLUMN target TEXT NOT NULL DEFAULT '';
UPDATE device_update_events SET target = COALESCE(body::jsonb ->> 'target', '');
CREATE INDEX device_update_events_target ON device_update_events (tenant_id, target, device_id, at, id);

ALTER TABLE device_groups ADD COLUMN maintenance_window TEXT;

ALTER TABLE products ADD COLUMN max_update_deferral_seconds BIGINT NOT NULL DEFAULT 86400;
