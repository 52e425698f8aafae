import Foundation

// Threads: made (and opened) on the thread that starts the gateway, then owned by the audit
// writer thread alone (`AuditWriter.run`); not Sendable.

/// The audit database as the writer thread uses it: the connection, its prepared statements,
/// the head of the hash chain, and the checks on the file. Made (and opened) on the thread that
/// starts the gateway, then owned by the writer thread alone (not `Sendable`).
final class AuditFile {
    typealias Item = AuditWriter.Item

    private let path: String
    private let durability: Durability
    private let maxBodyBytes: Int
    private let busyTimeoutMs: Int
    private var db: SQLiteConnection?
    private var fileIdentity: FileIdentity?
    /// This file's place in the chain (`audit_file`), as read when it was opened.
    private var segment = AuditSegment()
    private var pageSize: Int64 = 4096
    /// `PRAGMA page_count`, read after each group when `audit.rotate.max_bytes` is set.
    private var pageCount: SQLiteStatement?
    private(set) var headSeq: Int64 = 0
    private var headHash = AuditChain.genesis
    private var insertRequest: SQLiteStatement?
    private var insertResponse: SQLiteStatement?
    private let hasher = SHA256Context()
    /// The bytes each record's hash is taken over (reused).
    private var hashInput: [UInt8] = []
    private var headStatement: SQLiteStatement?
    private var beginStatement: SQLiteStatement?
    private var commitStatement: SQLiteStatement?
    /// Derived data (AuditDerived) for the records since the last batch; written every
    /// `AuditDerived.writerBatchRecords` records inside a group's transaction.
    private var batch = AuditDerived.Batch(firstSeq: 1)
    /// The summary key of requests written whose response is still to come (bounded; a response
    /// whose request is not here reads it from the file).
    private var openRequests: [AuditDerived.IDKey: AuditDerived.SummaryKey] = [:]
    private var requestKey: SQLiteStatement?
    private static let maxOpenRequests = 1 << 16
    /// Catching up on more records than this is worth a log line (it takes a second or more).
    private static let noticeRecords: Int64 = 100_000
    private let derivedBatchRecords: Int
    /// How long writing derived data took in the last commit; nil when it wrote none.
    private(set) var lastDerivedBatchSeconds: Double?

    /// Says what takes long when the file is opened (deriving summaries for an older file).
    private let onNotice: @Sendable (String) -> Void

    init(config: AuditConfig, derivedBatchRecords: Int = AuditDerived.writerBatchRecords,
         onNotice: @escaping @Sendable (String) -> Void = { _ in }) throws(AuditError) {
        precondition(derivedBatchRecords >= 1)
        self.derivedBatchRecords = derivedBatchRecords
        self.onNotice = onNotice
        path = config.path
        durability = config.durability
        maxBodyBytes = config.maxBodyBytes
        busyTimeoutMs = config.busyTimeoutMs
        try open()
    }

    func close() { closeConnection() }

    /// Signs the chain as the file has it now into `audit_checkpoints`, in one write transaction
    /// (another gateway on the file is ordered by the lock); nil when the newest checkpoint there
    /// already covers the head, or there is no record yet.
    func writeCheckpoint(signer: AuditSigningKey, at: String) -> Result<AuditCheckpoint?, AuditError> {
        guard let db else { return .failure(AuditError(.other, message: "audit database is not open")) }
        do throws(AuditError) {
            try db.execute("BEGIN IMMEDIATE")
            do {
                try readHead()
                let signed = try db.scalarInt("SELECT max(seq) FROM audit_checkpoints") ?? 0
                guard headSeq > 0, headSeq > signed else {
                    try db.execute("COMMIT")
                    return .success(nil)
                }
                let chain = try AuditSegment.chainID(db, segment) ?? ""
                let checkpoint = try AuditCheckpoint.signed(chain: chain, seq: headSeq, hash: headHash, at: at, by: signer)
                let insert = try db.prepare("INSERT INTO audit_checkpoints (seq, hash, chain, at, key, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                try insert.run([.int(checkpoint.seq), .text(checkpoint.hash), .text(chain), .text(at), .text(checkpoint.key),
                                .text(checkpoint.signature)])
                try db.execute("COMMIT")
                return .success(checkpoint)
            } catch let error as AuditError {
                try? db.execute("ROLLBACK")
                throw error
            } catch {
                try? db.execute("ROLLBACK")
                throw AuditError(.other, message: "\(error)")
            }
        } catch {
            return .failure(error)
        }
    }

    private func open() throws(AuditError) {
        let connection = try AuditSchema.openForWriting(path: path, durability: durability, busyTimeoutMs: busyTimeoutMs,
                                                        catchUp: false)
        // Derived data for records after the last batch: after a crash, a few thousand records;
        // for a file from an older gateway (or other tools), all of them, once: say so.
        let behind = try AuditDerived.underived(connection)
        let started = EventLoop.monotonicNanos()
        if behind > Self.noticeRecords {
            onNotice("deriving the audit summaries and lookup for \(behind) records (an older or restored file); "
                     + "calls are served when done, about 10 s per million calls")
        }
        let through = try AuditDerived.catchUp(connection)
        if behind > Self.noticeRecords {
            onNotice("audit summaries and lookup derived for \(behind) records in "
                     + "\(Int((Double(EventLoop.monotonicNanos() - started) / 1e9).rounded())) s")
        }
        batch = AuditDerived.Batch(firstSeq: through + 1)
        openRequests = [:]
        segment = try AuditSegment.read(connection)
        pageSize = try connection.scalarInt("PRAGMA page_size") ?? 4096
        pageCount = try connection.prepare("PRAGMA page_count")
        // The newest record of either table: two probes of the rowid B-trees' right edges; in a
        // file without records yet, the record its chain continues (`audit_file`).
        let head = try connection.prepare("""
            SELECT seq, hash FROM (SELECT seq, hash FROM audit_requests ORDER BY seq DESC LIMIT 1)
            UNION ALL
            SELECT seq, hash FROM (SELECT seq, hash FROM audit_responses ORDER BY seq DESC LIMIT 1)
            UNION ALL
            SELECT first_seq - 1, prev_hash FROM audit_file
            ORDER BY seq DESC LIMIT 1
            """)
        headStatement = head
        try readHead()
        let q = AuditSchema.requestColumns + ["hash"]
        let r = AuditSchema.responseColumns + ["hash"]
        insertRequest = try connection.prepare("INSERT INTO audit_requests (\(q.joined(separator: ", "))) VALUES (\(q.map { _ in "?" }.joined(separator: ", ")))")
        insertResponse = try connection.prepare("INSERT INTO audit_responses (\(r.joined(separator: ", "))) VALUES (\(r.map { _ in "?" }.joined(separator: ", ")))")
        requestKey = try connection.prepare("""
            SELECT substr(received_at, 1, 10), team, hook_id, decision FROM audit_requests WHERE request_id = ?1
            """)
        beginStatement = try connection.prepare("BEGIN IMMEDIATE")
        commitStatement = try connection.prepare("COMMIT")
        fileIdentity = FileIdentity(path: path)
        db = connection
    }

    /// The chain head as the file has it. Inside a write transaction it cannot move under us:
    /// another gateway process writing the same file (a rolling restart's overlap) is ordered
    /// by SQLite's write lock, and each writer continues the chain from where the file stands.
    private func readHead() throws(AuditError) {
        guard let headStatement else { throw AuditError(.other, message: "audit database is not open") }
        defer { headStatement.reset() }
        if try headStatement.step() {
            headSeq = headStatement.int(0)
            headHash = headStatement.text(1) ?? AuditChain.genesis
        } else {
            headSeq = 0
            headHash = AuditChain.genesis
        }
    }

    private func closeConnection() {
        headStatement = nil
        pageCount = nil
        insertRequest = nil
        insertResponse = nil
        requestKey = nil
        beginStatement = nil
        commitStatement = nil
        db?.close()
        db = nil
    }

    /// The checks made before every group, on the file itself (one stat): still the file that
    /// was opened, and writable. Opens the connection if it is closed.
    private func checkFile() throws(AuditError) {
        var st = stat()
        let exists = stat(path, &st) == 0
        if db != nil {
            // A file removed or replaced under us would swallow records unseen: fail closed
            // and start over on a new file with the next group.
            guard exists, let opened = fileIdentity, opened == FileIdentity(path: path) else {
                closeConnection()
                throw AuditError(.fileReplaced, message: "audit file \(path) was removed or replaced; a new file is started")
            }
        }
        if exists {
            if access(path, W_OK) != 0 {
                throw AuditError(.notWritable, message: "audit file \(path) is not writable: \(String(cString: strerror(errno)))")
            }
            // root passes access(W_OK) whatever the mode: a file an operator made read-only
            // (no write bit for anyone) is treated as not writable all the same.
            if st.st_mode & 0o222 == 0 {
                throw AuditError(.notWritable, message: "audit file \(path) is read-only (no write permission bits)")
            }
        }
        if db == nil { try open() }
    }

    /// While idle: the same checks as before a group, without writing anything, so that
    /// /readyz follows the file's writability within a probe interval, both ways. Nil: fine.
    func probe() -> AuditError? {
        do throws(AuditError) {
            try checkFile()
            return nil
        } catch {
            closeConnection()
            return error
        }
    }

    func commit(_ items: [Item]) -> Result<Void, AuditError> {
        do throws(AuditError) {
            try checkFile()
            guard let db, let insertRequest, let insertResponse, let beginStatement, let commitStatement else {
                throw AuditError(.other, message: "audit database is not open")
            }
            try beginStatement.run([])
            try readHead()
            var seq = headSeq, hash = headHash
            var nextBatch: AuditDerived.Batch?
            lastDerivedBatchSeconds = nil
            do throws(AuditError) {
                var values: [SQLValue] = []
                values.reserveCapacity(24)
                for item in items {
                    seq += 1
                    let table: String, statement: SQLiteStatement
                    // seq, the record's columns, prev_hash: hashed; then the hash itself.
                    values.removeAll(keepingCapacity: true)
                    values.append(.int(seq))
                    switch item {
                    case .request(let record):
                        table = "audit_requests"
                        values.append(contentsOf: record.values)
                        statement = insertRequest
                    case .response(let record):
                        table = "audit_responses"
                        values.append(contentsOf: record.values(maxBodyBytes: maxBodyBytes))
                        statement = insertResponse
                    }
                    values.append(.text(hash))
                    hash = AuditChain.hash(table: table, values: values, context: hasher, buffer: &hashInput)
                    values.append(.text(hash))
                    try statement.run(values)
                    try derive(item, seq: seq)
                }
                if batch.records >= derivedBatchRecords {
                    let started = EventLoop.monotonicNanos()
                    nextBatch = try AuditDerived.write(batch, db, through: seq, limit: 4 * Int64(derivedBatchRecords))
                    lastDerivedBatchSeconds = Double(EventLoop.monotonicNanos() - started) / 1e9
                }
                try commitStatement.run([])
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
            headSeq = seq
            headHash = hash
            if let nextBatch { batch = nextBatch }
            return .success(())
        } catch {
            // Reopen on the next group: clears a broken handle and re-reads the chain head (and
            // the derived data, which this group may have half-counted).
            closeConnection()
            return .failure(error)
        }
    }

    /// Half a batch of derived data or more is waiting, and the file is open.
    var derivedBatchDueWhenIdle: Bool { db != nil && batch.records >= max(1, derivedBatchRecords / 2) }

    /// Writes the derived data of every committed record since the last batch, in a transaction
    /// of its own (the writer is idle). Nil when done.
    func writeDerivedBatch() -> AuditError? {
        lastDerivedBatchSeconds = nil
        do throws(AuditError) {
            try checkFile()
            guard let db, let beginStatement, let commitStatement else {
                throw AuditError(.other, message: "audit database is not open")
            }
            let started = EventLoop.monotonicNanos()
            try beginStatement.run([])
            let next: AuditDerived.Batch
            do throws(AuditError) {
                try readHead()
                next = try AuditDerived.write(batch, db, through: headSeq, limit: 4 * Int64(derivedBatchRecords))
                try commitStatement.run([])
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
            lastDerivedBatchSeconds = Double(EventLoop.monotonicNanos() - started) / 1e9
            batch = next
            return nil
        } catch {
            closeConnection()  // reopened with the next group; its catch-up derives what is missing
            return error
        }
    }

    // MARK: - Rotation

    /// What `rotateIfDue` did.
    enum Rotation {
        case notDue
        /// Another connection has the file open: nothing changed; try again later.
        case waiting
        case rotated(archive: String, firstSeq: Int64, lastSeq: Int64)
    }

    /// Rotates the file (`AuditRotator`) if `rule` says it is time: its pages reach `max_bytes`
    /// (main file and -wal alike), or it was started on an earlier UTC day than `now` and holds
    /// a record. The writer calls it between groups, so the file closes at a record boundary.
    /// `beforeSealing` runs when it is due, before anything changes (the writer signs a checkpoint).
    func rotateIfDue(_ rule: AuditRotation, now: Date, beforeSealing: () -> Void) -> Result<Rotation, AuditError> {
        // A file without a record of its own is never rotated (a new file may be larger than
        // a small max_bytes already: its tables and indexes take about 80 KiB).
        guard db != nil, let identity = fileIdentity, headSeq >= segment.firstSeq else { return .success(.notDue) }
        do throws(AuditError) {
            var due = false
            if let maxBytes = rule.maxBytes {
                if let pageCount {
                    defer { pageCount.reset() }
                    due = try pageCount.step() && pageCount.int(0) * pageSize >= Int64(maxBytes)
                }
            }
            if rule.daily, !due, let started = segment.startedAt {
                due = started.prefix(10) < Timestamp.rfc3339(now).prefix(10)
            }
            guard due else { return .success(.notDue) }
            beforeSealing()
            guard let db = self.db else { return .success(.notDue) }
            let batch = self.batch
            let sealed: AuditSegment
            switch try AuditRotator.seal(db, path: path, now: now, busyTimeoutMs: busyTimeoutMs, finalize: { db, last throws(AuditError) in
                // The rotated file keeps complete derived data: its reports need no records read.
                _ = try AuditDerived.write(batch, db, through: last, limit: .max)
            }) {
            case .fileInUse: return .success(.waiting)
            case .nothingToRotate: return .success(.notDue)
            case .sealed(let segment): sealed = segment
            }
            let last = sealed.lastSeq ?? headSeq
            let archive = try AuditRotator.finish(db, path: path, identity: identity, durability: durability,
                                                  busyTimeoutMs: busyTimeoutMs, now: now)
            closeConnection()
            try open()
            return .success(.rotated(archive: archive ?? sealed.archivedAs ?? "", firstSeq: sealed.firstSeq, lastSeq: last))
        } catch {
            // Reopened with the next group, which finishes a sealed file's rotation.
            closeConnection()
            return .failure(error)
        }
    }

    /// Counts a record just inserted into the current batch of derived data.
    private func derive(_ item: Item, seq: Int64) throws(AuditError) {
        switch item {
        case .request(let record):
            let key = AuditDerived.SummaryKey(day: AuditDerived.day(of: record.receivedAt), team: record.team,
                                              hook: AuditDerived.IDKey(record.hookID), decision: record.decision, status: nil)
            batch.request(seq: seq, key: key, eventRequestID: record.eventRequestID)
            if openRequests.count >= Self.maxOpenRequests { openRequests.removeAll() }
            openRequests[AuditDerived.IDKey(record.requestID)] = key
        case .response(let record):
            var key = openRequests.removeValue(forKey: AuditDerived.IDKey(record.requestID))
            if key == nil, let requestKey {
                try requestKey.bind([.text(record.requestID)])
                defer { requestKey.reset() }
                if try requestKey.step() {
                    key = AuditDerived.SummaryKey(day: requestKey.text(0) ?? "", team: requestKey.text(1),
                                                  hook: AuditDerived.IDKey(requestKey.raw(2)), decision: requestKey.text(3) ?? "",
                                                  status: nil)
                }
            }
            batch.response(requestKey: key, decision: record.decision, status: Int64(record.status))
        }
    }
}
