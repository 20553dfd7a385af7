-- The monitor's alerts (see the Postgres migration of the same name).
CREATE TABLE alerts (
    id          TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    severity    TEXT NOT NULL,
    state       TEXT NOT NULL,
    labels      TEXT NOT NULL DEFAULT '{}',
    value       REAL NOT NULL,
    threshold   REAL NOT NULL,
    summary     TEXT NOT NULL DEFAULT '',
    started_at  TEXT NOT NULL,
    fired_at    TEXT,
    resolved_at TEXT,
    updated_at  TEXT NOT NULL
);
CREATE INDEX alerts_started ON alerts (started_at DESC, id DESC);
