-- moat schema 3 (PostgreSQL): the TUF image repository's files. The platform's root chain is
-- shared by every tenant view; each tenant view's published files are kept byte for byte
-- (all immutable but timestamp.json) so that the view survives a restart.
CREATE TABLE platform_roots (
	version    BIGINT PRIMARY KEY,
	data       BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE tuf_files (
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	name       TEXT NOT NULL,
	data       BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (tenant_id, name)
);
