-- moat schema 6 (SQLite): attestation nonces, each for one device and usable once.
CREATE TABLE attestation_nonces (
	nonce      TEXT PRIMARY KEY,
	device_id  TEXT NOT NULL,
	expires_at TIMESTAMP NOT NULL,
	used_at    TIMESTAMP
);
CREATE INDEX attestation_nonces_expiry ON attestation_nonces (expires_at);
