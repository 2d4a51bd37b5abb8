-- Owners, their appliances and what the cloud does for them (issue 14): owner accounts and
-- their sessions, claim codes, sale records, service requests, part reservations, purchase
-- prompts, staff sessions of the support view, and the outbox through which every
-- external effect (mail, webhook, shop call) leaves the cloud exactly once per key.
-- Secrets (passwords, session IDs, claim codes, mailed tokens) are stored only as hashes.

CREATE TABLE owners (
	id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	email           TEXT NOT NULL UNIQUE,       -- lower-cased
	name            TEXT NOT NULL,
	password_hash   TEXT NOT NULL,              -- argon2id, PHC string format
	created_us      BIGINT NOT NULL,
	verified_us     BIGINT,                    -- NULL until the mailed link is followed
	failed_signins  INTEGER NOT NULL DEFAULT 0, -- consecutive wrong passwords
	locked_until_us BIGINT NOT NULL DEFAULT 0  -- sign-in refused before this
);

-- One-time tokens mailed to an owner, stored as their SHA-256.
CREATE TABLE owner_tokens (
	hash       TEXT PRIMARY KEY,
	owner_id   BIGINT NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
	purpose    TEXT NOT NULL CHECK (purpose IN ('verify', 'reset')),
	created_us BIGINT NOT NULL,
	expires_us BIGINT NOT NULL,
	used_us    BIGINT
);
CREATE INDEX owner_tokens_owner ON owner_tokens (owner_id);
CREATE INDEX owner_tokens_expires ON owner_tokens (expires_us);

-- Owners' portal sessions; the cookie holds the ID, the table its SHA-256.
CREATE TABLE portal_sessions (
	id_hash      TEXT PRIMARY KEY,
	owner_id     BIGINT NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
	created_us   BIGINT NOT NULL,
	last_used_us BIGINT NOT NULL,
	expires_us   BIGINT NOT NULL
);
CREATE INDEX portal_sessions_owner ON portal_sessions (owner_id);
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_us);

-- Support-view sessions of the tenant's staff. The moat token the session was opened with
-- is kept sealed (AES-GCM under the cloud's session key) so every request re-checks it
-- with the security service: a revoked token ends the session.
CREATE TABLE support_sessions (
	id_hash      TEXT PRIMARY KEY,
	user_id      TEXT NOT NULL,
	user_name    TEXT NOT NULL,
	role         TEXT NOT NULL,
	token_sealed TEXT NOT NULL,
	created_us   BIGINT NOT NULL,
	last_used_us BIGINT NOT NULL,
	expires_us   BIGINT NOT NULL
);
CREATE INDEX support_sessions_expires ON support_sessions (expires_us);

-- A device's current claim code, as its SHA-256 (claimcode.Hash). Made at manufacture, or
-- by an owner handing the appliance over; single use (claimed_us).
CREATE TABLE claim_codes (
	device     TEXT PRIMARY KEY,
	product    TEXT NOT NULL,
	code_hash  TEXT NOT NULL UNIQUE,
	created_us BIGINT NOT NULL,
	issued_by  BIGINT REFERENCES owners (id) ON DELETE SET NULL, -- NULL: manufacture
	claimed_us BIGINT,
	claimed_by BIGINT REFERENCES owners (id) ON DELETE SET NULL
);

-- Who owns an appliance now. since_us is when they claimed it: an owner sees the
-- appliance's data from then on, never a previous owner's.
CREATE TABLE appliances (
	device   TEXT PRIMARY KEY,
	owner_id BIGINT NOT NULL REFERENCES owners (id) ON DELETE CASCADE,
	product  TEXT NOT NULL,
	nickname TEXT NOT NULL,
	since_us BIGINT NOT NULL,
	shop     TEXT NOT NULL -- the owner's repair shop (an ID of the shops file); '' none
);
CREATE INDEX appliances_owner ON appliances (owner_id, device);

-- The sale of an appliance: the purchase date starts its warranty (the product's warranty
-- period, from its product file), and the selling shop is its first repair shop.
CREATE TABLE sales (
	device      TEXT PRIMARY KEY,
	product     TEXT NOT NULL,
	sold_us     BIGINT NOT NULL,
	shop        TEXT NOT NULL,
	recorded_us BIGINT NOT NULL
);

CREATE TABLE service_requests (
	id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device       TEXT NOT NULL,
	owner_id     BIGINT REFERENCES owners (id) ON DELETE SET NULL,
	alert_id     BIGINT UNIQUE REFERENCES alerts (id), -- one per alert
	source       TEXT NOT NULL CHECK (source IN ('owner', 'rule', 'support')),
	description  TEXT NOT NULL,
	preferred_us BIGINT,
	state        TEXT NOT NULL CHECK (state IN ('open', 'scheduled', 'done', 'cancelled')),
	note         TEXT NOT NULL DEFAULT '',
	created_us   BIGINT NOT NULL,
	updated_us   BIGINT NOT NULL
);
CREATE INDEX service_requests_device ON service_requests (device, id);
CREATE INDEX service_requests_state ON service_requests (state, id);

-- What a warranty part reservation came to: reserved at the shop (reference is the
-- shop's ID for it), or why not.
CREATE TABLE part_reservations (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device     TEXT NOT NULL,
	alert_id   BIGINT REFERENCES alerts (id),
	part       TEXT NOT NULL,
	shop       TEXT NOT NULL,
	state      TEXT NOT NULL CHECK (state IN ('reserved', 'out_of_stock', 'out_of_warranty', 'no_shop', 'failed')),
	reference  TEXT NOT NULL,
	reason     TEXT NOT NULL,
	created_us BIGINT NOT NULL,
	UNIQUE (alert_id, part)
);
CREATE INDEX part_reservations_device ON part_reservations (device, id);

-- Prompts to buy a consumable; one per alert episode (UNIQUE alert_id, consumable), and an
-- episode of a threshold rule with hysteresis ends only with a refill: at most once per
-- refill.
CREATE TABLE purchase_prompts (
	id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	device       TEXT NOT NULL,
	alert_id     BIGINT REFERENCES alerts (id),
	consumable   TEXT NOT NULL,
	buy_url      TEXT NOT NULL,
	created_us   BIGINT NOT NULL,
	dismissed_us BIGINT,
	UNIQUE (alert_id, consumable)
);
CREATE INDEX purchase_prompts_device ON purchase_prompts (device, id);

-- The transactional outbox: a row is written in the same transaction as the change that
-- causes it (an alert, a sign-up), and a worker performs it, at least once, until it is
-- done or dead. key is the idempotency key the effect carries (mail Message-ID, webhook-id,
-- Idempotency-Key), so a retry after a crash is recognisable downstream.
CREATE TABLE outbox (
	id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind           TEXT NOT NULL,
	key            TEXT NOT NULL UNIQUE,
	device         TEXT NOT NULL, -- '' when none
	alert_id       BIGINT REFERENCES alerts (id),
	payload        TEXT NOT NULL,
	state          TEXT NOT NULL CHECK (state IN ('pending', 'done', 'dead')),
	attempts       INTEGER NOT NULL DEFAULT 0,
	next_us        BIGINT NOT NULL, -- not tried before this
	lease_until_us BIGINT NOT NULL DEFAULT 0,
	last_error     TEXT NOT NULL DEFAULT '',
	result         TEXT NOT NULL DEFAULT '',
	created_us     BIGINT NOT NULL,
	done_us        BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_us);
CREATE INDEX outbox_alert ON outbox (alert_id);
CREATE INDEX outbox_device ON outbox (device, id);
CREATE INDEX outbox_done ON outbox (done_us);
