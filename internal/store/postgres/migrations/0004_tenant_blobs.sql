-- moat schema 4 (PostgreSQL): which content-addressed blobs each tenant uploaded.
CREATE TABLE tenant_blobs (
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	digest     TEXT NOT NULL,
	size       BIGINT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (tenant_id, digest)
);
