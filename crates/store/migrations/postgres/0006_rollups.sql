-- Rollups (`Store::roll_up`): when a run has completed, what its summary
-- and trends read is rolled up from its results once, in one transaction
-- that also sets `runs.rolled_up`; until then those reads group the
-- results themselves. Rolling up at every write was tried first and cost
-- the result writes 10-30 % of their throughput (hot rollup rows under the
-- run's lock). Completed runs stored before this migration are rolled up
-- here.

ALTER TABLE runs ADD COLUMN rolled_up BOOLEAN NOT NULL DEFAULT FALSE;

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

-- The tests that did not always pass: results and unpassed results; the
-- index answers "the most-failed tests" without a sort.
CREATE TABLE run_test_tallies (
    run_id      UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    test_index  INTEGER NOT NULL,
    unpassed    BIGINT NOT NULL,
    total       BIGINT NOT NULL,
    PRIMARY KEY (run_id, test_index)
);
CREATE INDEX run_test_tallies_unpassed ON run_test_tallies (run_id, unpassed DESC, test_index);

-- The run's 100 slowest answered results.
CREATE TABLE run_slowest (
    run_id      UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_index  BIGINT NOT NULL,
    PRIMARY KEY (run_id, task_index)
);

INSERT INTO run_metrics
SELECT r.run_id, r.provider_index, r.prompt_index, r.status, COUNT(*), SUM(r.tokens_in),
       SUM(r.tokens_out), SUM(r.cost_usd), SUM(r.score), SUM(r.score * r.score)
FROM runs x JOIN results r ON r.run_id = x.id WHERE x.status = 'completed'
GROUP BY r.run_id, r.provider_index, r.prompt_index, r.status;
INSERT INTO run_latencies
SELECT r.run_id, r.provider_index, r.prompt_index, r.latency_ms, COUNT(*)
FROM runs x JOIN results r ON r.run_id = x.id WHERE x.status = 'completed' AND r.status <> 3
GROUP BY r.run_id, r.provider_index, r.prompt_index, r.latency_ms;
INSERT INTO run_assertions
SELECT r.run_id, r.provider_index, r.prompt_index, COALESCE(a->>'type', ''),
       COALESCE(a->>'metric', ''),
       COALESCE(CASE WHEN jsonb_typeof(a->'pass') = 'boolean' THEN (a->>'pass')::boolean END, false),
       COUNT(*)
FROM runs x JOIN results r ON r.run_id = x.id,
     jsonb_array_elements(CASE WHEN jsonb_typeof(r.assertions) = 'array'
                               THEN r.assertions ELSE '[]' END) a
WHERE x.status = 'completed'
GROUP BY 1, 2, 3, 4, 5, 6;
INSERT INTO run_test_tallies
SELECT r.run_id, r.test_index, SUM(CASE WHEN r.status <> 1 THEN 1 ELSE 0 END), COUNT(*)
FROM runs x JOIN results r ON r.run_id = x.id WHERE x.status = 'completed'
GROUP BY r.run_id, r.test_index HAVING SUM(CASE WHEN r.status <> 1 THEN 1 ELSE 0 END) > 0;
INSERT INTO run_slowest
SELECT run_id, task_index FROM (
    SELECT r.run_id, r.task_index,
           ROW_NUMBER() OVER (PARTITION BY r.run_id ORDER BY r.latency_ms DESC, r.task_index) AS k
    FROM runs x JOIN results r ON r.run_id = x.id WHERE x.status = 'completed' AND r.status <> 3
) ranked WHERE k <= 100;
UPDATE runs SET rolled_up = TRUE WHERE status = 'completed';
