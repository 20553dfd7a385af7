-- A report's document in parts, written while it renders and read back one
-- part at a time, so neither the reports service nor the gateway ever holds
-- a whole document (a 1,000,000-result HTML report is hundreds of MB).
-- `content` stays for documents stored whole before this migration.
ALTER TABLE reports ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;
-- What the report is of besides its run: `run`, or a comparison's key
-- (`compare b=<run|-> by=<…> alpha=<…>`), so CreateReport can answer the
-- same report again for the same request.
ALTER TABLE reports ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';

CREATE TABLE report_parts (
    report_id UUID NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    part      INTEGER NOT NULL,
    data      BYTEA NOT NULL,
    PRIMARY KEY (report_id, part)
);
