-- moat schema 17 (SQLite): the fleet-status count (issue 11). devices_running grows by the
-- columns that decide a device's fleet state besides what it runs (refusal, update_state,
-- attested_at), so that counting a product's devices per group, per what they run and per
-- state walks this one index and never reads a device row. CountRunning reads the same
-- index by its leading columns.
DROP INDEX devices_running;
CREATE INDEX devices_running ON devices (tenant_id, product_id, group_id,
	running_os_target, running_os_version, running_app_target, running_app_version,
	refusal, update_state, attested_at);
