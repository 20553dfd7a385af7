-- A rolled-up run's outcomes, what CompareRuns, DetectRegressions and
-- GetInsights read (`Store::for_each_outcome`), packed when it is rolled
-- up: one row per 50,000 results in task order, each column packed as
-- its values' binary send forms end to end (`int4send`, `float8send`…:
-- big-endian, fixed width), which a reader takes apart without a
-- per-element decode.
-- Reading them touches none of the results' wide rows (rendered prompts,
-- outputs, assertions): at 1,000,000 results a comparison read
-- 2 × 1,000,000 heap rows, 1.9 s of its 2.4. Runs rolled up before this
-- migration have no rows here and are read from their results as before.
CREATE TABLE run_outcomes (
    run_id      UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    first_task  BIGINT NOT NULL,
    last_task   BIGINT NOT NULL,
    n           INTEGER NOT NULL,
    tests       BYTEA NOT NULL,
    prompts     BYTEA NOT NULL,
    providers   BYTEA NOT NULL,
    repeats     BYTEA NOT NULL,
    statuses    BYTEA NOT NULL,
    scores      BYTEA NOT NULL,
    latencies   BYTEA NOT NULL,
    costs       BYTEA NOT NULL,
    PRIMARY KEY (run_id, first_task)
);

-- Out of line and uncompressed: numbers barely compress, and
-- decompressing would cost every read.
ALTER TABLE run_outcomes
    ALTER COLUMN tests SET STORAGE EXTERNAL,
    ALTER COLUMN prompts SET STORAGE EXTERNAL,
    ALTER COLUMN providers SET STORAGE EXTERNAL,
    ALTER COLUMN repeats SET STORAGE EXTERNAL,
    ALTER COLUMN statuses SET STORAGE EXTERNAL,
    ALTER COLUMN scores SET STORAGE EXTERNAL,
    ALTER COLUMN latencies SET STORAGE EXTERNAL,
    ALTER COLUMN costs SET STORAGE EXTERNAL;

-- A rolled-up run's answered latencies per provider × prompt, packed the
-- same way (latencies as `int4send`, their counts as `int8send`, in
-- latency order): a summary of 1,000,000 results spent 5.7 ms grouping
-- 7,200 `run_latencies` rows into arrays, its largest read. Runs rolled
-- up before this migration read `run_latencies` as before.
CREATE TABLE run_latency_packs (
    run_id          UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    provider_index  INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    latencies       BYTEA NOT NULL,
    counts          BYTEA NOT NULL,
    PRIMARY KEY (run_id, provider_index, prompt_index)
);
