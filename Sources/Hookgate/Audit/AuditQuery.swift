import CSQLite
import Foundation

/// Read-only access to an audit database for `hookgate audit` and compliance tooling.
///
/// The file is opened with `SQLITE_OPEN_READONLY`: nothing is ever written, the journal mode
/// is left alone, and a missing file is an error (never created). Because the gateway keeps
/// the database in WAL mode, this works while the gateway writes; each query sees one
/// consistent snapshot. One instance is used by one thread at a time.
public final class AuditQuery {
    public let path: String
    private let db: SQLiteConnection
    /// The file has the derived tables of schema 3 (summaries, the lookup by Hookshot request id).
    public let hasDerivedTables: Bool

    /// The columns of the `audit_pairs` view, in order: the shape of every row returned by
    /// `list(_:)` and `forEachPair(_:_:)`.
    public static let pairColumns = AuditSchema.pairColumns

    public init(path: String) throws(AuditQueryError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw .noSuchFile(path)
        }
        guard !isDirectory.boolValue else { throw .notAuditDatabase(path, why: "it is a directory") }
        let connection: SQLiteConnection
        do throws(AuditError) {
            connection = try SQLiteConnection(path: path, readOnly: true)
        } catch {
            throw .sqlite(error)
        }
        self.path = path
        self.db = connection
        let found: Int64
        do throws(AuditError) {
            // A reader waits rather than failing at once on the rare WAL lock (recovery, checkpoint).
            try connection.execute("PRAGMA busy_timeout = 5000")
            found = try connection.scalarInt("""
                SELECT count(*) FROM sqlite_master
                 WHERE (type = 'table' AND name IN ('audit_requests', 'audit_responses'))
                    OR (type = 'view' AND name = 'audit_pairs')
                """) ?? 0
        } catch {
            connection.close()
            if error.primaryResultCode == SQLITE_NOTADB {
                throw .notAuditDatabase(path, why: "not an SQLite database")
            }
            throw .sqlite(error)
        }
        guard found == 3 else {
            connection.close()
            throw .notAuditDatabase(path, why: "no audit_requests, audit_responses and audit_pairs")
        }
        do throws(AuditError) {
            hasDerivedTables = try connection.scalarInt("""
                SELECT count(*) FROM sqlite_master
                 WHERE type = 'table' AND name IN ('audit_batches', 'audit_summary_hooks', 'audit_summary_teams', 'audit_event_lookup')
                """) == 4
        } catch {
            connection.close()
            throw .sqlite(error)
        }
    }

    deinit { db.close() }

    // MARK: - verify

    /// Checks the whole hash chain (`AuditChain.verify`) in one read transaction, and reads
    /// the newest record's seq and hash (worth noting outside the database: see `hash(seq:)`).
    /// Checks the whole chain in constant memory (`AuditChain.verify`). `progress`, if given, is
    /// called now and then with (records checked, records in all).
    /// The derived tables (summaries, lookup) are checked against the records at the same time,
    /// on a second thread and connection (`AuditDerivedCheck`).
    /// The chain starts where the file's `audit_file` row says (seq 1 but in a rotated file).
    public func verify(progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws(AuditQueryError) -> AuditVerification {
        let derived = hasDerivedTables ? AuditDerivedCheck.Running(path: path) : nil
        var chain: AuditVerification
        do {
            chain = try verifyChain(progress: progress)
        } catch {
            _ = derived?.wait()
            throw error
        }
        switch derived?.wait() {
        case .success(let outcome?):
            chain.derivedThrough = outcome.through
            chain.derivedMismatch = outcome.mismatch
        case .failure(let error): throw .sqlite(error)
        case .success(nil), nil: break
        }
        return chain
    }

    private func verifyChain(progress: ((_ done: Int, _ total: Int) -> Void)?) throws(AuditQueryError) -> AuditVerification {
        try readTransaction { () throws(AuditError) -> AuditVerification in
            let segment = try AuditSegment.read(db)
            let report = try AuditChain.verify(db, start: (segment.firstSeq, segment.prevHash), progress: progress)
            var result = AuditVerification(records: report.records, pairs: report.pairs,
                                           incomplete: report.incomplete, broken: report.broken)
            result.responsesToEarlierFile = report.responsesToEarlierFile
            let head = try db.prepare("""
                SELECT seq, hash FROM audit_requests UNION ALL SELECT seq, hash FROM audit_responses
                 ORDER BY seq DESC LIMIT 1
                """)
            if try head.step(), !head.isNull(0), let hash = head.text(1) {
                result.lastSeq = head.int(0)
                result.lastHash = hash
            }
            head.reset()
            return result
        }
    }

    /// Which of these gateway request ids have a request record here.
    package func requestSeqs(_ ids: [String]) throws(AuditQueryError) -> [String: Int64] {
        try readTransaction { () throws(AuditError) -> [String: Int64] in
            let statement = try db.prepare("SELECT seq FROM audit_requests WHERE request_id = ?1")
            var found: [String: Int64] = [:]
            for id in ids {
                try statement.bind([.text(id)])
                if try statement.step() { found[id] = statement.int(0) }
                statement.reset()
            }
            return found
        }
    }

    /// The stored hash of the record with this `seq` (either table), or nil if there is none.
    public func hash(seq: Int64) throws(AuditQueryError) -> String? {
        try readTransaction { () throws(AuditError) -> String? in
            let statement = try db.prepare("""
                SELECT hash FROM audit_requests WHERE seq = ?1
                UNION ALL SELECT hash FROM audit_responses WHERE seq = ?1
                """)
            try statement.bind([.int(seq)])
            defer { statement.reset() }
            guard try statement.step() else { return nil }
            return statement.text(0)
        }
    }

    /// Where the file's records sit in the chain (`audit_file`; a file from before rotation
    /// existed starts at seq 1).
    package func segment() throws(AuditQueryError) -> AuditSegment {
        try readTransaction { () throws(AuditError) -> AuditSegment in try AuditSegment.read(db) }
    }

    /// The chain's name: the hash of record seq 1, carried by every later file.
    package func chainID() throws(AuditQueryError) -> String? {
        try readTransaction { () throws(AuditError) -> String? in try AuditSegment.chainID(db, AuditSegment.read(db)) }
    }

    /// The signed checkpoints the file holds (none before schema 4), oldest first.
    package func checkpoints() throws(AuditQueryError) -> [AuditCheckpoint] {
        try readTransaction { () throws(AuditError) -> [AuditCheckpoint] in
            guard try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_checkpoints'") == 1 else {
                return []
            }
            let statement = try db.prepare("SELECT chain, seq, hash, at, key, signature FROM audit_checkpoints ORDER BY seq, rowid")
            defer { statement.reset() }
            var out: [AuditCheckpoint] = []
            while try statement.step() {
                out.append(AuditCheckpoint(chain: statement.text(0) ?? "", seq: statement.int(1), hash: statement.text(2) ?? "",
                                           at: statement.text(3) ?? "", key: statement.text(4) ?? "", signature: statement.text(5) ?? ""))
            }
            return out
        }
    }

    // MARK: - list / export

    /// Rows of `audit_pairs` matching `filter`, at most `filter.limit` of them; `truncated`
    /// tells whether more would have matched.
    /// `columns`: those of `pairColumns` to read (all by default), in this order.
    /// `next`: the file that follows this one in the chain (rotation): a call whose request is in
    /// this file and whose response went into the next one is listed whole.
    public func list(_ filter: AuditFilter, columns: [String] = AuditQuery.pairColumns, next: String? = nil) throws(AuditQueryError) -> AuditRows {
        var probe = filter
        if let limit = filter.limit, limit < Int.max { probe.limit = limit + 1 }
        var rows: [[SQLValue]] = []
        try run(probe, columns: columns, next: next) { rows.append($0); return true }
        var truncated = false
        if let limit = filter.limit, rows.count > limit {
            rows.removeLast(rows.count - limit)
            truncated = true
        }
        return AuditRows(columns: columns, rows: rows, truncated: truncated)
    }

    /// Streams the rows of `audit_pairs` matching `filter` (in `pairColumns` order) to `body`,
    /// without holding them all in memory. An error thrown by `body` stops the walk and is rethrown.
    public func forEachPair(_ filter: AuditFilter, next: String? = nil, _ body: ([SQLValue]) throws -> Void) throws {
        var failure: (any Error)?
        try run(filter, next: next) { row in
            do { try body(row) } catch { failure = error }
            return failure == nil
        }
        if let failure { throw failure }
    }

    /// Steps through the matching rows while `body` returns true.
    private func run(_ filter: AuditFilter, columns: [String] = AuditQuery.pairColumns, next: String? = nil,
                     _ body: ([SQLValue]) -> Bool) throws(AuditQueryError) {
        precondition(columns.allSatisfy(Self.pairColumns.contains), "not a column of audit_pairs")
        let (sql, parameters) = filter.query(eventLookup: hasDerivedTables, columns: columns)
        if let next { try attach(next) }
        defer { if next != nil { detach() } }
        try readTransaction { () throws(AuditError) in
            let statement = try db.prepare(sql)
            try statement.bind(parameters)
            defer { statement.reset() }
            let width = columns.count
            while try statement.step() {
                var row: [SQLValue] = []
                row.reserveCapacity(width)
                for i in 0..<width { row.append(statement.value(i)) }
                guard body(row) else { break }
            }
        }
    }

    /// The file after this one in the chain, attached read-only, and a temporary `audit_pairs`
    /// (found before the file's own) whose response comes from either file.
    private func attach(_ next: String) throws(AuditQueryError) {
        do throws(AuditError) {
            let attach = try db.prepare("ATTACH ?1 AS next_file")
            // Opened with this connection's flags: read-only.
            try attach.run([.text(next)])
            // As the file's own view (schema 1): request columns from the request record, the
            // decision from the response record if there is one, the rest from the response.
            let columns = Self.pairColumns.map { column in
                if column == "decision" { return "COALESCE(r.decision, n.decision, q.decision) AS decision" }
                if AuditSchema.requestColumns.contains(column) { return "q.\(column)" }
                return "CASE WHEN r.request_id IS NULL THEN n.\(column) ELSE r.\(column) END AS \(column)"
            }
            try db.execute("""
                CREATE TEMP VIEW audit_pairs AS SELECT \(columns.joined(separator: ", "))
                  FROM main.audit_requests q LEFT JOIN main.audit_responses r ON r.request_id = q.request_id
                  LEFT JOIN next_file.audit_responses n ON r.request_id IS NULL AND n.request_id = q.request_id
                """)
        } catch {
            detach()
            throw .sqlite(error)
        }
    }

    private func detach() {
        try? db.execute("DROP VIEW IF EXISTS temp.audit_pairs")
        try? db.execute("DETACH next_file")
    }

    // MARK: - show

    /// Every stored column of the request record with this gateway request id (any case) and
    /// of its response record, in table order; nil when there is no such request.
    public func show(requestID: String) throws(AuditQueryError) -> AuditRecordPair? {
        let id = UUIDText.canonical(requestID) ?? requestID
        return try readTransaction { () throws(AuditError) -> AuditRecordPair? in
            guard let request = try record(table: "audit_requests", requestID: id) else { return nil }
            return AuditRecordPair(request: request, response: try record(table: "audit_responses", requestID: id))
        }
    }

    /// The response record of this request id, when it is in this file (the request may be in
    /// the file before: a call in flight at a rotation).
    public func show(responseOf requestID: String) throws(AuditQueryError) -> [AuditField]? {
        let id = UUIDText.canonical(requestID) ?? requestID
        return try readTransaction { () throws(AuditError) -> [AuditField]? in try record(table: "audit_responses", requestID: id) }
    }

    /// `table` is one of two literals above, never user input.
    private func record(table: String, requestID: String) throws(AuditError) -> [AuditField]? {
        let statement = try db.prepare("SELECT * FROM \(table) WHERE request_id = ?1")
        try statement.bind([.text(requestID)])
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return (0..<statement.columnCount).map { AuditField(name: statement.columnName($0), value: statement.value($0)) }
    }

    // MARK: -

    /// Runs `body` in one deferred (read-only) transaction: one snapshot of both tables.
    private func readTransaction<T>(_ body: () throws(AuditError) -> T) throws(AuditQueryError) -> T {
        do throws(AuditError) {
            try db.execute("BEGIN")
            do throws(AuditError) {
                let result = try body()
                try db.execute("COMMIT")
                return result
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        } catch {
            throw .sqlite(error)
        }
    }
}

/// Why an audit database cannot be read.
public enum AuditQueryError: Error, CustomStringConvertible, Sendable {
    case noSuchFile(String)
    case notAuditDatabase(String, why: String)
    case sqlite(AuditError)

    public var description: String {
        switch self {
        case .noSuchFile(let path): "\(path): no such file"
        case .notAuditDatabase(let path, let why): "\(path): not a Hookgate audit database (\(why))"
        case .sqlite(let error): error.description
        }
    }
}

/// The outcome of `hookgate audit verify`.
public struct AuditVerification: Sendable, Equatable {
    /// Records checked (request and response records together).
    public var records: Int
    /// Requests with their response record.
    public var pairs: Int
    /// Requests without a response record (in flight, or the gateway stopped in between).
    public var incomplete: Int
    /// nil when the chain is whole; else the first record that breaks it and why.
    public var broken: String?
    /// The derived tables (both summaries, the lookup by Hookshot request id) cover the records up
    /// to this seq and were compared with them; nil when the file has none (written before schema
    /// 3: `hookgate audit rebuild` adds them).
    public var derivedThrough: Int64? = nil
    /// The first derived row that disagrees with the records, or nil.
    public var derivedMismatch: String? = nil
    /// The newest record's seq and hash (nil for an empty database).
    public var lastSeq: Int64?
    public var lastHash: String?
    /// A rotated file's responses to requests in the file before it (checked when both are given).
    public var responsesToEarlierFile: [String] = []

    /// The chain is whole (the summaries may still disagree: `derivedMismatch`).
    public var isIntact: Bool { broken == nil }
}

/// `audit_pairs` rows in `columns` order.
public struct AuditRows: Sendable, Equatable {
    public var columns: [String]
    public var rows: [[SQLValue]]
    /// More rows matched than the filter's limit.
    public var truncated: Bool

    public init(columns: [String], rows: [[SQLValue]], truncated: Bool) {
        self.columns = columns
        self.rows = rows
        self.truncated = truncated
    }
}

/// One stored column of one record.
public struct AuditField: Sendable, Equatable {
    public var name: String
    public var value: SQLValue
}

/// Both records of one request, every stored column in table order.
public struct AuditRecordPair: Sendable, Equatable {
    public var request: [AuditField]
    /// nil when the request has no response record.
    public var response: [AuditField]?
}

extension Array where Element == AuditField {
    /// The value of the column `name`, or nil when there is no such column.
    public subscript(column name: String) -> SQLValue? { first { $0.name == name }?.value }
}
