-- Counts of result writes not yet added to their run's counters. A write
-- adds its counts (and every waiting row here) to `runs` at once if no
-- other write of the run is doing so (a transaction-level advisory lock,
-- tried); otherwise it leaves its counts here, commits its results, and
-- then, if its row still waits, takes the lock (waiting) and folds. So a
-- write never holds its results uncommitted while another write of the
-- run commits, and each write is counted before it returns.
CREATE TABLE run_tallies (
    id        BIGSERIAL PRIMARY KEY,
    run_id    UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    completed BIGINT NOT NULL,
    passed    BIGINT NOT NULL,
    failed    BIGINT NOT NULL,
    errors    BIGINT NOT NULL,
    cost_usd  DOUBLE PRECISION NOT NULL
);
CREATE INDEX run_tallies_run ON run_tallies (run_id);
