import Foundation

// Threads: one thread at a time (the shipper's, or a CLI command); never the loop.

/// The central copy of every replica's audit in PostgreSQL: its schema, and the copying of one
/// local file's records into it, exactly once. The tables have the SQLite columns plus
/// `replica` (primary key `(replica, seq)`), and `upstream_body_is_text` (SQLite keeps a UTF-8
/// body as TEXT, any other as BLOB; PostgreSQL keeps both as `bytea`), so each replica's chain
/// verifies there too.
package enum CentralAudit {
    static let version = 2

    /// Schema 2: the replicas' signed checkpoints (docs/audit.md, "Signed checkpoints").
    static let checkpointsSQL = """
        CREATE TABLE audit_checkpoints (
            replica text NOT NULL, seq bigint NOT NULL, hash text NOT NULL, chain text NOT NULL,
            at text NOT NULL, key text NOT NULL, signature text NOT NULL,
            PRIMARY KEY (replica, seq, signature)
        );
        """

    static let requestTypes: [String: String] = [
        "seq": "bigint NOT NULL", "request_id": "text NOT NULL", "received_at": "text NOT NULL", "client_addr": "text NOT NULL",
        "team": "text", "key_fingerprint": "text", "method": "text NOT NULL", "path": "text NOT NULL", "hook_id": "text",
        "event_request_id": "text", "decision": "text NOT NULL", "user_agent": "text", "client_request_id": "text",
        "config_version": "text NOT NULL", "prev_hash": "text NOT NULL",
    ]
    static let responseTypes: [String: String] = [
        "seq": "bigint NOT NULL", "request_id": "text NOT NULL", "completed_at": "text NOT NULL", "decision": "text NOT NULL",
        "status": "integer NOT NULL", "upstream_status": "integer", "upstream_ms": "double precision",
        "total_ms": "double precision NOT NULL", "delivery_id": "text", "event": "text", "tenant_id": "text",
        "upstream_content_type": "text", "upstream_body": "bytea", "upstream_body_bytes": "bigint", "detail": "text",
        "prev_hash": "text NOT NULL",
    ]

    /// A column's value as the gateway wrote it to SQLite, from PostgreSQL's text for it:
    /// integer and double columns by their PostgreSQL type, text otherwise (`bytea` is the
    /// caller's, which needs `upstream_body_is_text`).
    static func value(_ text: String, column: String) -> SQLValue {
        let type = responseTypes[column] ?? requestTypes[column] ?? "text"
        if type.hasPrefix("bigint") || type.hasPrefix("integer") { return Int64(text).map(SQLValue.int) ?? .text(text) }
        if type.hasPrefix("double") { return Double(text).map(SQLValue.double) ?? .text(text) }
        return .text(text)
    }

    /// Columns COPY writes, in order.
    static let requestCopyColumns = ["replica"] + AuditSchema.requestColumns + ["hash"]
    static let responseCopyColumns = ["replica"] + AuditSchema.responseColumns + ["hash", "upstream_body_is_text"]

    static var schemaSQL: String {
        func columns(_ names: [String], _ types: [String: String]) -> String {
            names.map { "    \($0) \(types[$0]!)" }.joined(separator: ",\n")
        }
        return """
        CREATE TABLE audit_requests (
            replica text NOT NULL,
        \(columns(AuditSchema.requestColumns, requestTypes)),
            hash text NOT NULL,
            PRIMARY KEY (replica, seq),
            UNIQUE (replica, request_id)
        );
        CREATE TABLE audit_responses (
            replica text NOT NULL,
        \(columns(AuditSchema.responseColumns, responseTypes)),
            hash text NOT NULL,
            upstream_body_is_text boolean,
            PRIMARY KEY (replica, seq),
            UNIQUE (replica, request_id)
        );
        CREATE INDEX audit_requests_received_at ON audit_requests (received_at);
        CREATE INDEX audit_requests_team ON audit_requests (team, received_at);
        CREATE INDEX audit_requests_hook ON audit_requests (hook_id, received_at);
        CREATE INDEX audit_requests_event_request ON audit_requests (event_request_id);
        CREATE INDEX audit_responses_decision ON audit_responses (decision);
        CREATE INDEX audit_responses_status ON audit_responses (status);
        CREATE VIEW audit_pairs AS
        SELECT q.replica, q.request_id, q.received_at, r.completed_at, q.client_addr, q.team, q.key_fingerprint,
               q.method, q.path, q.hook_id, q.event_request_id,
               COALESCE(r.decision, q.decision) AS decision,
               r.status, r.upstream_status, r.upstream_ms, r.total_ms,
               r.delivery_id, r.event, r.tenant_id, q.user_agent, q.client_request_id, q.config_version
          FROM audit_requests q
          LEFT JOIN audit_responses r ON r.replica = q.replica AND r.request_id = q.request_id;
        """
    }

    /// Creates or migrates the central schema (once, whichever replica comes first: under an
    /// advisory lock, in one transaction).
    package static func migrate(_ pg: PostgresConnection) throws(PostgresError) {
        try pg.execute("BEGIN")
        do throws(PostgresError) {
            try pg.execute("SELECT pg_advisory_xact_lock(7204161531)")
            try pg.execute("CREATE TABLE IF NOT EXISTS hookgate_schema (version integer NOT NULL)")
            let rows = try pg.execute("SELECT max(version) FROM hookgate_schema")
            let current = rows.first.flatMap { $0.first ?? nil }.flatMap { Int($0) } ?? 0
            guard current <= version else {
                throw PostgresError(message: "the central audit schema is version \(current), newer than this gateway's (\(version))")
            }
            if current < 1 {
                try pg.execute(schemaSQL)
                try pg.execute("INSERT INTO hookgate_schema (version) VALUES (1)")
            }
            if current < 2 {
                try pg.execute(checkpointsSQL)
                try pg.execute("INSERT INTO hookgate_schema (version) VALUES (2)")
            }
            try pg.execute("COMMIT")
        } catch {
            _ = try? pg.execute("ROLLBACK")
            throw error
        }
    }

    /// The hash PostgreSQL holds for `replica`'s record `seq` in `table`.
    static func hash(_ pg: PostgresConnection, replica: String, seq: Int64) throws(PostgresError) -> (table: String, hash: String)? {
        for table in ["audit_requests", "audit_responses"] {
            let rows = try pg.execute("SELECT hash FROM \(table) WHERE replica = $1 AND seq = $2", [replica, String(seq)])
            if let row = rows.first, let hash = row.first ?? nil { return (table, hash) }
        }
        return nil
    }

    /// Copies the file's signed checkpoints that cover records already in PostgreSQL and are not
    /// there yet (older files have none). Returns how many.
    static func shipCheckpoints(source: SQLiteConnection, central pg: PostgresConnection, replica: String,
                                through shipped: Int64) throws -> Int {
        guard try source.scalarInt("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_checkpoints'") == 1 else {
            return 0
        }
        let have = try pg.execute("SELECT coalesce(max(seq), 0) FROM audit_checkpoints WHERE replica = $1", [replica])
        let after = have.first.flatMap { $0.first ?? nil }.flatMap { Int64($0) } ?? 0
        let statement = try source.prepare("""
            SELECT seq, hash, chain, at, key, signature FROM audit_checkpoints WHERE seq > ?1 AND seq <= ?2 ORDER BY seq, rowid
            """)
        try statement.bind([.int(after), .int(shipped)])
        defer { statement.reset() }
        var count = 0
        while try statement.step() {
            try pg.execute("""
                INSERT INTO audit_checkpoints (replica, seq, hash, chain, at, key, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT DO NOTHING
                """, [replica, String(statement.int(0))] + (1...5).map { statement.text($0) })
            count += 1
        }
        return count
    }

    /// The highest `seq` PostgreSQL holds for `replica` (0: none).
    package static func shippedThrough(_ pg: PostgresConnection, replica: String) throws(PostgresError) -> Int64 {
        let rows = try pg.execute("""
            SELECT GREATEST((SELECT max(seq) FROM audit_requests WHERE replica = $1),
                            (SELECT max(seq) FROM audit_responses WHERE replica = $1))
            """, [replica])
        guard let first = rows.first, let cell = first.first, let text = cell else { return 0 }
        return Int64(text) ?? 0
    }
}

/// A failure of shipping that retrying cannot fix: PostgreSQL holds a record of this replica
/// that differs from the local file (tampering, or two replicas with one name).
package struct ShipConflict: Error, CustomStringConvertible, Sendable, Equatable {
    package var replica: String
    package var table: String
    package var seq: Int64
    /// Set when the local file ends before what PostgreSQL holds for the replica.
    package var localHead: Int64?

    package var description: String {
        if let localHead {
            return "PostgreSQL holds records through seq \(seq) for replica \"\(replica)\" but the local audit file ends at seq "
                + "\(localHead) (another replica's file, or an older copy): shipping stopped"
        }
        return "PostgreSQL holds a different \(table) record seq \(seq) for replica \"\(replica)\" than the local audit file "
            + "(a changed row, or two replicas with one name): shipping stopped"
    }
}
