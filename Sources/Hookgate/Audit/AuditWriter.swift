import Foundation
import Synchronization

/// The one writer of the audit database. Its own thread commits queued records in groups (many
/// records per transaction, one fsync per group), then wakes the loop once per group with every
/// job's result. Fail closed: a job whose records were not committed gets an error, and the
/// caller 503. After a failure the connection is reopened on the next group, so the gateway
/// recovers by itself; while idle the thread checks the file every second (for /readyz).
///
/// Threads: `submit` runs on the loop; `currentStatus` anywhere; `flushAndStop` on the thread
/// that stops the gateway. What they share (the queue and the status) is behind one `Mutex`;
/// the database itself (`AuditFile`) belongs to the writer thread alone once it starts.
package final class AuditWriter: Sendable {
    package typealias Completion = (Result<Void, AuditError>) -> Void

    package enum Item: Sendable {
        case request(AuditRequestRecord)
        case response(AuditResponseRecord)
    }

    private struct Job: Sendable {
        let items: [Item]
        let completion: LoopBound<Completion>
    }

    /// What /readyz and /metrics read.
    package struct Status: Sendable {
        package var healthy = true
        package var lastError: String?
        package var failures = 0
        package var commits = 0
        package var records = 0
        package var queueDepth = 0
        /// Batches of derived data written (AuditDerived), and the longest one took (seconds).
        package var derivedBatches = 0
        package var slowestDerivedBatch = 0.0
        var commitLatency = Histogram(bounds: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1])
    }

    /// What the loop, the writer thread and readers of the status share.
    private struct Shared: Sendable {
        var queue = FIFO<Job>()
        var queuedItems = 0
        var stopping = false
        /// The writer waits for work: the next submit wakes it.
        var writerIdle = false
        var status = Status()
    }

    private let loop: EventLoop
    private let maxQueue: Int
    /// Most records per transaction (whole jobs are never split). 1 turns group commit off:
    /// one transaction, and with durability full one fsync, per record (bench-audit measures it).
    private let maxBatch: Int
    private let shared = Mutex(Shared())
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let onFailure: @Sendable (String) -> Void
    private let onRecovery: @Sendable () -> Void

    /// How often an idle writer checks that the file is still writable (for /readyz).
    static let probeIntervalSeconds = 1.0
    /// How long no record must arrive before an idle writer writes a derived batch early: longer
    /// than the gaps between calls under load, so that no call waits for it (bench/AUDIT.md).
    static let quietBeforeDerivedBatch = 0.05

    /// Opens (creating and migrating) the database now, on the calling thread, so that a
    /// misconfigured path stops start-up with a clear error; then hands it to the writer thread.
    package init(loop: EventLoop, config: AuditConfig, maxBatch: Int = 1024,
                 derivedBatchRecords: Int = AuditDerived.writerBatchRecords, onRecovery: @escaping @Sendable () -> Void = {},
                 onNotice: @escaping @Sendable (String) -> Void = { _ in },
                 onFailure: @escaping @Sendable (String) -> Void) throws(AuditError) {
        precondition(maxBatch >= 1, "maxBatch must be at least 1")
        self.loop = loop
        self.maxBatch = maxBatch
        self.maxQueue = config.maxQueue
        self.onFailure = onFailure
        self.onRecovery = onRecovery
        let file = try AuditFile(config: config, derivedBatchRecords: derivedBatchRecords, onNotice: onNotice)
        let handoff = Handoff(file)
        let thread = Thread { [self] in
            ThreadName.set("hookgate-audit")
            run(handoff.take())
        }
        thread.name = "hookgate-audit"
        thread.start()
    }

    /// Queues records; `completion` runs on the loop once they are durable (or failed).
    /// Returns false at once when the queue is full or the writer has stopped.
    package func submit(_ items: [Item], completion: @escaping Completion) -> Bool {
        let job = Job(items: items, completion: LoopBound(completion, on: loop))
        let (accepted, wakeWriter) = shared.withLock { s -> (Bool, Bool) in
            guard !s.stopping, s.queuedItems + items.count <= maxQueue else { return (false, false) }
            s.queue.append(job)
            s.queuedItems += items.count
            s.status.queueDepth = s.queuedItems
            let idle = s.writerIdle
            s.writerIdle = false
            return (true, idle)
        }
        // Signalled after the lock is released, and only when the writer sleeps.
        if wakeWriter { wake.signal() }
        return accepted
    }

    package var currentStatus: Status { shared.withLock { $0.status } }

    /// Writes everything queued, then stops the thread (shutdown). Blocks the caller.
    package func flushAndStop() {
        shared.withLock { $0.stopping = true }
        wake.signal()
        stopped.wait()
    }

    // MARK: - Writer thread

    private func run(_ file: AuditFile) {
        while true {
            let next = shared.withLock { s -> (batch: [Job], count: Int, stop: Bool) in
                if s.queue.isEmpty {
                    if s.stopping { return ([], 0, true) }
                    s.writerIdle = true
                    return ([], 0, false)
                }
                var batch: [Job] = []
                var count = 0
                while count < maxBatch, let job = s.queue.popFirst() {
                    count += job.items.count
                    batch.append(job)
                }
                s.queuedItems -= count
                s.status.queueDepth = s.queuedItems
                return (batch, count, false)
            }
            if next.stop { break }
            if next.batch.isEmpty {
                // Idle: wait for work. When a quiet spell passes with half a batch of derived data
                // or more waiting, write it (no call waits for a commit then; under load the
                // commit that fills a batch writes it); when a probe interval passes, check the file.
                let due = file.derivedBatchDueWhenIdle
                if wake.wait(timeout: .now() + (due ? Self.quietBeforeDerivedBatch : Self.probeIntervalSeconds)) == .timedOut {
                    let idle = shared.withLock { s -> Bool in
                        guard s.writerIdle else { return false }  // a submit came at the last moment
                        return true
                    }
                    if idle, due {
                        let failure = file.writeDerivedBatch()
                        shared.withLock { s in
                            if failure == nil, let seconds = file.lastDerivedBatchSeconds {
                                s.status.derivedBatches += 1
                                s.status.slowestDerivedBatch = max(s.status.slowestDerivedBatch, seconds)
                            }
                        }
                        if let failure { report(probe: failure) }
                    } else if idle {
                        report(probe: file.probe())
                    }
                }
                continue
            }
            let started = EventLoop.monotonicNanos()
            let result = file.commit(next.batch.flatMap(\.items))
            let seconds = Double(EventLoop.monotonicNanos() - started) / 1e9
            let wasHealthy = shared.withLock { s -> Bool in
                let was = s.status.healthy
                switch result {
                case .success:
                    if let batch = file.lastDerivedBatchSeconds {
                        s.status.derivedBatches += 1
                        s.status.slowestDerivedBatch = max(s.status.slowestDerivedBatch, batch)
                    }
                    s.status.commits += 1
                    s.status.records += next.count
                    s.status.commitLatency.observe(seconds)
                    s.status.healthy = true
                    s.status.lastError = nil
                case .failure(let error):
                    s.status.failures += 1
                    s.status.healthy = false
                    s.status.lastError = error.description
                }
                return was
            }
            switch result {
            case .failure(let error): onFailure(error.description)
            case .success: if !wasHealthy { onRecovery() }
            }
            let completions = next.batch.map(\.completion)
            loop.execute {
                for c in completions { c.value(result) }
            }
        }
        file.close()
        stopped.signal()
    }

    /// Readiness follows an idle probe of the file, both ways.
    private func report(probe failure: AuditError?) {
        let wasHealthy = shared.withLock { s -> Bool in
            let was = s.status.healthy
            s.status.healthy = failure == nil
            s.status.lastError = failure?.description
            return was
        }
        if let failure, wasHealthy { onFailure(failure.description) }
        if failure == nil, !wasHealthy { onRecovery() }
    }
}

/// A value handed once from the thread that made it to the thread that will own it from then
/// on (the audit file, to the writer thread). `take` may be called once.
private final class Handoff<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?

    init(_ value: T) { self.value = value }

    func take() -> T {
        lock.lock()
        defer { lock.unlock() }
        guard let taken = value else { preconditionFailure("Handoff taken twice") }
        value = nil
        return taken
    }
}

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
    private var fileIdentity: (dev: UInt64, ino: UInt64)?
    private var headSeq: Int64 = 0
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
        // The newest record of either table: two probes of the rowid B-trees' right edges.
        let head = try connection.prepare("""
            SELECT seq, hash FROM (SELECT seq, hash FROM audit_requests ORDER BY seq DESC LIMIT 1)
            UNION ALL
            SELECT seq, hash FROM (SELECT seq, hash FROM audit_responses ORDER BY seq DESC LIMIT 1)
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
        fileIdentity = Self.identity(of: path)
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
        insertRequest = nil
        insertResponse = nil
        requestKey = nil
        beginStatement = nil
        commitStatement = nil
        db?.close()
        db = nil
    }

    private static func identity(of path: String) -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// The checks made before every group, on the file itself (one stat): still the file that
    /// was opened, and writable. Opens the connection if it is closed.
    private func checkFile() throws(AuditError) {
        var st = stat()
        let exists = stat(path, &st) == 0
        if db != nil {
            // A file removed or replaced under us would swallow records unseen: fail closed
            // and start over on a new file with the next group.
            guard exists, let opened = fileIdentity, opened == (UInt64(st.st_dev), UInt64(st.st_ino)) else {
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
