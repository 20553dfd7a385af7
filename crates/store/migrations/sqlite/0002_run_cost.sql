-- The SQLite twin of migrations/postgres/0002_run_cost.sql: what a run's
-- stored results cost so far, bumped with the other counters.
ALTER TABLE runs ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
