import Foundation

// Threads: a thread of `audit verify` of its own, with its own read-only connection (one
// connection per thread; the outcome is handed back through a `Locked` box and a semaphore).

/// `audit verify`'s check of the derived tables (`SummaryCheck`, `LookupCheck`): it streams the
/// records up to the last batch in `seq` order, as the chain walk does, on a connection and a
/// thread of its own, so that the two run side by side and verify takes as long as the longer
/// of them on two cores. Each walk sees one consistent snapshot of the file; the check's
/// snapshot may be newer than the chain walk's, which changes nothing: it only compares derived
/// rows with the records they claim to cover, within its own snapshot.
package enum AuditDerivedCheck {
    package struct Outcome: Sendable, Equatable {
        /// The derived tables cover the records up to this seq.
        package var through: Int64
        /// The first derived row that disagrees with the records, or nil.
        package var mismatch: String?
    }

    /// Runs the check on a new thread; `wait()` on the result gives its outcome (nil: the file has
    /// no derived tables).
    package final class Running: Sendable {
        private let outcome = Locked<Result<Outcome?, AuditError>?>(nil)
        private let done = DispatchSemaphore(value: 0)

        package init(path: String) {
            let thread = Thread { [self] in
                let result = Result { () throws(AuditError) -> Outcome? in try AuditDerivedCheck.run(path: path) }
                outcome.withLock { $0 = result }
                done.signal()
            }
            thread.name = "hookgate-verify-derived"
            thread.start()
        }

        /// Blocks until the check is over. Call once.
        package func wait() -> Result<Outcome?, AuditError> {
            done.wait()
            return outcome.withLock { $0 } ?? .success(nil)
        }
    }

    /// Opens `path` read-only and checks it in one read transaction.
    static func run(path: String) throws(AuditError) -> Outcome? {
        let db = try SQLiteConnection(path: path, readOnly: true)
        defer { db.close() }
        try db.execute("PRAGMA busy_timeout = 5000")
        try db.execute("BEGIN")
        defer { try? db.execute("COMMIT") }
        return try run(db)
    }

    /// The check on an open connection, inside the caller's read transaction.
    package static func run(_ db: SQLiteConnection, waitingLimit: Int = 1 << 16) throws(AuditError) -> Outcome? {
        guard let summaries = try SummaryCheck(db, waitingLimit: waitingLimit) else { return nil }
        let lookup = try LookupCheck(db)
        let through = summaries.watermark
        // Column positions as SummaryCheck and LookupCheck read them.
        let q = try db.prepare("SELECT \(AuditSchema.requestColumns.joined(separator: ", ")) FROM audit_requests WHERE seq <= ?1 ORDER BY seq")
        let r = try db.prepare("""
            SELECT r.seq, r.request_id, r.completed_at, r.decision, r.status, q.seq
              FROM audit_responses r LEFT JOIN audit_requests q ON q.request_id = r.request_id
             WHERE r.seq <= ?1 ORDER BY r.seq
            """)
        defer {
            q.reset()
            r.reset()
        }
        try q.bind([.int(through)])
        try r.bind([.int(through)])
        var hasRequest = try q.step(), hasResponse = try r.step()
        var last: Int64 = 0
        while hasRequest || hasResponse {
            let mismatch: String?
            if hasRequest && (!hasResponse || q.int(0) < r.int(0)) {
                last = q.int(0)
                let summary = try summaries.request(seq: last, row: q)
                mismatch = summary != nil ? summary : try lookup.request(seq: last, row: q)
                hasRequest = try q.step()
            } else {
                last = r.int(0)
                // A response without its request breaks the chain: the chain walk names it.
                mismatch = r.isNull(5) ? nil : try summaries.response(seq: last, requestSeq: r.int(5), row: r)
                hasResponse = try r.step()
            }
            if let mismatch { return Outcome(through: through, mismatch: mismatch) }
        }
        let summary = try summaries.finish()
        return Outcome(through: through, mismatch: summary != nil ? summary : try lookup.finish(lastSeq: last))
    }
}
