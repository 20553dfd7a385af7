-- Counts of result writes not yet added to their run's counters. A write
-- adds its row here and folds every waiting row into `runs` only if no
-- other write of the run is folding (a transaction-level advisory lock,
-- tried, never waited on); the writer holding the lock checks again after
-- its commit. So writes of one run never wait on each other, and the
-- counters lag at most one fold behind the stored results.
CREATE TABLE run_tallies (
    run_id    UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    completed BIGINT NOT NULL,
    passed    BIGINT NOT NULL,
    failed    BIGINT NOT NULL,
    errors    BIGINT NOT NULL,
    cost_usd  DOUBLE PRECISION NOT NULL
);
CREATE INDEX run_tallies_run ON run_tallies (run_id);
