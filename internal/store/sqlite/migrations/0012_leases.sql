-- moat schema 12 (SQLite): leases that hand each period of a background job to one server.
CREATE TABLE leases (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_at TIMESTAMP NOT NULL
);
