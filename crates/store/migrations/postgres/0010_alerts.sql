-- The monitor's alerts: one row per episode, from pending to resolved.
CREATE TABLE alerts (
    id          UUID PRIMARY KEY,
    rule        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    severity    TEXT NOT NULL,
    state       TEXT NOT NULL,
    labels      JSONB NOT NULL DEFAULT '{}',
    value       DOUBLE PRECISION NOT NULL,
    threshold   DOUBLE PRECISION NOT NULL,
    summary     TEXT NOT NULL DEFAULT '',
    started_at  TIMESTAMPTZ NOT NULL,
    fired_at    TIMESTAMPTZ,
    resolved_at TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX alerts_started ON alerts (started_at DESC, id DESC);
CREATE INDEX alerts_active ON alerts (fingerprint) WHERE state <> 'resolved';
