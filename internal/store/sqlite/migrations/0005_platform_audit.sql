-- moat schema 5 (SQLite): the audit log of platform-level changes.
CREATE TABLE platform_audit_events (
	id          TEXT PRIMARY KEY,
	at          TIMESTAMP NOT NULL,
	actor_id    TEXT NOT NULL,
	actor_name  TEXT NOT NULL,
	token_id    TEXT NOT NULL,
	action      TEXT NOT NULL,
	object_type TEXT NOT NULL,
	object_id   TEXT NOT NULL,
	remote_addr TEXT NOT NULL,
	request_id  TEXT NOT NULL,
	detail      TEXT NOT NULL
);
