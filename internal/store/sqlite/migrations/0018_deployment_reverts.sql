-- moat schema 18 (SQLite): deployments with history (issue 12). A rollback is a new
-- deployment of an earlier one's target; reverts names the deployment that was current and
-- is being reverted (NULL for an ordinary deployment). No foreign key: the reverted
-- deployment is of the same group, and both go when the group goes.
ALTER TABLE deployments ADD COLUMN reverts TEXT;
