-- moat schema 1 (PostgreSQL): tenants, users, tokens, members, products, device groups, audit.
-- Every tenant-owned table keys on tenant_id first.
CREATE TABLE tenants (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	name_fold  TEXT NOT NULL UNIQUE,
	created_at TIMESTAMPTZ NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL,
	version    BIGINT NOT NULL
);

CREATE TABLE users (
	id                TEXT PRIMARY KEY,
	name              TEXT NOT NULL,
	platform_operator BOOLEAN NOT NULL,
	created_at        TIMESTAMPTZ NOT NULL
);

CREATE TABLE tokens (
	id         TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL REFERENCES users (id),
	name       TEXT NOT NULL,
	hash       BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	expires_at TIMESTAMPTZ,
	revoked_at TIMESTAMPTZ
);
CREATE INDEX tokens_user ON tokens (user_id, id);

CREATE TABLE members (
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	user_id    TEXT NOT NULL REFERENCES users (id),
	role       TEXT NOT NULL CHECK (role IN ('Reader', 'Contributor', 'Administrator')),
	created_at TIMESTAMPTZ NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX members_user ON members (user_id);

CREATE TABLE products (
	tenant_id   TEXT NOT NULL REFERENCES tenants (id),
	id          TEXT NOT NULL,
	name        TEXT NOT NULL,
	name_fold   TEXT NOT NULL,
	description TEXT NOT NULL,
	created_at  TIMESTAMPTZ NOT NULL,
	updated_at  TIMESTAMPTZ NOT NULL,
	version     BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, id),
	UNIQUE (tenant_id, name_fold)
);

CREATE TABLE device_groups (
	tenant_id     TEXT NOT NULL,
	product_id    TEXT NOT NULL,
	id            TEXT NOT NULL,
	name          TEXT NOT NULL,
	name_fold     TEXT NOT NULL,
	description   TEXT NOT NULL,
	os_feed       TEXT NOT NULL CHECK (os_feed IN ('Retail', 'RetailEval')),
	update_policy TEXT NOT NULL CHECK (update_policy IN ('UpdateAll', 'UpdateOSOnly')),
	created_at    TIMESTAMPTZ NOT NULL,
	updated_at    TIMESTAMPTZ NOT NULL,
	version       BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, id),
	UNIQUE (tenant_id, product_id, name_fold),
	FOREIGN KEY (tenant_id, product_id) REFERENCES products (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX device_groups_product ON device_groups (tenant_id, product_id, id);

CREATE TABLE audit_events (
	tenant_id   TEXT NOT NULL REFERENCES tenants (id),
	id          TEXT NOT NULL,
	at          TIMESTAMPTZ NOT NULL,
	actor_id    TEXT NOT NULL,
	actor_name  TEXT NOT NULL,
	token_id    TEXT NOT NULL,
	action      TEXT NOT NULL,
	object_type TEXT NOT NULL,
	object_id   TEXT NOT NULL,
	remote_addr TEXT NOT NULL,
	request_id  TEXT NOT NULL,
	detail      TEXT NOT NULL,
	PRIMARY KEY (tenant_id, id)
);
