-- moat schema 17 (SQLite): the fleet-status count (issue 11). The devices of a product per
-- group, what they run (target paths: an image's path ends in its version), the refusal of
-- their last attestation and their latest update state, counted by walking this one index:
-- its columns are the grouping in order, then attested_at for count(attested_at), so no
-- device row is read and nothing is sorted (TestCountStatus_UsesIndex).
CREATE INDEX devices_status ON devices (tenant_id, product_id, group_id,
	running_os_target, running_app_target, refusal, update_state, attested_at);
