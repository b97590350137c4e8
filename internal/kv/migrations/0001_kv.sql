-- The records of cove's index, as in badger: ordered byte keys, values, and an expiry for the
-- records that have one (audit records, sessions). Every package keeps its own key prefix.
CREATE TABLE kv (
	key        bytea PRIMARY KEY,
	value      bytea NOT NULL,
	expires_at timestamptz
);
CREATE INDEX kv_expiring ON kv (expires_at) WHERE expires_at IS NOT NULL;

-- Sequences by name (ids of users, projects, members, robots).
CREATE TABLE kv_sequence (
	name  text PRIMARY KEY,
	value bigint NOT NULL
);
