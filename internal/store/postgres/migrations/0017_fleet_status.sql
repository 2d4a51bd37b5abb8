-- moat schema 17 (PostgreSQL): the fleet-status count (issue 11). See the SQLite migration
-- of the same number: the count per group, target paths, refusal and update state is an
-- index-only scan of this index.
CREATE INDEX devices_status ON devices (tenant_id, product_id, group_id,
	running_os_target, running_app_target, refusal, update_state, attested_at);
