-- 001: the whole first schema. The transaction lives in the script because Python's executescript
-- commits before it runs; IMMEDIATE makes a second process starting at the same moment wait here
-- instead of interleaving with this one.
BEGIN IMMEDIATE;

CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,  -- the job id members see; never reused
    guild_id            INTEGER NOT NULL,                   -- 0 = the terminal
    channel_id          INTEGER NOT NULL DEFAULT 0,
    user_id             INTEGER NOT NULL,
    model_key           TEXT    NOT NULL,
    params              TEXT    NOT NULL DEFAULT '{}',      -- JSON of the validated request
    task_uuid           TEXT    NOT NULL UNIQUE,            -- chosen at creation, reused on every retry
    image_uuids         TEXT    NOT NULL DEFAULT '{}',      -- JSON {"first": uuid, "last": uuid}
    duration_s          INTEGER NOT NULL CHECK (duration_s > 0),
    variations          INTEGER NOT NULL CHECK (variations > 0),
    estimate_micro      INTEGER NOT NULL CHECK (estimate_micro >= 0),
    state               TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN
                            ('queued', 'submitted', 'processing',
                             'succeeded', 'failed', 'timed_out', 'cancelled')),
    error               TEXT,
    failed_variations   INTEGER NOT NULL DEFAULT 0,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,         -- cancelled at Runware: poll quietly, never deliver
    cancelled_by        TEXT,
    created_at          REAL    NOT NULL,
    day                 TEXT    NOT NULL,                   -- quota buckets, in progress.timezone
    month               TEXT    NOT NULL,
    claimed_by          TEXT,                               -- run id of the process submitting it
    claimed_at          REAL,                               -- also "last submission" for the fair queue
    submitted_at        REAL,
    finished_at         REAL,
    notified_at         REAL,
    next_poll_at        REAL,
    last_polled_at      REAL,
    progress_message_id INTEGER,
    result_message_id   INTEGER,
    upload_limit        INTEGER,                            -- bytes, from the interaction
    parent_job_id       INTEGER REFERENCES jobs(id)
);
CREATE INDEX jobs_poll        ON jobs (state, next_poll_at);
CREATE INDEX jobs_member_day  ON jobs (guild_id, user_id, day);
CREATE INDEX jobs_member_state ON jobs (guild_id, user_id, state);
CREATE INDEX jobs_member_claim ON jobs (guild_id, user_id, claimed_at);
CREATE INDEX jobs_month       ON jobs (guild_id, month);
CREATE INDEX jobs_unnotified  ON jobs (notified_at, state);
CREATE INDEX jobs_model_time  ON jobs (model_key, duration_s, state, finished_at);

CREATE TABLE results (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       INTEGER NOT NULL REFERENCES jobs(id),
    video_uuid   TEXT    NOT NULL UNIQUE,                   -- getResponse repeats items: de-duplicated here
    video_url    TEXT,
    seed         INTEGER,
    cost_micro   INTEGER,
    nsfw         INTEGER NOT NULL DEFAULT 0,
    created_at   REAL    NOT NULL,
    delivered_at REAL,
    local_path   TEXT
);
CREATE INDEX results_job ON results (job_id, delivered_at);

-- Money. Append-only; balances are sums over it, never stored. A job's rows count in the job's
-- creation day/month; a credit in the month it was given.
--   amount_micro: what the row is about (the estimate reserved, the cost settled, the estimate
--                 released, the cost refunded, the credit given; only credits may be negative)
--   effect_micro: what the row changes in the spend counted against limits: reserve +estimate,
--                 settle cost - estimate, release -estimate, refund -cost, credit 0. Spend is then a
--                 plain SUM over an index (no join), and the triggers below keep it honest.
CREATE TABLE ledger (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           REAL    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('reserve', 'settle', 'release', 'credit', 'refund')),
    guild_id     INTEGER NOT NULL,
    user_id      INTEGER NOT NULL,
    job_id       INTEGER REFERENCES jobs(id),
    amount_micro INTEGER NOT NULL,
    effect_micro INTEGER NOT NULL,
    day          TEXT    NOT NULL,
    month        TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    reason       TEXT,
    CHECK (kind = 'credit' OR (job_id IS NOT NULL AND amount_micro >= 0)),
    CHECK (kind <> 'credit' OR job_id IS NULL),
    CHECK (CASE kind WHEN 'reserve' THEN effect_micro = amount_micro
                     WHEN 'release' THEN effect_micro = -amount_micro
                     WHEN 'refund'  THEN effect_micro = -amount_micro
                     WHEN 'credit'  THEN effect_micro = 0
                     ELSE 1 END)
);
-- Exactly once, enforced by the database: one reserve, one settle-or-release, one refund per job.
CREATE UNIQUE INDEX ledger_one_reserve ON ledger (job_id) WHERE kind = 'reserve';
CREATE UNIQUE INDEX ledger_one_final   ON ledger (job_id) WHERE kind IN ('settle', 'release');
CREATE UNIQUE INDEX ledger_one_refund  ON ledger (job_id) WHERE kind = 'refund';
CREATE INDEX ledger_job    ON ledger (job_id, kind, amount_micro);
CREATE INDEX ledger_member ON ledger (guild_id, user_id, month, kind, amount_micro, effect_micro);
CREATE INDEX ledger_guild  ON ledger (guild_id, month, effect_micro);
CREATE INDEX ledger_day    ON ledger (day, kind, effect_micro);

-- A settle or release undoes exactly the job's reserve; a refund gives back exactly the settled cost.
CREATE TRIGGER ledger_final_offsets_reserve BEFORE INSERT ON ledger
WHEN NEW.kind IN ('settle', 'release')
    AND (SELECT amount_micro FROM ledger WHERE job_id = NEW.job_id AND kind = 'reserve') IS NOT
        (CASE NEW.kind WHEN 'settle' THEN NEW.amount_micro - NEW.effect_micro ELSE NEW.amount_micro END)
BEGIN SELECT RAISE(ABORT, 'a settle or release must offset the job''s reserve'); END;
CREATE TRIGGER ledger_refund_matches_settle BEFORE INSERT ON ledger
WHEN NEW.kind = 'refund'
    AND (SELECT amount_micro FROM ledger WHERE job_id = NEW.job_id AND kind = 'settle') IS NOT NEW.amount_micro
BEGIN SELECT RAISE(ABORT, 'a refund must return the job''s settled cost'); END;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;

-- Limit overrides. NULL column = no override; -1 = unlimited.
CREATE TABLE member_limits (
    guild_id       INTEGER NOT NULL,
    user_id        INTEGER NOT NULL,
    daily_videos   INTEGER CHECK (daily_videos >= -1),
    monthly_micro  INTEGER CHECK (monthly_micro >= -1),
    max_concurrent INTEGER CHECK (max_concurrent >= -1),
    PRIMARY KEY (guild_id, user_id)
);
CREATE TABLE role_limits (
    guild_id       INTEGER NOT NULL,
    role_id        INTEGER NOT NULL,
    daily_videos   INTEGER CHECK (daily_videos >= -1),
    monthly_micro  INTEGER CHECK (monthly_micro >= -1),
    max_concurrent INTEGER CHECK (max_concurrent >= -1),
    PRIMARY KEY (guild_id, role_id)
);

CREATE TABLE guild_settings (
    guild_id             INTEGER PRIMARY KEY,
    monthly_budget_micro INTEGER CHECK (monthly_budget_micro >= -1),  -- NULL = config default, -1 unlimited
    paused               INTEGER NOT NULL DEFAULT 0,
    pause_reason         TEXT,
    mod_role_id          INTEGER,
    log_channel_id       INTEGER,
    safety_mode          TEXT CHECK (safety_mode IN ('none', 'fast', 'full')),
    budget_warned_month  TEXT,
    budget_warned_level  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE gen_channels (
    guild_id   INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
);

CREATE TABLE blocklist (
    guild_id INTEGER NOT NULL,
    term     TEXT    NOT NULL COLLATE NOCASE,
    PRIMARY KEY (guild_id, term)
);

CREATE TABLE bans (
    guild_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    reason   TEXT,
    actor    TEXT NOT NULL,
    at       REAL NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL    NOT NULL,
    guild_id INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    target   TEXT,
    before   TEXT,
    after    TEXT,
    reason   TEXT
);
CREATE INDEX audit_guild ON audit (guild_id, id);

CREATE TABLE heartbeat (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  REAL    NOT NULL,
    pid INTEGER NOT NULL
);

CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

PRAGMA user_version = 1;
COMMIT;
