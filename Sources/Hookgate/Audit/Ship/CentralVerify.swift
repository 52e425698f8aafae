import Foundation

// Threads: the CLI's (`hookgate audit verify --db postgresql://...`).

/// One replica's chain in the central database, checked as `audit verify` checks a file: every
/// `seq` from 1 on, each record's `prev_hash` the previous record's `hash`, and each `hash` the
/// SHA-256 of the record's content as the gateway wrote it (the SQLite types restored from the
/// column types, and `upstream_body_is_text`).
package struct CentralVerification: Sendable, Equatable {
    package var replica: String
    package var records = 0
    package var pairs = 0
    package var lastSeq: Int64 = 0
    package var lastHash = AuditChain.genesis
    /// The first record that breaks the chain, described; nil when whole.
    package var broken: String?
    /// With a public key: the shipped checkpoints checked against the chain (nil: not checked).
    package var checkpoints: CheckpointCheck?
    package var checkpointCount = 0
    package var newestCheckpoint: Int64?

    package var incomplete: Int { records - 2 * pairs }

    /// Replicas in the database (or just `only`), each verified.
    /// With `key`, each whole chain's shipped checkpoints are checked too (`checkCheckpoints`).
    package static func verify(uri: String, only: String? = nil, key: AuditSigningKey? = nil, pageRows: Int = 5000) throws -> [CentralVerification] {
        let pg = try PostgresConnection(uri: uri, password: nil, applicationName: "hookgate audit verify")
        try pg.execute("SET default_transaction_read_only = on")
        try pg.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        let names: [String]
        if let only {
            names = [only]
        } else {
            names = try pg.execute("SELECT replica FROM audit_requests UNION SELECT replica FROM audit_responses ORDER BY 1").compactMap { $0[0] }
        }
        return try names.map { name in
            var result = try verify(pg, replica: name, pageRows: pageRows)
            if let key, result.broken == nil { try checkCheckpoints(pg, &result, key: key) }
            return result
        }
    }

    static func verify(_ pg: PostgresConnection, replica: String, pageRows: Int) throws -> CentralVerification {
        var result = CentralVerification(replica: replica)
        var requests = Page(pg: pg, table: "audit_requests", columns: AuditSchema.requestColumns, replica: replica, size: pageRows)
        var responses = Page(pg: pg, table: "audit_responses", columns: AuditSchema.responseColumns, replica: replica, size: pageRows)
        while true {
            let q = try requests.peek(), r = try responses.peek()
            let record: Page.Row
            if let q, r == nil || q.seq < r!.seq { record = try requests.next()! } else if r != nil { record = try responses.next()! } else { break }
            let expected = result.lastSeq + 1
            let place = "seq \(record.seq) (\(record.table), replica \(replica))"
            if record.seq != expected {
                result.broken = record.seq > expected
                    ? "seq \(expected) (replica \(replica)): missing (the next record PostgreSQL holds is seq \(record.seq))"
                    : "\(place): seq repeated"
                return result
            }
            guard record.prevHash == result.lastHash else {
                result.broken = "\(place): prev_hash is not the hash of seq \(result.lastSeq) (a record before it was changed, removed or inserted)"
                return result
            }
            guard AuditChain.hash(table: record.table, values: record.values) == record.hash else {
                result.broken = "\(place): the stored hash does not match the record's content (the row was changed)"
                return result
            }
            result.records += 1
            if record.table == "audit_responses" { result.pairs += 1 }
            result.lastSeq = record.seq
            result.lastHash = record.hash
        }
        return result
    }

    /// The replica's signed checkpoints (shipped with its records) against `key` and the chain
    /// just verified, in the same snapshot (a checkpoint shipped meanwhile is not mistaken for a
    /// cut tail). Catches what a chain check alone cannot: rows cut from the end, or rewritten
    /// with recomputed hashes, by someone with write access to PostgreSQL but not the signing key.
    static func checkCheckpoints(_ pg: PostgresConnection, _ result: inout CentralVerification, key: AuditSigningKey) throws {
        let replica = result.replica
        let rows = try pg.execute("SELECT chain, seq, hash, at, key, signature FROM audit_checkpoints WHERE replica = $1 ORDER BY seq", [replica])
        let checkpoints = rows.map {
            (checkpoint: AuditCheckpoint(chain: $0[0] ?? "", seq: Int64($0[1] ?? "") ?? 0, hash: $0[2] ?? "", at: $0[3] ?? "",
                                         key: $0[4] ?? "", signature: $0[5] ?? ""), source: "replica \(replica)")
        }
        func stored(_ seq: Int64) throws -> String? {
            try pg.execute("""
                SELECT hash FROM audit_requests WHERE replica = $1 AND seq = $2 UNION ALL SELECT hash FROM audit_responses WHERE replica = $1 AND seq = $2
                """, [replica, String(seq)]).first?.first ?? nil
        }
        result.checkpoints = try AuditCheckpoint.check(checkpoints, key: key, chain: stored(1), lastSeq: result.lastSeq, holder: "PostgreSQL",
                                                       stored: stored)
        result.checkpointCount = checkpoints.count
        result.newestCheckpoint = checkpoints.last?.checkpoint.seq
    }

    /// One table of one replica, read in `seq` order a page at a time (keyset pagination).
    struct Page {
        struct Row {
            var table: String
            var seq: Int64
            var values: [SQLValue]
            var prevHash: String
            var hash: String
        }

        let pg: PostgresConnection
        let table: String
        let columns: [String]
        let replica: String
        let size: Int
        private var rows: [Row] = []
        private var index = 0
        private var after: Int64 = 0
        private var done = false

        init(pg: PostgresConnection, table: String, columns: [String], replica: String, size: Int) {
            self.pg = pg
            self.table = table
            self.columns = columns
            self.replica = replica
            self.size = size
        }

        mutating func peek() throws -> Row? {
            if index < rows.count { return rows[index] }
            guard !done else { return nil }
            try fetch()
            return index < rows.count ? rows[index] : nil
        }

        mutating func next() throws -> Row? {
            let row = try peek()
            if row != nil { index += 1 }
            return row
        }

        private mutating func fetch() throws {
            let extra = table == "audit_responses" ? ", upstream_body_is_text" : ""
            let page = try pg.execute("""
                SELECT \(columns.joined(separator: ", ")), hash\(extra) FROM \(table)
                 WHERE replica = $1 AND seq > $2 ORDER BY seq LIMIT \(size)
                """, [replica, String(after)])
            rows = try page.map { try Self.row($0, table: table, columns: columns) }
            index = 0
            done = page.count < size
            if let last = rows.last { after = last.seq }
        }

        /// The record's values as the writer hashed them: SQLite's types from PostgreSQL's text.
        static func row(_ cells: [String?], table: String, columns: [String]) throws -> Row {
            let types = table == "audit_requests" ? CentralAudit.requestTypes : CentralAudit.responseTypes
            var values: [SQLValue] = []
            values.reserveCapacity(columns.count)
            for (i, name) in columns.enumerated() {
                guard let text = cells[i] else {
                    values.append(.null)
                    continue
                }
                if types[name]?.hasPrefix("bytea") == true {
                    let bytes = Hex.decode(text.hasPrefix("\\x") ? String(text.dropFirst(2)) : text) ?? []
                    let isText = cells[columns.count + 1] == "t"
                    values.append(isText ? .text(String(decoding: bytes, as: UTF8.self)) : .blob(bytes))
                } else {
                    values.append(CentralAudit.value(text, column: name))
                }
            }
            guard case .int(let seq) = values[0], let prevHash = cells[columns.count - 1], let hash = cells[columns.count] else {
                throw PostgresError(message: "\(table): a record without seq or hashes")
            }
            return Row(table: table, seq: seq, values: values, prevHash: prevHash, hash: hash)
        }
    }
}
