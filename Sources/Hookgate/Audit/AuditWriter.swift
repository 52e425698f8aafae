import Foundation

/// The one writer of the audit database: its own thread owns the SQLite connection and
/// commits queued records in groups (many records per transaction, one fsync per group),
/// then wakes the loop once per group with every job's result. Fail closed: a job whose
/// records were not committed gets an error, and the caller 503. After a failure the
/// connection is reopened on the next group, so the gateway recovers by itself.
final class AuditWriter: @unchecked Sendable {
    typealias Completion = (Result<Void, AuditError>) -> Void

    enum Item: Sendable {
        case request(AuditRequestRecord)
        case response(AuditResponseRecord)
    }

    private struct Job {
        let items: [Item]
        let completion: LoopBound<Completion>
    }

    /// What /readyz and /metrics read (under the lock).
    struct Status: Sendable {
        var healthy = true
        var lastError: String?
        var failures = 0
        var commits = 0
        var records = 0
        var queueDepth = 0
        var commitLatency = Histogram(bounds: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1])
    }

    private let loop: EventLoop
    private let path: String
    private let durability: Durability
    private let maxBodyBytes: Int
    private let busyTimeoutMs: Int
    private let maxQueue: Int
    /// Most records per transaction (whole jobs are never split). 1 turns group commit off:
    /// one transaction, and with durability full one fsync, per record (bench-audit measures it).
    private let maxBatch: Int
    private let condition = NSCondition()
    private var queue: [Job] = []
    private var queuedItems = 0
    private var stopping = false
    private var stopped = false
    private var status = Status()
    private let onFailure: @Sendable (String) -> Void
    private let onRecovery: @Sendable () -> Void

    // Writer-thread state.
    private var db: SQLiteConnection?
    private var fileIdentity: (dev: UInt64, ino: UInt64)?
    private var headSeq: Int64 = 0
    private var headHash = AuditChain.genesis
    private var insertRequest: SQLiteStatement?
    private var insertResponse: SQLiteStatement?
    private let hasher = SHA256Context()
    /// The bytes each record's hash is taken over (reused).
    private var hashInput: [UInt8] = []
    private var beginStatement: SQLiteStatement?
    private var commitStatement: SQLiteStatement?

    /// Opens (creating and migrating) the database now, on the calling thread, so that a
    /// misconfigured path stops start-up with a clear error; then starts the writer thread.
    init(loop: EventLoop, config: AuditConfig, maxBatch: Int = 1024, onRecovery: @escaping @Sendable () -> Void = {},
         onFailure: @escaping @Sendable (String) -> Void) throws(AuditError) {
        self.onRecovery = onRecovery
        precondition(maxBatch >= 1, "maxBatch must be at least 1")
        self.loop = loop
        self.maxBatch = maxBatch
        self.path = config.path
        self.durability = config.durability
        self.maxBodyBytes = config.maxBodyBytes
        self.busyTimeoutMs = config.busyTimeoutMs
        self.maxQueue = config.maxQueue
        self.onFailure = onFailure
        try open()
        let thread = Thread { [self] in
            ThreadName.set("hookgate-audit")
            run()
        }
        thread.name = "hookgate-audit"
        thread.start()
    }

    /// Queues records; `completion` runs on the loop once they are durable (or failed).
    /// Returns false at once when the queue is full or the writer has stopped.
    func submit(_ items: [Item], completion: @escaping Completion) -> Bool {
        condition.lock()
        guard !stopping, queuedItems + items.count <= maxQueue else {
            condition.unlock()
            return false
        }
        queue.append(Job(items: items, completion: LoopBound(completion, on: loop)))
        queuedItems += items.count
        status.queueDepth = queuedItems
        condition.unlock()
        // Signalled after unlocking, so the woken writer does not block on the lock still held
        // here (one futex call per wake-up instead of two).
        condition.signal()
        return true
    }

    var currentStatus: Status {
        condition.lock()
        defer { condition.unlock() }
        return status
    }

    /// Writes everything queued, then stops the thread (shutdown). Blocks the caller.
    func flushAndStop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while !stopped { condition.wait() }
        condition.unlock()
    }

    /// How often an idle writer checks that the file is still writable (for /readyz).
    static let probeIntervalSeconds = 1.0

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopping {
                if !condition.wait(until: Date(timeIntervalSinceNow: Self.probeIntervalSeconds)) && queue.isEmpty && !stopping {
                    condition.unlock()
                    probe()
                    condition.lock()
                }
            }
            if queue.isEmpty && stopping {
                stopped = true
                condition.broadcast()
                condition.unlock()
                break
            }
            var batch: [Job] = []
            var count = 0
            while !queue.isEmpty && count < maxBatch {
                let job = queue.removeFirst()
                count += job.items.count
                batch.append(job)
            }
            queuedItems -= count
            status.queueDepth = queuedItems
            condition.unlock()

            let started = EventLoop.monotonicNanos()
            let result = commit(batch.flatMap(\.items))
            let seconds = Double(EventLoop.monotonicNanos() - started) / 1e9

            condition.lock()
            let wasHealthy = status.healthy
            switch result {
            case .success:
                status.commits += 1
                status.records += count
                status.commitLatency.observe(seconds)
                status.healthy = true
                status.lastError = nil
            case .failure(let error):
                status.failures += 1
                status.healthy = false
                status.lastError = error.description
            }
            condition.unlock()
            switch result {
            case .failure(let error): onFailure(error.description)
            case .success: if !wasHealthy { onRecovery() }
            }

            let completions = batch.map(\.completion)
            loop.execute {
                for c in completions { c.value(result) }
            }
        }
        db?.close()
    }

    // MARK: - Writer thread

    private func open() throws(AuditError) {
        let connection = try AuditSchema.openForWriting(path: path, durability: durability, busyTimeoutMs: busyTimeoutMs)
        let head = try connection.prepare("""
            SELECT seq, hash FROM (SELECT seq, hash FROM audit_requests UNION ALL SELECT seq, hash FROM audit_responses)
            ORDER BY seq DESC LIMIT 1
            """)
        if try head.step() {
            headSeq = head.int(0)
            headHash = head.text(1) ?? AuditChain.genesis
        } else {
            headSeq = 0
            headHash = AuditChain.genesis
        }
        head.reset()
        let q = AuditSchema.requestColumns + ["hash"]
        let r = AuditSchema.responseColumns + ["hash"]
        insertRequest = try connection.prepare("INSERT INTO audit_requests (\(q.joined(separator: ", "))) VALUES (\(q.map { _ in "?" }.joined(separator: ", ")))")
        insertResponse = try connection.prepare("INSERT INTO audit_responses (\(r.joined(separator: ", "))) VALUES (\(r.map { _ in "?" }.joined(separator: ", ")))")
        beginStatement = try connection.prepare("BEGIN IMMEDIATE")
        commitStatement = try connection.prepare("COMMIT")
        fileIdentity = Self.identity(of: path)
        db = connection
    }

    private func closeConnection() {
        insertRequest = nil
        insertResponse = nil
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
                throw AuditError(code: 14, message: "audit file \(path) was removed or replaced; a new file is started")
            }
        }
        if exists {
            if access(path, W_OK) != 0 {
                throw AuditError(code: 8, message: "audit file \(path) is not writable: \(String(cString: strerror(errno)))")
            }
            // root passes access(W_OK) whatever the mode: a file an operator made read-only
            // (no write bit for anyone) is treated as not writable all the same.
            if st.st_mode & 0o222 == 0 {
                throw AuditError(code: 8, message: "audit file \(path) is read-only (no write permission bits)")
            }
        }
        if db == nil { try open() }
    }

    /// While idle: the same checks as before a group, without writing anything, so that
    /// /readyz follows the file's writability within a probe interval, both ways.
    private func probe() {
        var failure: AuditError?
        do throws(AuditError) { try checkFile() } catch {
            failure = error
            closeConnection()
        }
        condition.lock()
        let wasHealthy = status.healthy
        status.healthy = failure == nil
        status.lastError = failure?.description
        condition.unlock()
        if let failure, wasHealthy { onFailure(failure.description) }
        if failure == nil, !wasHealthy { onRecovery() }
    }

    private func commit(_ items: [Item]) -> Result<Void, AuditError> {
        do throws(AuditError) {
            try checkFile()
            guard let db, let insertRequest, let insertResponse, let beginStatement, let commitStatement else {
                throw AuditError(code: 21, message: "audit database is not open")
            }
            try beginStatement.run([])
            var seq = headSeq, hash = headHash
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
                }
                try commitStatement.run([])
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
            headSeq = seq
            headHash = hash
            return .success(())
        } catch {
            // Reopen on the next group: clears a broken handle and re-reads the chain head.
            closeConnection()
            return .failure(error)
        }
    }
}
