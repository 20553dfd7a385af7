-- API keys, project quotas and the audit log (see the Postgres migration of
-- the same name).
ALTER TABLE projects ADD COLUMN max_concurrent_runs INTEGER;
ALTER TABLE projects ADD COLUMN max_tasks_per_run INTEGER;
ALTER TABLE projects ADD COLUMN max_tasks_per_day INTEGER;
ALTER TABLE projects ADD COLUMN monthly_budget_usd REAL;
ALTER TABLE projects ADD COLUMN weight INTEGER NOT NULL DEFAULT 1;

CREATE TABLE api_keys (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL REFERENCES projects (id),
    role             TEXT NOT NULL,
    name             TEXT NOT NULL DEFAULT '',
    secret_sha256    BLOB NOT NULL,
    rate_per_minute  INTEGER,
    created_at       TEXT NOT NULL,
    expires_at       TEXT,
    revoked_at       TEXT
) STRICT;
CREATE INDEX api_keys_project ON api_keys (project_id, created_at DESC);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    method      TEXT NOT NULL,
    target      TEXT NOT NULL DEFAULT '',
    outcome     TEXT NOT NULL,
    peer        TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX audit_events_project ON audit_events (project_id, id DESC);

CREATE INDEX runs_active ON runs (project_id) WHERE status IN ('queued', 'running');
