-- moat schema 4 (SQLite): which content-addressed blobs each tenant uploaded.
CREATE TABLE tenant_blobs (
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	digest     TEXT NOT NULL,
	size       BIGINT NOT NULL,
	created_at TIMESTAMP NOT NULL,
	PRIMARY KEY (tenant_id, digest)
);
