-- moat schema 18 (PostgreSQL): deployments with history (issue 12). See the SQLite
-- migration of the same number: reverts names the deployment a rollback reverts, NULL for
-- an ordinary deployment.
ALTER TABLE deployments ADD COLUMN reverts TEXT;
