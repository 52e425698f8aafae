// Threads: the CLI (`audit verify`), inside the verify's read transaction.

/// Checks `audit_summary_hooks` and `audit_summary_teams` against the records while `AuditChain.verify` streams them: counts
/// every record up to the last batch (`audit_batches`) by day, team, hook, decision and status,
/// and compares each day with the summary's rows for it once the stream has moved on (days are
/// near-monotonic in seq order). Memory stays bounded: a few open days, and the keys of requests
/// still waiting for their response (capped; past the cap, a response reads its request's key
/// from the file). A response that arrives for a day already compared (only possible in a file
/// not written by a gateway) has that day compared again at the end with one GROUP BY.
final class SummaryCheck {
    typealias IDKey = AuditDerived.IDKey

    /// A summary row's key within one day.
    struct Cell: Hashable, Comparable {
        var team: String?
        var hook: IDKey
        var decision: String
        var status: Int64?

        static func < (a: Cell, b: Cell) -> Bool {
            AuditDerived.SummaryKey(day: "", team: a.team, hook: a.hook, decision: a.decision, status: a.status)
                < AuditDerived.SummaryKey(day: "", team: b.team, hook: b.hook, decision: b.decision, status: b.status)
        }
    }

    /// Records up to this seq are covered by the summary.
    let watermark: Int64
    private let db: SQLiteConnection
    /// The days being counted (a few; the newest last).
    private var open: [(day: String, counts: [Cell: Int64])] = []
    private var checked: Set<String> = []
    private var late: Set<String> = []
    private var waiting: [Int64: (day: String, cell: Cell)] = [:]
    private let requestKey: SQLiteStatement
    private let hookRows: SQLiteStatement
    private let teamRows: SQLiteStatement
    private static let openDayLimit = 3
    /// Requests remembered until their response (some 8 MB); past it, a response reads its
    /// request from the file.
    private let waitingLimit: Int

    /// Nil when the file has no derived tables (schema before 3).
    init?(_ db: SQLiteConnection, waitingLimit: Int = 1 << 16) throws(AuditError) {
        guard try db.scalarInt("""
            SELECT count(*) FROM sqlite_master WHERE name IN ('audit_summary_hooks', 'audit_summary_teams', 'audit_batches')
            """) == 3 else {
            return nil
        }
        self.db = db
        self.waitingLimit = waitingLimit
        watermark = try AuditDerived.watermark(db)
        requestKey = try db.prepare("SELECT substr(received_at, 1, 10), team, hook_id, decision FROM audit_requests WHERE seq = ?1")
        hookRows = try db.prepare("SELECT team, hook_id, decision, status, calls FROM audit_summary_hooks WHERE day = ?1 AND calls <> 0")
        teamRows = try db.prepare("SELECT team, '', decision, status, calls FROM audit_summary_teams WHERE day = ?1 AND calls <> 0")
    }

    /// The columns of a request row as `AuditChain.verify` reads it (`AuditSchema.requestColumns`).
    func request(seq: Int64, row: SQLiteStatement) throws(AuditError) -> String? {
        guard seq <= watermark else { return nil }
        let received = row.raw(2).bytes
        let day = String(decoding: UnsafeRawBufferPointer(rebasing: received.prefix(10)), as: UTF8.self)
        let cell = Cell(team: row.text(4), hook: IDKey(row.raw(8)), decision: row.text(10) ?? "", status: nil)
        if waiting.count >= waitingLimit { waiting.removeAll() }
        waiting[seq] = (day, cell)
        return try count(day, cell, 1)
    }

    /// A response row (`AuditSchema.responseColumns`) and its request's seq.
    func response(seq: Int64, requestSeq: Int64, row: SQLiteStatement) throws(AuditError) -> String? {
        guard seq <= watermark else { return nil }
        var found = waiting.removeValue(forKey: requestSeq)
        if found == nil { found = try read(requestSeq) }
        guard let (day, cell) = found else { return nil }
        if let mismatch = try count(day, cell, -1) { return mismatch }
        var final = cell
        final.decision = row.text(3) ?? ""
        final.status = row.int(4)
        return try count(day, final, 1)
    }

    /// Compares what is left; the first disagreement, or nil.
    func finish() throws(AuditError) -> String? {
        while let first = open.first {
            if let mismatch = try close(first.day) { return mismatch }
        }
        for day in late.sorted() {
            if let mismatch = try compare(day, expected: try countedBySQL(day)) { return mismatch }
        }
        for table in ["audit_summary_hooks", "audit_summary_teams"] {
            let days = try db.prepare("SELECT DISTINCT day FROM \(table) WHERE calls <> 0 ORDER BY day")
            defer { days.reset() }
            while try days.step() {
                let day = days.text(0) ?? ""
                if !checked.contains(day) {
                    return "\(table) counts calls on \(day), a day without records up to seq \(watermark)"
                }
            }
        }
        return nil
    }

    private func read(_ requestSeq: Int64) throws(AuditError) -> (day: String, cell: Cell)? {
        try requestKey.bind([.int(requestSeq)])
        defer { requestKey.reset() }
        guard try requestKey.step() else { return nil }
        return (requestKey.text(0) ?? "", Cell(team: requestKey.text(1), hook: IDKey(requestKey.text(2)),
                                              decision: requestKey.text(3) ?? "", status: nil))
    }

    private func count(_ day: String, _ cell: Cell, _ delta: Int64) throws(AuditError) -> String? {
        // The newest day first: almost every record is on it.
        var i = open.count - 1
        while i >= 0, open[i].day != day { i -= 1 }
        if i >= 0 {
            open[i].counts[cell, default: 0] += delta
            return nil
        }
        if checked.contains(day) {
            late.insert(day)
            return nil
        }
        open.append((day, [cell: delta]))
        while open.count > Self.openDayLimit {
            if let mismatch = try close(open[0].day) { return mismatch }
        }
        return nil
    }

    private func close(_ day: String) throws(AuditError) -> String? {
        guard let i = open.firstIndex(where: { $0.day == day }) else { return nil }
        let counted = open.remove(at: i).counts
        checked.insert(day)
        return late.contains(day) ? nil : try compare(day, expected: counted)
    }

    /// Both summaries' rows for `day` against `expected` (zero counts ignored).
    private func compare(_ day: String, expected: [Cell: Int64]) throws(AuditError) -> String? {
        if let mismatch = try compare(day, expected: expected, table: "audit_summary_hooks", rows: hookRows) { return mismatch }
        var byTeam: [Cell: Int64] = [:]
        for (cell, n) in expected {
            var team = cell
            team.hook = .none
            byTeam[team, default: 0] += n
        }
        return try compare(day, expected: byTeam, table: "audit_summary_teams", rows: teamRows)
    }

    private func compare(_ day: String, expected: [Cell: Int64], table: String, rows: SQLiteStatement) throws(AuditError) -> String? {
        var stored: [Cell: Int64] = [:]
        try rows.bind([.text(day)])
        defer { rows.reset() }
        while try rows.step() {
            let status = rows.int(3)
            let team = rows.text(0) ?? "", hook = rows.text(1) ?? ""
            let cell = Cell(team: team.isEmpty ? nil : team, hook: IDKey(hook.isEmpty ? nil : hook),
                            decision: rows.text(2) ?? "", status: status == 0 ? nil : status)
            stored[cell, default: 0] += rows.int(4)
        }
        let differs = stored.contains { expected[$0.key, default: 0] != $0.value }
            || expected.contains { $0.value != 0 && stored[$0.key, default: 0] != $0.value }
        guard differs else { return nil }
        // Name the first row that differs, in the table's order.
        let hooks = table == "audit_summary_hooks"
        for cell in Set(stored.keys).union(expected.keys).sorted() {
            let inSummary = stored[cell] ?? 0, inRecords = expected[cell] ?? 0
            guard inSummary != inRecords else { continue }
            return "\(table) on \(day), team \(cell.team ?? "(none)"), "
                + (hooks ? "hook \(cell.hook.text ?? "(none)"), " : "")
                + "decision \(cell.decision), status \(cell.status.map(String.init) ?? "(no response)") "
                + "counts \(inSummary) calls; the records up to seq \(watermark) hold \(inRecords)"
        }
        return nil
    }

    /// The summary's definition for one day, in SQL (for days the stream could not count alone).
    private func countedBySQL(_ day: String) throws(AuditError) -> [Cell: Int64] {
        let statement = try db.prepare("""
            SELECT q.team, q.hook_id,
                   CASE WHEN r.seq <= ?2 THEN r.decision ELSE q.decision END,
                   CASE WHEN r.seq <= ?2 THEN r.status END, count(*)
              FROM audit_requests q LEFT JOIN audit_responses r ON r.request_id = q.request_id
             WHERE q.received_at >= ?1 AND q.received_at < ?1 || 'U' AND q.seq <= ?2
             GROUP BY 1, 2, 3, 4
            """)
        try statement.bind([.text(day), .int(watermark)])
        defer { statement.reset() }
        var counted: [Cell: Int64] = [:]
        while try statement.step() {
            let cell = Cell(team: statement.text(0), hook: IDKey(statement.text(1)), decision: statement.text(2) ?? "",
                            status: statement.isNull(3) ? nil : statement.int(3))
            counted[cell, default: 0] += statement.int(4)
        }
        return counted
    }
}
