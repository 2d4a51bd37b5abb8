-- moat schema 17 (PostgreSQL): the fleet-status count (issue 11). See the SQLite migration
-- of the same number: devices_running also holds refusal, update_state and attested_at, so
-- the count per group, what the devices run and their state is an index-only scan.
DROP INDEX devices_running;
CREATE INDEX devices_running ON devices (tenant_id, product_id, group_id,
	running_os_target, running_os_version, running_app_target, running_app_version,
	refusal, update_state, attested_at);
