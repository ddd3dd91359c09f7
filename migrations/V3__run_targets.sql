-- V3: the plan of a tag run, pin by pin: which pins were targets, which were already tagged, and which
-- belong to another organisation (conflicts, never touched). A dry run records its plan here too.
CREATE TABLE run_targets (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    class TEXT NOT NULL CHECK (class IN ('target', 'already', 'conflict')),
    owner TEXT,                        -- the org that owns a conflict
    PRIMARY KEY (run_id, cid_id)
) STRICT, WITHOUT ROWID;
