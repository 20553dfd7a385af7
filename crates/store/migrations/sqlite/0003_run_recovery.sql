-- The SQLite twin of migrations/postgres/0003_run_recovery.sql: why a run
-- failed, its last sign of life, and how many times (and when last) its
-- missing work was re-driven.
ALTER TABLE runs ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN redrives INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN redriven_at TEXT;
ALTER TABLE runs ADD COLUMN active_at TEXT NOT NULL DEFAULT '';
UPDATE runs SET active_at = COALESCE(finished_at, created_at);
UPDATE runs SET active_at = max(
    created_at,
    COALESCE((SELECT max(r.created_at) FROM results r WHERE r.run_id = runs.id), created_at))
WHERE status IN ('queued', 'running');
CREATE INDEX runs_unfinished_active ON runs (active_at) WHERE status IN ('queued', 'running');
