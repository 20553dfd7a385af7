-- API keys, project quotas and the audit log (issue 14).

-- A project's limits; NULL is "no limit". `weight` is its share of the
-- dispatch window against other projects with work queued.
ALTER TABLE projects ADD COLUMN max_concurrent_runs BIGINT;
ALTER TABLE projects ADD COLUMN max_tasks_per_run BIGINT;
ALTER TABLE projects ADD COLUMN max_tasks_per_day BIGINT;
ALTER TABLE projects ADD COLUMN monthly_budget_usd DOUBLE PRECISION;
ALTER TABLE projects ADD COLUMN weight INTEGER NOT NULL DEFAULT 1;

-- A key is `gk_live_<id>_<secret>`: the id is the row's key, the secret is
-- kept only as its SHA-256.
CREATE TABLE api_keys (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL REFERENCES projects (id),
    role             TEXT NOT NULL,
    name             TEXT NOT NULL DEFAULT '',
    secret_sha256    BYTEA NOT NULL,
    rate_per_minute  BIGINT,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ,
    revoked_at       TIMESTAMPTZ
);
CREATE INDEX api_keys_project ON api_keys (project_id, created_at DESC);

-- Every mutating and every denied call.
CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    project_id  TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    method      TEXT NOT NULL,
    target      TEXT NOT NULL DEFAULT '',
    outcome     TEXT NOT NULL,
    peer        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_project ON audit_events (project_id, id DESC);

-- The concurrent-runs quota counts these on every submission.
CREATE INDEX runs_active ON runs (project_id) WHERE status IN ('queued', 'running');
