-- moat schema 9 (SQLite): storage quotas, platform uploads, and the registry of blob files that
-- garbage collection removes from.
--
-- tenants.storage_quota_bytes is the operator's quota for the tenant; NULL means the server's
-- default. tenant_blobs.platform marks a row recorded because the platform's targets.json for
-- the tenant names an OS package: it is not the tenant's upload and does not count against the
-- quota. platform_blobs records the OS packages the platform operator uploaded. blob_files has
-- one row per stored content-addressed file, shared by every tenant and the platform: recording
-- a reference to a file and removing the file both take its row, so they happen one after the
-- other (an upload never records a file that collection is removing). created_at is the time
-- of the last upload or reference, the start of the grace period before collection.
ALTER TABLE tenants ADD COLUMN storage_quota_bytes BIGINT CHECK (storage_quota_bytes >= 0);

ALTER TABLE tenant_blobs ADD COLUMN platform BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX tenant_blobs_digest ON tenant_blobs (digest);

CREATE TABLE platform_blobs (
	digest     TEXT PRIMARY KEY,
	size       BIGINT NOT NULL,
	created_at TIMESTAMP NOT NULL
);

CREATE TABLE blob_files (
	digest     TEXT PRIMARY KEY,
	size       BIGINT NOT NULL,
	created_at TIMESTAMP NOT NULL
);
INSERT INTO blob_files (digest, size, created_at)
	SELECT digest, MAX(size), MAX(created_at) FROM tenant_blobs GROUP BY digest;
