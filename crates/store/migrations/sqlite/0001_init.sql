-- The SQLite twin of migrations/postgres/0001_init.sql, for embedded mode.
-- UUIDs are hyphenated lowercase TEXT and timestamps fixed-width RFC 3339 TEXT
-- in UTC with microseconds (`2024-01-02T03:04:05.123456Z`), both written by
-- the store, so that text order is time and key order as in Postgres and
-- keyset pagination compares the same way. JSON is TEXT. STRICT makes a
-- wrongly typed bind an error instead of a silently different value.
CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
INSERT INTO projects (id, name) VALUES ('default', 'Default project');

CREATE TABLE suites (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects (id),
    description  TEXT,
    source       TEXT NOT NULL,
    compiled     TEXT NOT NULL,
    created_at   TEXT NOT NULL
) STRICT;

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL REFERENCES projects (id),
    suite_id         TEXT NOT NULL REFERENCES suites (id),
    description      TEXT NOT NULL DEFAULT '',
    label            TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    options          TEXT NOT NULL,
    total_tasks      INTEGER NOT NULL,
    completed_tasks  INTEGER NOT NULL DEFAULT 0,
    passed           INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0,
    errors           INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
) STRICT;
CREATE INDEX runs_project_created ON runs (project_id, created_at DESC, id DESC);

-- The source of truth. (run_id, task_index) makes a redelivered batch a no-op.
CREATE TABLE results (
    run_id           TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_index       INTEGER NOT NULL,
    project_id       TEXT NOT NULL,
    test_index       INTEGER NOT NULL,
    prompt_index     INTEGER NOT NULL,
    provider_index   INTEGER NOT NULL,
    repeat_index     INTEGER NOT NULL,
    provider_id      TEXT NOT NULL,
    status           INTEGER NOT NULL, -- 1 pass, 2 fail, 3 error (gauntlet.v1.ResultStatus)
    score            REAL NOT NULL,
    reason           TEXT NOT NULL,
    rendered_prompt  TEXT NOT NULL,
    output           TEXT NOT NULL,
    assertions       TEXT NOT NULL,
    latency_ms       INTEGER NOT NULL,
    tokens_in        INTEGER NOT NULL,
    tokens_out       INTEGER NOT NULL,
    cost_usd         REAL NOT NULL,
    cached           INTEGER NOT NULL,
    error            TEXT NOT NULL DEFAULT '',
    created_at       TEXT NOT NULL,
    PRIMARY KEY (run_id, task_index)
) STRICT;
CREATE INDEX results_run_status ON results (run_id, status, task_index);

CREATE TABLE reports (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects (id),
    run_id       TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    format       TEXT NOT NULL,
    status       TEXT NOT NULL,
    content      TEXT NOT NULL DEFAULT '',
    error        TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    finished_at  TEXT
) STRICT;
