-- 006: which process owns a job. Every engine registers a run with a lease it renews while it lives;
-- a job belongs to its owner (its creator until someone takes it over) and is shown and delivered by
-- that process only. A job whose owner's lease has lapsed (or whose owner ended) is taken over.
BEGIN IMMEDIATE;

CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,   -- "host:pid:random", as jobs.created_by
    kind        TEXT NOT NULL,      -- "discord" | "terminal": which jobs it can show
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    lease_until REAL NOT NULL,      -- alive while in the future; 0 once the run ended
    deliver_to  TEXT                -- the terminal's --out
);

ALTER TABLE jobs ADD COLUMN owner TEXT;       -- NULL: still its creator's (created_by)
ALTER TABLE jobs ADD COLUMN deliver_to TEXT;  -- where a terminal job's videos go (its run's --out)

PRAGMA user_version = 6;
COMMIT;
