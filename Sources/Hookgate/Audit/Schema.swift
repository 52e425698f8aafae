import Foundation

// Threads: whoever opens the database (the gateway at start, the writer thread after a failure, the CLI).

/// The audit database's schema, created and migrated by the gateway (`PRAGMA user_version`).
/// docs/audit.md documents it for compliance; the column lists below are also the order in
/// which each record's hash covers its content.
package enum AuditSchema {
    static let version: Int64 = 5

    /// Columns of `audit_requests` covered by the hash, in hashing order.
    package static let requestColumns = [
        "seq", "request_id", "received_at", "client_addr", "team", "key_fingerprint", "method", "path",
        "hook_id", "event_request_id", "decision", "user_agent", "client_request_id", "config_version", "prev_hash",
    ]

    /// Columns of `audit_responses` covered by the hash, in hashing order.
    package static let responseColumns = [
        "seq", "request_id", "completed_at", "decision", "status", "upstream_status", "upstream_ms", "total_ms",
        "delivery_id", "event", "tenant_id", "upstream_content_type", "upstream_body", "upstream_body_bytes",
        "detail", "prev_hash",
    ]

    static let migrations: [Int64: String] = [
        1: """
        CREATE TABLE audit_requests (
            seq               INTEGER PRIMARY KEY,          -- position in the hash chain (shared with audit_responses)
            request_id        TEXT    NOT NULL UNIQUE,      -- the gateway's request id (X-Request-Id)
            received_at       TEXT    NOT NULL,             -- UTC YYYY-MM-DDTHH:MM:SS.sssZ
            client_addr       TEXT    NOT NULL,             -- peer IP, no port
            team              TEXT,                         -- null when not authenticated
            key_fingerprint   TEXT,                         -- first 16 hex of SHA-256(key); null when no bearer token
            method            TEXT    NOT NULL,
            path              TEXT    NOT NULL,             -- canonical for the redeliver route, else as received (capped)
            hook_id           TEXT,
            event_request_id  TEXT,
            decision          TEXT    NOT NULL,             -- forwarded, or the refusal reason
            user_agent        TEXT,
            client_request_id TEXT,                         -- the caller's X-Request-Id, recorded, not trusted
            config_version    TEXT    NOT NULL,             -- SHA-256 of the config file in force
            prev_hash         TEXT    NOT NULL,
            hash              TEXT    NOT NULL
        );
        CREATE TABLE audit_responses (
            seq                   INTEGER PRIMARY KEY,
            request_id            TEXT    NOT NULL UNIQUE REFERENCES audit_requests(request_id),
            completed_at          TEXT    NOT NULL,
            decision              TEXT    NOT NULL,         -- final decision (a forwarded call may end upstream_error/timeout)
            status                INTEGER NOT NULL,         -- status returned to the caller
            upstream_status       INTEGER,                  -- null when nothing was sent upstream
            upstream_ms           REAL,
            total_ms              REAL    NOT NULL,
            delivery_id           TEXT,                     -- parsed from Hookshot's answer
            event                 TEXT,
            tenant_id             TEXT,
            upstream_content_type TEXT,
            upstream_body         BLOB,                     -- up to audit.max_body_bytes (TEXT when UTF-8)
            upstream_body_bytes   INTEGER,                  -- full size of Hookshot's body
            detail                TEXT,                     -- why, for refusals and failures
            prev_hash             TEXT    NOT NULL,
            hash                  TEXT    NOT NULL
        );
        CREATE INDEX audit_requests_received_at ON audit_requests(received_at);
        CREATE INDEX audit_requests_team ON audit_requests(team, received_at);
        CREATE INDEX audit_requests_hook ON audit_requests(hook_id, received_at);
        CREATE INDEX audit_responses_decision ON audit_responses(decision);
        CREATE INDEX audit_responses_status ON audit_responses(status);
        CREATE VIEW audit_pairs AS
        SELECT q.request_id, q.received_at, r.completed_at, q.client_addr, q.team, q.key_fingerprint,
               q.method, q.path, q.hook_id, q.event_request_id,
               COALESCE(r.decision, q.decision) AS decision,
               r.status, r.upstream_status, r.upstream_ms, r.total_ms,
               r.delivery_id, r.event, r.tenant_id, q.user_agent, q.client_request_id, q.config_version
          FROM audit_requests q LEFT JOIN audit_responses r ON r.request_id = q.request_id;
        """,
        // Hookshot request ids are random, so an index on them dirtied a random page per record
        // and cost a third of the writer's throughput (bench/README.md). Lookups by
        // event_request_id scan instead (about 0.3 s per million calls); docs/audit.md.
        2: "DROP INDEX IF EXISTS audit_requests_event_request",
        // Derived from the records, in batches (AuditDerived); the writer fills them for an
        // existing file when it first opens it (`hookgate audit rebuild` does it by hand).
        3: derivedTables,
        // Signed checkpoints (docs/audit.md): appended by the writer, never changed. (IF NOT
        // EXISTS: a file whose user_version was set back still migrates.)
        4: """
        CREATE TABLE IF NOT EXISTS audit_checkpoints (
            seq       INTEGER NOT NULL,                 -- the last record covered
            hash      TEXT    NOT NULL,                 -- its hash
            chain     TEXT    NOT NULL,                 -- the hash of record seq 1: the chain's name
            at        TEXT    NOT NULL,                 -- when signed (UTC)
            key       TEXT    NOT NULL,                 -- the signing key's fingerprint
            signature TEXT    NOT NULL                  -- Ed25519, base64
        );
        CREATE INDEX IF NOT EXISTS audit_checkpoints_seq ON audit_checkpoints(seq);
        CREATE TRIGGER IF NOT EXISTS audit_checkpoints_append_only_update BEFORE UPDATE ON audit_checkpoints
            BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
        CREATE TRIGGER IF NOT EXISTS audit_checkpoints_append_only_delete BEFORE DELETE ON audit_checkpoints
            BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
        """,
        // Where this file's part of the chain starts and, once rotated, ends (AuditRotation,
        // docs/audit.md "Rotation"). One row; a file from before rotation starts at seq 1.
        5: """
        CREATE TABLE IF NOT EXISTS audit_file (
            id            INTEGER PRIMARY KEY CHECK (id = 1),
            first_seq     INTEGER NOT NULL,             -- the first record this file holds (1: the chain's start)
            prev_hash     TEXT    NOT NULL,             -- the hash that record continues (64 zeros at the start)
            chain         TEXT,                         -- the hash of record seq 1 (in a later file: carried over)
            started_at    TEXT    NOT NULL,             -- when the file was started (UTC)
            previous_file TEXT,                         -- the name of the file before it
            sealed_at     TEXT,                         -- when it was closed for rotation (null: live)
            last_seq      INTEGER,                      -- sealed: its last record
            last_hash     TEXT,                         -- sealed: that record's hash
            archived_as   TEXT                          -- sealed: the name it was renamed to
        );
        INSERT OR IGNORE INTO audit_file (id, first_seq, prev_hash, started_at)
        VALUES (1, 1, '\(AuditChain.genesis)', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
        CREATE TRIGGER IF NOT EXISTS audit_file_no_delete BEFORE DELETE ON audit_file
            BEGIN SELECT RAISE(ABORT, 'audit_file is kept'); END;
        """,
    ]

    /// Schema 3: what is derived from the records (AuditDerived, docs/audit.md).
    static let derivedTables = """
        CREATE TABLE audit_batches (
            first_seq INTEGER PRIMARY KEY,              -- the first record the batch covers
            last_seq  INTEGER NOT NULL,                 -- the last record it covers
            event_ids INTEGER NOT NULL                  -- rows it added to audit_event_lookup
        );
        \(summaryTable("audit_summary_hooks", hook: true))
        \(summaryTable("audit_summary_teams", hook: false))
        CREATE TABLE audit_event_lookup (
            bucket    INTEGER NOT NULL,                 -- audit_batches.first_seq
            event_key         NOT NULL,                 -- event_request_id as 16 bytes (a BLOB)
            seq       INTEGER NOT NULL,                 -- audit_requests.seq
            PRIMARY KEY (bucket, event_key, seq)
        ) WITHOUT ROWID;
        \(dailyView("audit_daily_hooks", table: "audit_summary_hooks", hook: true))
        \(dailyView("audit_daily", table: "audit_summary_teams", hook: false))
        """

    /// Counts of the records up to the last batch. A key column of a WITHOUT ROWID table cannot
    /// be null: no team or hook is stored as '', no response yet as status 0.
    private static func summaryTable(_ name: String, hook: Bool) -> String {
        """
        CREATE TABLE \(name) (
            day      TEXT    NOT NULL,                  -- UTC date of received_at
            team     TEXT    NOT NULL,                  -- '' when not authenticated
            \(hook ? "hook_id  TEXT    NOT NULL,                  -- '' when none\n    " : "")decision TEXT    NOT NULL,
            status   INTEGER NOT NULL,                  -- 0: no response record (yet)
            calls    INTEGER NOT NULL,
            PRIMARY KEY (day, team, \(hook ? "hook_id, " : "")decision, status)
        ) WITHOUT ROWID;
        """
    }

    /// A summary table plus the records after the last batch, with nulls back: at any moment
    /// exactly the counts a GROUP BY over audit_pairs would give. The two joins go from the
    /// few responses after the last batch to their requests (CROSS JOIN fixes that order).
    private static func dailyView(_ name: String, table: String, hook: Bool) -> String {
        let h = hook ? " hook_id," : "", qh = hook ? " q.hook_id," : ""
        let through = "(SELECT COALESCE(max(last_seq), 0) FROM audit_batches)"
        return """
            CREATE VIEW \(name) AS
            SELECT day, team,\(h) decision, status, sum(calls) AS calls
              FROM (SELECT day, NULLIF(team, '') AS team,\(hook ? " NULLIF(hook_id, '') AS hook_id," : "") decision,
                           NULLIF(status, 0) AS status, calls
                      FROM \(table)
                    UNION ALL
                    SELECT substr(q.received_at, 1, 10), q.team,\(qh) COALESCE(r.decision, q.decision), r.status, 1
                      FROM audit_requests q LEFT JOIN audit_responses r ON r.request_id = q.request_id
                     WHERE q.seq > \(through)
                    UNION ALL
                    SELECT substr(q.received_at, 1, 10), q.team,\(qh) q.decision, NULL, -1
                      FROM audit_responses r CROSS JOIN audit_requests q ON q.request_id = r.request_id
                     WHERE r.seq > \(through) AND q.seq <= \(through)
                    UNION ALL
                    SELECT substr(q.received_at, 1, 10), q.team,\(qh) r.decision, r.status, 1
                      FROM audit_responses r CROSS JOIN audit_requests q ON q.request_id = r.request_id
                     WHERE r.seq > \(through) AND q.seq <= \(through))
             GROUP BY day, team,\(h) decision, status
            HAVING sum(calls) <> 0;
            """
    }

    /// The `audit_pairs` columns of the contract, in order.
    static let pairColumns = [
        "request_id", "received_at", "completed_at", "client_addr", "team", "key_fingerprint", "method", "path",
        "hook_id", "event_request_id", "decision", "status", "upstream_status", "upstream_ms", "total_ms",
        "delivery_id", "event", "tenant_id", "user_agent", "client_request_id", "config_version",
    ]

    static let startupBusyTimeoutMs = 10_000

    /// Opens (creating if needed) and migrates the database at `path` for writing.
    /// `catchUp`: write the derived data of records after the last batch (see `AuditDerived`).
    /// A file sealed for rotation (`AuditRotator`) is never written again: its rotation is
    /// finished here if the process that began it died, and the new file at `path` is opened.
    package static func openForWriting(path: String, durability: Durability, busyTimeoutMs: Int,
                                       catchUp: Bool = true) throws(AuditError) -> SQLiteConnection {
        for _ in 0..<8 {
            let identity = FileIdentity(path: path)
            let db = try SQLiteConnection(path: path)
            // Start-up (migration, catch-up) waits longer for another gateway's lock than a call
            // may: no caller waits on it, and a start that fails for a busy file helps no one.
            db.waitWhenBusy(ms: max(busyTimeoutMs, startupBusyTimeoutMs))
            guard try AuditSegment.read(db).isSealed else {
                try prepareForWriting(db, path: path, durability: durability, busyTimeoutMs: busyTimeoutMs, catchUp: catchUp)
                return db
            }
            // Sealed: the file this connection has is no longer the one to write. Finish its
            // rotation unless another process did (then `path` names the new file already).
            defer { db.close() }
            if let identity, FileIdentity(path: path) == identity {
                _ = try AuditRotator.finish(db, path: path, identity: identity, durability: durability,
                                            busyTimeoutMs: busyTimeoutMs, now: Date())
            }
        }
        throw AuditError(.unusable, message: "audit file \(path) stays sealed for rotation: another process keeps rotating it")
    }

    private static func prepareForWriting(_ db: SQLiteConnection, path: String, durability: Durability, busyTimeoutMs: Int,
                                          catchUp: Bool) throws(AuditError) {
        let mode = try db.prepare("PRAGMA journal_mode = WAL")
        let isWAL = try mode.step() && mode.text(0)?.lowercased() == "wal"
        mode.reset()
        guard isWAL else { throw AuditError(.unusable, message: "cannot switch \(path) to WAL mode") }
        try db.execute("PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
        try migrate(db)
        // Derived data for records after the last batch: after a crash, a few thousand records;
        // for a file from an older gateway (or other tools), all of them, once.
        if catchUp { try AuditDerived.catchUp(db) }
        db.waitWhenBusy(ms: busyTimeoutMs)
    }

    static func migrate(_ db: SQLiteConnection) throws(AuditError) {
        let current = try db.scalarInt("PRAGMA user_version") ?? 0
        guard current <= version else {
            throw AuditError(.unusable, message: "audit database schema \(current) is newer than this gateway's (\(version))")
        }
        var v = current
        while v < version {
            v += 1
            guard let sql = migrations[v] else { break }
            try db.execute("BEGIN IMMEDIATE")
            do throws(AuditError) {
                try db.execute(sql)
                try db.execute("PRAGMA user_version = \(v)")
                try db.execute("COMMIT")
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        }
    }
}
