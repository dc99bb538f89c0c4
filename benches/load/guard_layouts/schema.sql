-- Tables for benches/load/guard_layouts.sh: ev and ev_objects as the crate's migrations make
-- them for a new database (keys in the "C" collation), evd and evd_objects as a database
-- created before that has them (keys in the database's collation), mv for merged_rows.sql, sv for seq_rows.sql, pe and
-- pv_objects for pending.sql and pending_seen.sql.
CREATE TABLE ev (
    event_id     TEXT COLLATE "C" PRIMARY KEY,
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 1,
    fence        TEXT NOT NULL,
    lease_until  TIMESTAMPTZ,
    last_error   TEXT,
    first_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ev_failed_idx ON ev (first_seen) WHERE status = 'failed';
CREATE INDEX ev_purge_idx ON ev (updated_at) WHERE status <> 'processing';
CREATE TABLE ev_objects (
    object_id  TEXT COLLATE "C" PRIMARY KEY,
    created    BIGINT,
    event_id   TEXT,
    holder     TEXT,
    lock_until TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
CREATE TABLE mv (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 1,
    fence        TEXT NOT NULL,
    lease_until  TIMESTAMPTZ,
    last_error   TEXT,
    first_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    created      BIGINT,
    applied      TEXT,
    holder       TEXT,
    lock_until   TIMESTAMPTZ
) WITH (fillfactor = 80);
CREATE INDEX mv_failed_idx ON mv (first_seen) WHERE status = 'failed';
CREATE INDEX mv_purge_idx ON mv (updated_at) WHERE status IN ('completed', 'failed');
CREATE FUNCTION sw_raise(msg text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '%', msg; END $$;
CREATE TABLE sv (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 1,
    fence        TEXT NOT NULL,
    lease_until  TIMESTAMPTZ,
    last_error   TEXT,
    first_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    object_id    TEXT,
    seq          BIGINT,
    created      BIGINT,
    wm_created   BIGINT,
    wm_event     TEXT
);
CREATE INDEX sv_failed_idx ON sv (first_seen) WHERE status = 'failed';
CREATE INDEX sv_purge_idx ON sv (updated_at) WHERE status <> 'processing';
CREATE UNIQUE INDEX sv_obj_seq ON sv (object_id, seq) WHERE object_id IS NOT NULL;
-- pending.sql: the guarded claims in a table of their own (as `ev`), and objects whose
-- lock also carries the holder's event ("pending"), folded into the watermark by the
-- next lock once the holder's claim is seen completed.
CREATE TABLE pe (LIKE ev INCLUDING ALL);
CREATE TABLE pv_objects (
    object_id       TEXT PRIMARY KEY,
    created         BIGINT,
    event_id        TEXT,
    holder          TEXT,
    holder_event    TEXT,
    pending_created BIGINT,
    pending_event   TEXT,
    lock_until      TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
ALTER TABLE pv_objects ADD COLUMN seen_holder TEXT, ADD COLUMN seen_status TEXT;
CREATE TABLE evd (LIKE ev INCLUDING DEFAULTS);
ALTER TABLE evd ALTER COLUMN event_id TYPE TEXT COLLATE "default";
ALTER TABLE evd ADD PRIMARY KEY (event_id);
CREATE INDEX evd_failed_idx ON evd (first_seen) WHERE status = 'failed';
CREATE INDEX evd_purge_idx ON evd (updated_at) WHERE status <> 'processing';
CREATE TABLE evd_objects (LIKE ev_objects INCLUDING DEFAULTS) WITH (fillfactor = 70);
ALTER TABLE evd_objects ALTER COLUMN object_id TYPE TEXT COLLATE "default";
ALTER TABLE evd_objects ADD PRIMARY KEY (object_id);
