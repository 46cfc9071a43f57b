//! The metadata schema and its migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. A migration is appended to
//! [`MIGRATIONS`], never edited once released: a store written by an older wharf is brought
//! forward in one transaction when a newer one opens it. A store newer than this binary is
//! refused rather than guessed at.
//!
//! Times are integers: nanoseconds since the Unix epoch, UTC.

pub const MIGRATIONS: &[&str] = &[
    // 1: the first release.
    r#"
    CREATE TABLE layers (
        diff_id     TEXT PRIMARY KEY,          -- sha256 hex of the uncompressed tar stream
        size        INTEGER NOT NULL,          -- bytes of file data unpacked
        tar_size    INTEGER NOT NULL,          -- bytes of the uncompressed tar stream
        entries     INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE images (
        id          TEXT PRIMARY KEY,          -- sha256 hex of the config blob
        created     INTEGER NOT NULL,          -- the config's `created`
        imported_at INTEGER NOT NULL,
        size        INTEGER NOT NULL,          -- sum of its layers' sizes
        comment     TEXT
    );
    CREATE TABLE image_layers (
        image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position    INTEGER NOT NULL,          -- 0 = bottom
        diff_id     TEXT NOT NULL REFERENCES layers(diff_id),
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_by_diff ON image_layers(diff_id);
    CREATE TABLE tags (
        repo        TEXT NOT NULL,
        tag         TEXT NOT NULL,
        image_id    TEXT NOT NULL REFERENCES images(id),
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (repo, tag)
    );
    CREATE INDEX tags_by_image ON tags(image_id);
    -- what a source file (compressed or not) was imported as: apply never imports twice
    CREATE TABLE sources (
        digest      TEXT PRIMARY KEY,          -- sha256 hex of the source bytes as read
        image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE containers (
        id           TEXT PRIMARY KEY,         -- 64 hex
        name         TEXT NOT NULL UNIQUE,
        image_id     TEXT NOT NULL REFERENCES images(id),
        image_ref    TEXT NOT NULL,            -- as the user wrote it
        config       TEXT NOT NULL,            -- JSON: the container's effective spec
        labels       TEXT NOT NULL DEFAULT '{}',
        project      TEXT,                     -- owning manifest project, NULL for `wharf run`
        spec_hash    TEXT,
        created_at   INTEGER NOT NULL,
        state        TEXT NOT NULL,            -- created | running | exited | dead
        pid          INTEGER,
        pid_start    INTEGER,                  -- /proc/<pid>/stat starttime: never signal a recycled pid
        monitor_pid  INTEGER,
        monitor_start INTEGER,
        started_at   INTEGER,
        finished_at  INTEGER,
        exit_code    INTEGER,
        oom_killed   INTEGER NOT NULL DEFAULT 0,
        restart_count INTEGER NOT NULL DEFAULT 0,
        stop_requested INTEGER NOT NULL DEFAULT 0,
        health       TEXT
    );
    CREATE INDEX containers_by_project ON containers(project);
    CREATE TABLE runs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        container_id TEXT NOT NULL,            -- no foreign key: runs outlive `rm`
        container_name TEXT NOT NULL,
        image_id     TEXT NOT NULL,
        image_ref    TEXT NOT NULL,
        command      TEXT NOT NULL,            -- JSON array
        started_at   INTEGER NOT NULL,
        finished_at  INTEGER,
        exit_code    INTEGER,
        signal       INTEGER,
        oom_killed   INTEGER NOT NULL DEFAULT 0,
        peak_memory  INTEGER,
        cpu_usec     INTEGER,
        restart      INTEGER NOT NULL DEFAULT 0 -- started by a restart policy
    );
    CREATE INDEX runs_by_container ON runs(container_id, started_at);
    CREATE INDEX runs_by_time ON runs(started_at);
    CREATE TABLE volumes (
        name        TEXT PRIMARY KEY,
        created_at  INTEGER NOT NULL,
        labels      TEXT NOT NULL DEFAULT '{}',
        project     TEXT
    );
    CREATE TABLE applies (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          INTEGER NOT NULL,
        finished_at INTEGER,
        project     TEXT NOT NULL,
        files       TEXT NOT NULL,             -- JSON [{path, sha256}]
        git_commit  TEXT,
        git_dirty   INTEGER,
        plan        TEXT NOT NULL,             -- JSON
        outcome     TEXT                       -- JSON, NULL while running or if killed
    );
    CREATE INDEX applies_by_project ON applies(project, at);
    "#,
    // 2: the manifest's spec of an applied container, for field-level plan reasons.
    r#"
    ALTER TABLE containers ADD COLUMN spec TEXT;
    "#,
    // 3: apply's cache of source digests, so a no-op apply does not hash unchanged tarballs.
    // A row is used only while the file's identity and change times are exactly as recorded
    // (see reconcile::observe); it is a cache: deleting rows is always safe.
    r#"
    CREATE TABLE source_digests (
        path        TEXT PRIMARY KEY,          -- absolute path as the manifest resolves it
        dev         INTEGER NOT NULL,
        ino         INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        ctime_ns    INTEGER NOT NULL,
        digest      TEXT NOT NULL              -- sha256 hex of the bytes
    );
    "#,
    // 4: generations (each create/recreate of a declared container by apply or rollback),
    // tied to the apply and the manifest commit; each project's retention policy as last
    // applied; and the retention log (every removal a retention policy made, with why).
    r#"
    CREATE TABLE generations (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        project      TEXT NOT NULL,
        name         TEXT NOT NULL,
        seq          INTEGER NOT NULL,         -- 1, 2, ... per (project, name)
        container_id TEXT NOT NULL,
        image_id     TEXT NOT NULL,
        image_ref    TEXT NOT NULL,
        spec         TEXT NOT NULL,            -- JSON: the effective ContainerSpec
        spec_hash    TEXT NOT NULL,
        apply_id     INTEGER,                  -- the applies row; NULL for a rollback
        git_commit   TEXT,
        git_dirty    INTEGER,
        cause        TEXT NOT NULL,            -- apply | rollback
        rollback_of  INTEGER,                  -- the seq a rollback brought back
        created_at   INTEGER NOT NULL,
        outcome      TEXT NOT NULL,            -- created | started | failed
        error        TEXT,
        superseded_at INTEGER,
        UNIQUE (project, name, seq)
    );
    CREATE INDEX generations_by_container ON generations(container_id);
    -- the [retention] policy and the image references of each project's last apply:
    -- `system prune --policy` and the log writer of a project's containers read them
    CREATE TABLE project_policies (
        project      TEXT PRIMARY KEY,
        retention    TEXT NOT NULL,            -- JSON of the manifest's [retention]
        refs         TEXT NOT NULL,            -- JSON: image references the manifest names
        updated_at   INTEGER NOT NULL
    );
    CREATE TABLE retention_log (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           INTEGER NOT NULL,
        scope        TEXT NOT NULL,            -- a project, or "" for the root config's policy
        kind         TEXT NOT NULL,            -- image | container | generation | run | apply
        key          TEXT NOT NULL,
        detail       TEXT NOT NULL,            -- tags, name, ... (what it was)
        reason       TEXT NOT NULL
    );
    "#,
    // 5: where pulled images came from: a repository's manifest digest (docker's RepoDigests),
    // with the manifest's bytes (push and save send them unchanged).
    r#"
    CREATE TABLE repo_digests (
        repo        TEXT NOT NULL,             -- normalized, e.g. docker.io/library/alpine
        digest      TEXT NOT NULL,             -- "sha256:<hex>" of the manifest
        image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        manifest    BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (repo, digest)
    );
    CREATE INDEX repo_digests_by_image ON repo_digests(image_id);
    "#,
    // 6: the registry digest a generation's image was pulled by (`repo@sha256:…`), so a
    // rollback can pull exactly those bytes again; the blobs each layer is known by (push).
    r#"
    ALTER TABLE generations ADD COLUMN image_digest TEXT;
    -- the compressed blobs a layer is known by: the one it was pulled or loaded as (its
    -- uncompressed digest is the diff id), and the one a push made of it (its tar may
    -- differ: tar_digest); a push sends none a registry has
    CREATE TABLE layer_blobs (
        diff_id     TEXT NOT NULL REFERENCES layers(diff_id) ON DELETE CASCADE,
        digest      TEXT NOT NULL,             -- "sha256:<hex>" of the blob
        size        INTEGER NOT NULL,
        media_type  TEXT NOT NULL,
        tar_digest  TEXT NOT NULL,             -- sha256 hex of the tar it decompresses to
        repo        TEXT,                      -- a repository known to hold it (host/name)
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (diff_id, digest)
    );
    "#,
    // 7: networks (netavark bridges) and the addresses handed out on them.
    r#"
    CREATE TABLE networks (
        id          TEXT PRIMARY KEY,          -- 64 hex digits
        name        TEXT NOT NULL UNIQUE,
        driver      TEXT NOT NULL,             -- "bridge"
        interface   TEXT NOT NULL UNIQUE,      -- the host bridge, e.g. wharf0
        subnet      TEXT NOT NULL,             -- "10.89.7.0/24"
        gateway     TEXT NOT NULL,
        dns         INTEGER NOT NULL,          -- aardvark-dns answers container names
        internal    INTEGER NOT NULL,          -- no outbound NAT
        project     TEXT,                      -- made by apply for this project
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE net_addresses (
        network      TEXT NOT NULL REFERENCES networks(id),
        address      TEXT NOT NULL,
        container_id TEXT NOT NULL,
        PRIMARY KEY (network, address)
    );
    CREATE INDEX net_addresses_by_container ON net_addresses(container_id);
    "#,
    // 8: why the container's last start or restart failed (docker's State.Error): a
    // detached monitor has no terminal to say it on.
    r#"
    ALTER TABLE containers ADD COLUMN error TEXT;
    "#,
];
