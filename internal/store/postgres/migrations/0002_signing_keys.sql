-- moat schema 2 (PostgreSQL): tenants' registered public signing keys.
CREATE TABLE signing_keys (
	tenant_id      TEXT NOT NULL REFERENCES tenants (id),
	id             TEXT NOT NULL,
	name           TEXT NOT NULL,
	name_fold      TEXT NOT NULL,
	tuf_key_id     TEXT NOT NULL,
	algorithm      TEXT NOT NULL CHECK (algorithm IN ('ecdsa-p256')),
	public_key_pem TEXT NOT NULL,
	created_at     TIMESTAMPTZ NOT NULL,
	revoked_at     TIMESTAMPTZ,
	PRIMARY KEY (tenant_id, id),
	UNIQUE (tenant_id, name_fold),
	UNIQUE (tenant_id, tuf_key_id)
);
