// Threads: the CLI (`audit verify`), inside the verify's read transaction.

/// Checks `audit_summary_hooks` and `audit_summary_teams` against the records while `AuditChain.verify` streams them: counts
/// every record up to the last batch (`audit_batches`) by day, team, hook, decision and status,
/// and compares each day with the summary's rows for it once the stream has moved on (days are
/// near-monotonic in seq order). Memory stays bounded: a few open days, and the keys of requests
/// still waiting for their response (capped; past the cap, a response reads its request's key
/// from the file). A response that arrives for a day already compared (only possible in a file
/// not written by a gateway) has that day compared again at the end with one GROUP BY.
final class SummaryCheck {
    typealias Key = AuditDerived.SummaryKey

    /// Records up to this seq are covered by the summary.
    let watermark: Int64
    private let db: SQLiteConnection
    private var days: [String: [Key: Int64]] = [:]
    private var openDays: [String] = []
    private var checked: Set<String> = []
    private var late: Set<String> = []
    private var waiting: [Int64: Key] = [:]
    private let requestKey: SQLiteStatement
    private let hookRows: SQLiteStatement
    private let teamRows: SQLiteStatement
    private static let openDayLimit = 3
    private static let waitingLimit = 1 << 20

    /// Nil when the file has no derived tables (schema before 3).
    init?(_ db: SQLiteConnection) throws(AuditError) {
        guard try db.scalarInt("""
            SELECT count(*) FROM sqlite_master WHERE name IN ('audit_summary_hooks', 'audit_summary_teams', 'audit_batches')
            """) == 3 else {
            return nil
        }
        self.db = db
        watermark = try AuditDerived.watermark(db)
        requestKey = try db.prepare("SELECT substr(received_at, 1, 10), team, hook_id, decision FROM audit_requests WHERE seq = ?1")
        hookRows = try db.prepare("SELECT team, hook_id, decision, status, calls FROM audit_summary_hooks WHERE day = ?1 AND calls <> 0")
        teamRows = try db.prepare("SELECT team, '', decision, status, calls FROM audit_summary_teams WHERE day = ?1 AND calls <> 0")
    }

    /// The columns of a request row as `AuditChain.verify` reads it (`AuditSchema.requestColumns`).
    func request(seq: Int64, row: SQLiteStatement) throws(AuditError) -> String? {
        guard seq <= watermark else { return nil }
        let received = row.text(2) ?? ""
        let key = Key(day: AuditDerived.day(of: received), team: row.text(4), hookID: row.text(8),
                      decision: row.text(10) ?? "", status: nil)
        if waiting.count >= Self.waitingLimit { waiting.removeAll() }
        waiting[seq] = key
        return try count(key, 1)
    }

    /// A response row (`AuditSchema.responseColumns`) and its request's seq.
    func response(seq: Int64, requestSeq: Int64, row: SQLiteStatement) throws(AuditError) -> String? {
        guard seq <= watermark else { return nil }
        var key = waiting.removeValue(forKey: requestSeq)
        if key == nil { key = try read(requestSeq) }
        guard let key else { return nil }
        if let mismatch = try count(key, -1) { return mismatch }
        var final = key
        final.decision = row.text(3) ?? ""
        final.status = row.int(4)
        return try count(final, 1)
    }

    /// Compares what is left; the first disagreement, or nil.
    func finish() throws(AuditError) -> String? {
        while let day = openDays.first {
            if let mismatch = try close(day) { return mismatch }
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

    private func read(_ requestSeq: Int64) throws(AuditError) -> Key? {
        try requestKey.bind([.int(requestSeq)])
        defer { requestKey.reset() }
        guard try requestKey.step() else { return nil }
        return Key(day: requestKey.text(0) ?? "", team: requestKey.text(1), hookID: requestKey.text(2),
                   decision: requestKey.text(3) ?? "", status: nil)
    }

    private func count(_ key: Key, _ delta: Int64) throws(AuditError) -> String? {
        if checked.contains(key.day) {
            late.insert(key.day)
            return nil
        }
        if days[key.day] == nil {
            days[key.day] = [:]
            openDays.append(key.day)
        }
        days[key.day]![key, default: 0] += delta
        while openDays.count > Self.openDayLimit {
            if let mismatch = try close(openDays[0]) { return mismatch }
        }
        return nil
    }

    private func close(_ day: String) throws(AuditError) -> String? {
        openDays.removeAll { $0 == day }
        let counted = days.removeValue(forKey: day) ?? [:]
        checked.insert(day)
        return late.contains(day) ? nil : try compare(day, expected: counted)
    }

    /// Both summaries' rows for `day` against `expected` (zero counts ignored).
    private func compare(_ day: String, expected: [Key: Int64]) throws(AuditError) -> String? {
        if let mismatch = try compare(day, expected: expected, table: "audit_summary_hooks", rows: hookRows) { return mismatch }
        var byTeam: [Key: Int64] = [:]
        for (key, n) in expected {
            var team = key
            team.hookID = nil
            byTeam[team, default: 0] += n
        }
        return try compare(day, expected: byTeam, table: "audit_summary_teams", rows: teamRows)
    }

    private func compare(_ day: String, expected: [Key: Int64], table: String, rows: SQLiteStatement) throws(AuditError) -> String? {
        var stored: [Key: Int64] = [:]
        try rows.bind([.text(day)])
        defer { rows.reset() }
        while try rows.step() {
            let status = rows.int(3)
            let team = rows.text(0) ?? "", hook = rows.text(1) ?? ""
            let key = Key(day: day, team: team.isEmpty ? nil : team, hookID: hook.isEmpty ? nil : hook,
                          decision: rows.text(2) ?? "", status: status == 0 ? nil : status)
            stored[key, default: 0] += rows.int(4)
        }
        let hooks = table == "audit_summary_hooks"
        for key in Set(stored.keys).union(expected.keys).sorted() {
            let inSummary = stored[key] ?? 0, inRecords = expected[key] ?? 0
            guard inSummary != inRecords else { continue }
            return "\(table) on \(key.day), team \(key.team ?? "(none)"), "
                + (hooks ? "hook \(key.hookID ?? "(none)"), " : "")
                + "decision \(key.decision), status \(key.status.map(String.init) ?? "(no response)") "
                + "counts \(inSummary) calls; the records up to seq \(watermark) hold \(inRecords)"
        }
        return nil
    }

    /// The summary's definition for one day, in SQL (for days the stream could not count alone).
    private func countedBySQL(_ day: String) throws(AuditError) -> [Key: Int64] {
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
        var counted: [Key: Int64] = [:]
        while try statement.step() {
            let key = Key(day: day, team: statement.text(0), hookID: statement.text(1), decision: statement.text(2) ?? "",
                          status: statement.isNull(3) ? nil : statement.int(3))
            counted[key, default: 0] += statement.int(4)
        }
        return counted
    }
}
