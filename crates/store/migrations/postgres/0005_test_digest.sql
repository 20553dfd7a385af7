-- A digest of each stored test's body (`gauntlet_store::test_digest`), so a
-- comparison of two runs matches their test cases by content, not by
-- position, without reading the bodies. Rows stored before it have none;
-- their digest is computed from the body when asked for.
ALTER TABLE suite_tests ADD COLUMN digest BIGINT;
