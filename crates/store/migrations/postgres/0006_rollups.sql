-- Incremental rollups (`gauntlet_store::rollup`): every result write adds
-- its rows to these in the same transaction, so a run's summary reads a
-- few hundred rollup rows instead of all its results. Rows stored before
-- this migration are rolled up here.

-- Per provider × prompt × status: counts and sums.
CREATE TABLE run_metrics (
    run_id          UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    provider_index  INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    status          SMALLINT NOT NULL,
    n               BIGINT NOT NULL,
    tokens_in       BIGINT NOT NULL,
    tokens_out      BIGINT NOT NULL,
    cost_usd        DOUBLE PRECISION NOT NULL,
    score_sum       DOUBLE PRECISION NOT NULL,
    score_sq_sum    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, provider_index, prompt_index, status)
);
INSERT INTO run_metrics
SELECT run_id, provider_index, prompt_index, status, COUNT(*), SUM(tokens_in), SUM(tokens_out),
       SUM(cost_usd), SUM(score), SUM(score * score)
FROM results GROUP BY run_id, provider_index, prompt_index, status;

-- Per provider × prompt × exact latency, the answered (not errored)
-- results: percentiles stay exact, in rows that grow with the distinct
-- latencies, not with the results.
CREATE TABLE run_latencies (
    run_id          UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    provider_index  INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    latency_ms      INTEGER NOT NULL,
    n               BIGINT NOT NULL,
    PRIMARY KEY (run_id, provider_index, prompt_index, latency_ms)
);
INSERT INTO run_latencies
SELECT run_id, provider_index, prompt_index, latency_ms, COUNT(*)
FROM results WHERE status <> 3 GROUP BY run_id, provider_index, prompt_index, latency_ms;

-- Per provider × prompt × assertion type × metric × verdict: how many.
CREATE TABLE run_assertions (
    run_id          UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    provider_index  INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    metric          TEXT NOT NULL,
    passed          BOOLEAN NOT NULL,
    n               BIGINT NOT NULL,
    PRIMARY KEY (run_id, provider_index, prompt_index, kind, metric, passed)
);
INSERT INTO run_assertions
SELECT r.run_id, r.provider_index, r.prompt_index, COALESCE(a->>'type', ''),
       COALESCE(a->>'metric', ''),
       COALESCE(CASE WHEN jsonb_typeof(a->'pass') = 'boolean' THEN (a->>'pass')::boolean END, false),
       COUNT(*)
FROM results r, jsonb_array_elements(CASE WHEN jsonb_typeof(r.assertions) = 'array'
                                          THEN r.assertions ELSE '[]' END) a
GROUP BY 1, 2, 3, 4, 5, 6;

-- Per test case: its results, and those that did not pass; the index
-- answers "the most-failed tests" without a scan.
CREATE TABLE run_test_tallies (
    run_id      UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    test_index  INTEGER NOT NULL,
    unpassed    BIGINT NOT NULL,
    total       BIGINT NOT NULL,
    PRIMARY KEY (run_id, test_index)
);
CREATE INDEX run_test_tallies_unpassed ON run_test_tallies (run_id, unpassed DESC, test_index)
    WHERE unpassed > 0;
INSERT INTO run_test_tallies
SELECT run_id, test_index, COUNT(*) FILTER (WHERE status <> 1), COUNT(*)
FROM results GROUP BY run_id, test_index;

-- The slowest answered results of a run, without a scan.
CREATE INDEX results_run_latency ON results (run_id, latency_ms DESC, task_index) WHERE status <> 3;
