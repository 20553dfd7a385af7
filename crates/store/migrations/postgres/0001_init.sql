-- Every table holding user data carries project_id, so keys and tenants can
-- arrive without a data migration.
CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO projects (id, name) VALUES ('default', 'Default project');

CREATE TABLE suites (
    id           UUID PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects (id),
    description  TEXT,
    source       TEXT NOT NULL,
    compiled     JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id               UUID PRIMARY KEY,
    project_id       TEXT NOT NULL REFERENCES projects (id),
    suite_id         UUID NOT NULL REFERENCES suites (id),
    description      TEXT NOT NULL DEFAULT '',
    label            TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    options          JSONB NOT NULL,
    total_tasks      BIGINT NOT NULL,
    completed_tasks  BIGINT NOT NULL DEFAULT 0,
    passed           BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    errors           BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX runs_project_created ON runs (project_id, created_at DESC, id DESC);

-- The source of truth. (run_id, task_index) makes a redelivered batch a no-op.
CREATE TABLE results (
    run_id           UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_index       BIGINT NOT NULL,
    project_id       TEXT NOT NULL,
    test_index       INTEGER NOT NULL,
    prompt_index     INTEGER NOT NULL,
    provider_index   INTEGER NOT NULL,
    repeat_index     INTEGER NOT NULL,
    provider_id      TEXT NOT NULL,
    status           SMALLINT NOT NULL, -- 1 pass, 2 fail, 3 error (gauntlet.v1.ResultStatus)
    score            DOUBLE PRECISION NOT NULL,
    reason           TEXT NOT NULL,
    rendered_prompt  TEXT NOT NULL,
    output           TEXT NOT NULL,
    assertions       JSONB NOT NULL,
    latency_ms       INTEGER NOT NULL,
    tokens_in        INTEGER NOT NULL,
    tokens_out       INTEGER NOT NULL,
    cost_usd         DOUBLE PRECISION NOT NULL,
    cached           BOOLEAN NOT NULL,
    error            TEXT NOT NULL DEFAULT '',
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, task_index)
);
CREATE INDEX results_run_status ON results (run_id, status, task_index);

CREATE TABLE reports (
    id           UUID PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects (id),
    run_id       UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    format       TEXT NOT NULL,
    status       TEXT NOT NULL,
    content      TEXT NOT NULL DEFAULT '',
    error        TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ
);
