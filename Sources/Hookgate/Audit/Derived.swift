// Threads: whoever holds the connection: the audit writer thread (AuditFile), or a CLI command
// (`audit rebuild`, the generator). Values and one-thread helpers; nothing here is shared.

/// What is derived from the audit records so that compliance's lookups and reports stay fast at
/// a year of traffic (docs/audit.md, "Summaries and the lookup by Hookshot request id"):
///
/// - `audit_summary_hooks`: calls by UTC day, team, hook, decision and status (status null: no
///   response record yet), kept as counts, and `audit_summary_teams` the same without the hook
///   (a few rows a day: reports by team read it in milliseconds);
/// - `audit_event_lookup`: (batch, the Hookshot request id as 16 bytes, seq) for every request
///   record that names one, sorted within each batch.
///
/// Both are written in **batches**: a batch covers every record from `first_seq` to `last_seq`
/// (a row of `audit_batches`), and is written in the same transaction as the records that end
/// it, so what is derived never disagrees with the records it covers. Records after the last
/// batch (the "tail", at most a few thousand) are read from the tables themselves by the view
/// `audit_daily`, `audit_daily_hooks` and by the lookup. Each batch's lookup rows go to the right edge of their
/// B-tree in key order, and each summary row is touched once per batch rather than once per
/// call: that is what keeps the writer's cost small (bench/AUDIT.md).
package enum AuditDerived {
    /// Records per batch on the writer, at most: about 16 k calls, so a 10 M-call file has some
    /// 600 batches (a lookup is 600 index probes), and a summary row is rewritten at most once per
    /// 16 k calls. Writing a batch takes some 25 ms (bench/AUDIT.md); a writer that has had
    /// nothing to do for a moment writes one as soon as it has half this many records.
    package static let writerBatchRecords = 32768
    /// Records per batch when (re)building from the records.
    package static let rebuildBatchRecords = 1 << 20

    /// The day (`YYYY-MM-DD`) of a stored UTC time.
    package static func day(of stored: String) -> String {
        String(decoding: stored.utf8.prefix(10), as: UTF8.self)
    }

    /// The seq through which derived data is written (0: none yet).
    /// In a file rotation started, before its first batch: the record before its first.
    package static func watermark(_ db: SQLiteConnection) throws(AuditError) -> Int64 {
        if let last = try db.scalarInt("SELECT last_seq FROM audit_batches ORDER BY first_seq DESC LIMIT 1") { return last }
        return try AuditSegment.read(db).firstSeq - 1
    }

    /// Records after the last batch (what `catchUp` would derive).
    package static func underived(_ db: SQLiteConnection) throws(AuditError) -> Int64 {
        try head(db) - watermark(db)
    }

    /// The newest record's seq (0: none).
    static func head(_ db: SQLiteConnection) throws(AuditError) -> Int64 {
        try max(db.scalarInt("""
            SELECT max(COALESCE((SELECT max(seq) FROM audit_requests), 0), COALESCE((SELECT max(seq) FROM audit_responses), 0))
            """) ?? 0, AuditSegment.read(db).firstSeq - 1)
    }

    /// The lookup key of a Hookshot request id: its 16 bytes for a UUID (any case), else the text
    /// as stored (the gateway stores canonical UUIDs only, but other tools may not).
    package static func eventKey(_ id: String) -> SQLValue {
        guard let (high, low) = UUIDText.bits(id) else { return .text(id) }
        return .blob(bytes(high: high, low: low))
    }

    static func bytes(high: UInt64, low: UInt64) -> [UInt8] {
        (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? high : low) >> UInt64(56 - 8 * (i % 8))) }
    }

    /// Writes derived data for every record after the watermark, in batches of `batchRecords`
    /// records, each in its own transaction; returns the new watermark. The writer runs it when
    /// it opens the file (after a crash the tail is a few thousand records); `rebuild` and the
    /// migration of an older file run it over everything. `progress` gets (records done, records).
    @discardableResult
    package static func catchUp(_ db: SQLiteConnection, batchRecords: Int = rebuildBatchRecords,
                                progress: ((_ done: Int64, _ total: Int64) -> Void)? = nil) throws(AuditError) -> Int64 {
        let head = try head(db)
        let start = try watermark(db)
        var through = start
        while through < head {
            // The watermark is read again inside each transaction: a gateway writing the same
            // file meanwhile may have moved it (see `write(_:_:through:)`).
            try transaction(db) { () throws(AuditError) in
                through = try watermark(db)
                guard through < head else { return }
                let last = min(head, through + Int64(batchRecords))
                try derive(db, after: through, through: last).write(db, lastSeq: last)
                through = last
            }
            progress?(through - start, head - start)
        }
        return through
    }

    /// The batch of records `after+1 ... through`, read from the file.
    static func derive(_ db: SQLiteConnection, after: Int64, through last: Int64) throws(AuditError) -> Batch {
        let requests = try db.prepare("""
            SELECT seq, substr(received_at, 1, 10), team, hook_id, decision, event_request_id
              FROM audit_requests WHERE seq > ?1 AND seq <= ?2 ORDER BY seq
            """)
        let responses = try db.prepare("""
            SELECT r.seq, r.decision, r.status, substr(q.received_at, 1, 10), q.team, q.hook_id, q.decision
              FROM audit_responses r JOIN audit_requests q ON q.request_id = r.request_id
             WHERE r.seq > ?1 AND r.seq <= ?2 ORDER BY r.seq
            """)
        var batch = Batch(firstSeq: after + 1)
        try requests.bind([.int(after), .int(last)])
        while try requests.step() {
            let key = SummaryKey(day: requests.text(1) ?? "", team: requests.text(2), hook: IDKey(requests.raw(3)),
                                 decision: requests.text(4) ?? "", status: nil)
            batch.request(seq: requests.int(0), key: key, eventRequestID: requests.text(5))
        }
        requests.reset()
        try responses.bind([.int(after), .int(last)])
        while try responses.step() {
            let key = SummaryKey(day: responses.text(3) ?? "", team: responses.text(4), hook: IDKey(responses.raw(5)),
                                 decision: responses.text(6) ?? "", status: nil)
            batch.response(requestKey: key, decision: responses.text(1) ?? "", status: responses.int(2))
        }
        responses.reset()
        return batch
    }

    /// Writes `batch` (the writer's, in memory) covering up to `last`, inside the caller's
    /// transaction, if it holds every record since the watermark. Otherwise someone else wrote to
    /// the file meanwhile (`hookgate audit rebuild` run against a live file moved the watermark, or
    /// another gateway process added records in between): what is not yet covered is read from
    /// the file. Returns the batch that follows.
    /// When the file is further behind than `limit` records (a rebuild under way), nothing is
    /// written: the next batch is read from the file (`Batch.unknown`).
    static func write(_ batch: Batch, _ db: SQLiteConnection, through last: Int64, limit: Int64) throws(AuditError) -> Batch {
        let covered = try watermark(db)
        if covered == batch.firstSeq - 1, Int64(batch.records) == last - covered {
            try batch.write(db, lastSeq: last)
        } else if covered < last {
            guard last - covered <= limit else { return Batch(firstSeq: Batch.unknown) }
            try derive(db, after: covered, through: last).write(db, lastSeq: last)
        }
        return Batch(firstSeq: max(covered, last) + 1)
    }

    /// Empties the derived tables and writes them again from the records alone (the records are
    /// not touched). For a file restored from a backup, written by other tools, or whose derived
    /// tables `audit verify` found wrong.
    package static func rebuild(_ db: SQLiteConnection, progress: ((_ done: Int64, _ total: Int64) -> Void)? = nil) throws(AuditError) {
        try transaction(db) { () throws(AuditError) in
            try db.execute("""
                DELETE FROM audit_summary_hooks; DELETE FROM audit_summary_teams; DELETE FROM audit_event_lookup;
                DELETE FROM audit_batches
                """)
        }
        try catchUp(db, progress: progress)
    }

    /// What `hookgate audit rebuild` did.
    package struct Rebuilt: Sendable {
        package var records: Int64
        package var batches: Int64
        package var summaryRows: Int64
        package var lookupRows: Int64
    }

    /// `hookgate audit rebuild`: opens the file for writing (migrating an older schema), then
    /// rebuilds everything derived from the records.
    package static func rebuild(path: String, progress: ((_ done: Int64, _ total: Int64) -> Void)? = nil) throws(AuditError) -> Rebuilt {
        let db = try AuditSchema.openForWriting(path: path, durability: .full, busyTimeoutMs: 10_000, catchUp: false)
        defer { db.close() }
        try rebuild(db, progress: progress)
        return Rebuilt(records: try watermark(db),
                       batches: try db.scalarInt("SELECT count(*) FROM audit_batches") ?? 0,
                       summaryRows: try db.scalarInt("SELECT count(*) FROM audit_summary_hooks") ?? 0,
                       lookupRows: try db.scalarInt("SELECT count(*) FROM audit_event_lookup") ?? 0)
    }

    /// Inserts rows of `width` values each, many rows per statement (`INSERT ... VALUES (...),
    /// (...), ...`): a batch's thousands of rows cost a fraction of one statement each.
    static func insertRows(_ db: SQLiteConnection, _ head: String, width: Int, values: [SQLValue],
                           then tail: String = "") throws(AuditError) {
        let perStatement = 192 / width, rows = values.count / width
        func statement(_ n: Int) throws(AuditError) -> SQLiteStatement {
            let row = "(" + Array(repeating: "?", count: width).joined(separator: ", ") + ")"
            return try db.prepare(head + " VALUES " + Array(repeating: row, count: n).joined(separator: ", ") + " " + tail)
        }
        var done = 0
        if rows >= perStatement {
            let full = try statement(perStatement)
            while rows - done >= perStatement {
                try full.run(Array(values[(done * width)..<((done + perStatement) * width)]))
                done += perStatement
            }
        }
        if done < rows { try statement(rows - done).run(Array(values[(done * width)...])) }
    }

    static func transaction(_ db: SQLiteConnection, _ body: () throws(AuditError) -> Void) throws(AuditError) {
        try db.execute("BEGIN IMMEDIATE")
        do throws(AuditError) {
            try body()
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
    }

    /// A hook (or request) id as derived data is counted in memory: a UUID as its 128 bits (hashed
    /// and compared as two integers, no string made per record), anything else (other tools) as text.
    package enum IDKey: Hashable, Comparable, Sendable {
        case none
        case uuid(UInt64, UInt64)
        case text(String)

        package init(_ text: String?) {
            guard let text else { self = .none; return }
            if let (high, low) = UUIDText.bits(text) { self = .uuid(high, low) } else { self = .text(text) }
        }

        init(_ column: SQLiteStatement.RawColumn) {
            switch column.type {
            case .null: self = .none
            case .text, .blob:
                if let (high, low) = UUIDText.bits(column.bytes) { self = .uuid(high, low); return }
                self = .text(String(decoding: column.bytes, as: UTF8.self))
            case .int: self = .text(String(column.int))
            case .double: self = .text(String(column.double))
            }
        }

        /// As stored (a UUID in lower case).
        package var text: String? {
            switch self {
            case .none: nil
            case .uuid(let high, let low): UUIDText.format(high: high, low: low)
            case .text(let t): t
            }
        }
    }

    /// A row key of `audit_summary_hooks` (with `hook` `.none`: of `audit_summary_teams`).
    package struct SummaryKey: Hashable, Comparable, Sendable {
        package var day: String
        package var team: String?
        package var hook: IDKey
        package var decision: String
        /// nil: the call has no response record (yet).
        package var status: Int64?

        /// An order close to the table's (for writing rows in key order, and naming the first
        /// row that differs); UUID hooks sort as their text does.
        package static func < (a: SummaryKey, b: SummaryKey) -> Bool {
            if a.day != b.day { return a.day < b.day }
            if a.team != b.team { return (a.team ?? "") < (b.team ?? "") }
            if a.hook != b.hook { return a.hook < b.hook }
            if a.decision != b.decision { return a.decision < b.decision }
            return (a.status ?? 0) < (b.status ?? 0)
        }
    }

    /// What one batch of records adds to the derived tables.
    package struct Batch {
        /// `firstSeq` of a batch whose records are not known in memory: it is read from the file.
        static let unknown: Int64 = -1
        package let firstSeq: Int64
        /// Count changes by summary row: +1 for a request (no status yet); for its response -1
        /// there and +1 under the final decision and status.
        package private(set) var summary: [SummaryKey: Int64] = [:]
        /// Lookup rows: a UUID's two halves (the usual case, sorted as numbers: the same order as
        /// their 16 big-endian bytes), or an id that is not a UUID, as text.
        package private(set) var events: [(high: UInt64, low: UInt64, seq: Int64)] = []
        package private(set) var otherEvents: [(id: String, seq: Int64)] = []
        package private(set) var records = 0

        package init(firstSeq: Int64) { self.firstSeq = firstSeq }

        package mutating func request(seq: Int64, key: SummaryKey, eventRequestID: String?) {
            summary[key, default: 0] += 1
            if let eventRequestID {
                if let (high, low) = UUIDText.bits(eventRequestID) {
                    events.append((high, low, seq))
                } else {
                    otherEvents.append((eventRequestID, seq))
                }
            }
            records += 1
        }

        /// `requestKey` nil: a response without its request record (verify names it); not counted.
        package mutating func response(requestKey: SummaryKey?, decision: String, status: Int64) {
            records += 1
            guard let requestKey else { return }
            summary[requestKey, default: 0] -= 1
            var final = requestKey
            final.decision = decision
            final.status = status
            summary[final, default: 0] += 1
        }

        /// Writes the batch, covering records `firstSeq...lastSeq`, inside the caller's transaction.
        package func write(_ db: SQLiteConnection, lastSeq: Int64) throws(AuditError) {
            // Null team, hook and status are stored as '', '' and 0 (a key column of a WITHOUT
            // ROWID table cannot be null); the views turn them back into nulls.
            var hookRows: [SQLValue] = [], byTeam: [SummaryKey: Int64] = [:]
            hookRows.reserveCapacity(summary.count * 6)
            for (key, delta) in summary.sorted(by: { $0.key < $1.key }) where delta != 0 {
                hookRows += [.text(key.day), .text(key.team ?? ""), .text(key.hook.text ?? ""), .text(key.decision),
                             .int(key.status ?? 0), .int(delta)]
                var team = key
                team.hook = .none
                byTeam[team, default: 0] += delta
            }
            try AuditDerived.insertRows(db, "INSERT INTO audit_summary_hooks (day, team, hook_id, decision, status, calls)", width: 6,
                                        values: hookRows, then: """
                                            ON CONFLICT (day, team, hook_id, decision, status) DO UPDATE SET calls = calls + excluded.calls
                                            """)
            var teamRows: [SQLValue] = []
            for (key, delta) in byTeam.sorted(by: { $0.key < $1.key }) where delta != 0 {
                teamRows += [.text(key.day), .text(key.team ?? ""), .text(key.decision), .int(key.status ?? 0), .int(delta)]
            }
            try AuditDerived.insertRows(db, "INSERT INTO audit_summary_teams (day, team, decision, status, calls)", width: 5,
                                        values: teamRows, then: """
                                            ON CONFLICT (day, team, decision, status) DO UPDATE SET calls = calls + excluded.calls
                                            """)
            // In the table's order (SQLite orders text before blobs), at the end of its B-tree.
            var lookupRows: [SQLValue] = []
            lookupRows.reserveCapacity((events.count + otherEvents.count) * 3)
            for event in otherEvents.sorted(by: { a, b in a.id == b.id ? a.seq < b.seq : a.id.utf8.lexicographicallyPrecedes(b.id.utf8) }) {
                lookupRows += [.int(firstSeq), .text(event.id), .int(event.seq)]
            }
            for event in events.sorted(by: { ($0.high, $0.low, $0.seq) < ($1.high, $1.low, $1.seq) }) {
                lookupRows += [.int(firstSeq), .blob(AuditDerived.bytes(high: event.high, low: event.low)), .int(event.seq)]
            }
            try AuditDerived.insertRows(db, "INSERT INTO audit_event_lookup (bucket, event_key, seq)", width: 3, values: lookupRows)
            let covered = try db.prepare("INSERT INTO audit_batches (first_seq, last_seq, event_ids) VALUES (?1, ?2, ?3)")
            try covered.run([.int(firstSeq), .int(lastSeq), .int(Int64(events.count + otherEvents.count))])
        }
    }
}
