-- moat schema 7 (PostgreSQL): the device registry, the platform root certificate, tenants' device
-- certificate authorities, the device certificates they issued, and application deployments
-- to device groups.
--
-- A device belongs to no tenant until claimed; a claimed device's group is one of its
-- tenant's groups (the foreign key carries tenant_id, so it cannot name another tenant's
-- group), and a group with devices cannot be deleted (nor its product). A group's
-- deployments go with it.
CREATE UNIQUE INDEX device_groups_product_group ON device_groups (tenant_id, product_id, id);
DROP INDEX device_groups_product;

CREATE TABLE devices (
	id             TEXT PRIMARY KEY,
	public_key_pem TEXT NOT NULL,
	registered_at  TIMESTAMPTZ NOT NULL,
	tenant_id      TEXT REFERENCES tenants (id),
	claimed_at     TIMESTAMPTZ,
	product_id     TEXT,
	group_id       TEXT,
	blocked        BOOLEAN NOT NULL,
	development    BOOLEAN NOT NULL,
	floors         TEXT NOT NULL,
	attestation    TEXT,
	certificate    TEXT,
	version        BIGINT NOT NULL,
	CHECK ((tenant_id IS NULL) = (claimed_at IS NULL)),
	CHECK ((product_id IS NULL) = (group_id IS NULL)),
	CHECK (tenant_id IS NOT NULL OR group_id IS NULL),
	FOREIGN KEY (tenant_id, product_id, group_id) REFERENCES device_groups (tenant_id, product_id, id)
);
CREATE INDEX devices_tenant ON devices (tenant_id, id);
CREATE INDEX devices_group ON devices (tenant_id, product_id, group_id);

CREATE TABLE platform_ca (
	id              INTEGER PRIMARY KEY CHECK (id = 1),
	certificate_pem TEXT NOT NULL,
	updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE device_cas (
	tenant_id       TEXT NOT NULL REFERENCES tenants (id),
	id              TEXT NOT NULL,
	state           TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retired')),
	created_at      TIMESTAMPTZ NOT NULL,
	csr_pem         TEXT NOT NULL,
	certificate_pem TEXT NOT NULL,
	activated_at    TIMESTAMPTZ,
	retire_at       TIMESTAMPTZ,
	wrapped_key     BYTEA NOT NULL,
	version         BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, id)
);
CREATE INDEX device_cas_state ON device_cas (state, created_at);

CREATE TABLE device_certificates (
	serial     TEXT PRIMARY KEY,
	tenant_id  TEXT NOT NULL REFERENCES tenants (id),
	device_id  TEXT NOT NULL,
	ca_id      TEXT NOT NULL,
	product_id TEXT NOT NULL,
	group_id   TEXT NOT NULL,
	images     TEXT NOT NULL,
	issued_at  TIMESTAMPTZ NOT NULL,
	not_after  TIMESTAMPTZ NOT NULL
);
CREATE INDEX device_certificates_device ON device_certificates (tenant_id, device_id, issued_at);

CREATE TABLE deployments (
	id         TEXT PRIMARY KEY,
	tenant_id  TEXT NOT NULL,
	product_id TEXT NOT NULL,
	group_id   TEXT NOT NULL,
	target     TEXT NOT NULL,
	sha256     TEXT NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	created_by TEXT NOT NULL,
	FOREIGN KEY (tenant_id, product_id, group_id) REFERENCES device_groups (tenant_id, product_id, id) ON DELETE CASCADE
);
CREATE INDEX deployments_group ON deployments (tenant_id, product_id, group_id, created_at);
