-- moat schema 17 (SQLite): the fleet-status count (issue 11). The devices of a product are
-- counted per one key: group, the target paths they run (an image's path ends in its
-- version), the refusal of their last attestation, their latest update state and whether
-- they ever attested, joined by the unit separator (no part holds one). This index holds
-- the key in order, so SQLite counts without sorting (TestCountStatus_UsesIndex), and one
-- key per device costs about half what grouping by the five columns does
-- (BenchmarkFleetStatus). The expression must stay identical to sqldb's statusKey.
CREATE INDEX devices_status ON devices (tenant_id, product_id,
	(group_id || char(31) || running_os_target || char(31) || running_app_target || char(31) || refusal || char(31) || update_state || char(31) || (attested_at IS NULL)));
