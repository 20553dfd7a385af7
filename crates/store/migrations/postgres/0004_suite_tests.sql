-- A suite's tests, one row each, so a suite of any size is stored as it is
-- uploaded and each worker reads only the tests of its batch. The run's
-- `suites.compiled` keeps the rest of the suite (its `tests` empty). Rows
-- are written before their run exists (an upload is checked as it is
-- read), so there is no foreign key; the run id is a UUIDv7, whose time
-- prefix lets the reconciler sweep the rows of uploads that never became
-- a run.
CREATE TABLE suite_tests (
    run_id     UUID NOT NULL,
    test_index INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (run_id, test_index)
);
