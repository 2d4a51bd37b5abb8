-- moat schema 15 (SQLite): web console sessions and one-time sign-in links (issue 11).
--
-- console_sessions: one row per signed-in browser. The cookie holds a random 256-bit
-- session ID; only its SHA-256 (hex) is stored, so a stolen database does not yield usable
-- cookies. token_id is the API token the session was made from: revoking it ends the
-- session. expires_at is the absolute end; last_used_at drives the idle timeout.
--
-- console_sign_in_links: one-time codes (moat console link, moat demo), stored only as their
-- SHA-256, consumed once by deleting the row.
CREATE TABLE console_sessions (
	id_hash      TEXT PRIMARY KEY,
	user_id      TEXT NOT NULL REFERENCES users (id),
	token_id     TEXT NOT NULL REFERENCES tokens (id),
	csrf_secret  TEXT NOT NULL,
	created_at   TIMESTAMP NOT NULL,
	last_used_at TIMESTAMP NOT NULL,
	expires_at   TIMESTAMP NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions (user_id, created_at);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX console_sessions_last_used ON console_sessions (last_used_at);

CREATE TABLE console_sign_in_links (
	code_hash  TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL REFERENCES users (id),
	token_id   TEXT NOT NULL REFERENCES tokens (id),
	created_at TIMESTAMP NOT NULL,
	expires_at TIMESTAMP NOT NULL
);
CREATE INDEX console_sign_in_links_expires ON console_sign_in_links (expires_at);
CREATE INDEX console_sign_in_links_user ON console_sign_in_links (user_id, created_at);
