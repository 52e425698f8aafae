import Foundation

/// The one writer of the audit database. Its own thread commits queued records in groups (many
/// records per transaction, one fsync per group), then wakes the loop once per group with every
/// job's result. Fail closed: a job whose records were not committed gets an error, and the
/// caller 503. After a failure the connection is reopened on the next group, so the gateway
/// recovers by itself; while idle the thread checks the file every second (for /readyz).
///
/// Threads: `submit` runs on the loop; `currentStatus` anywhere; `flushAndStop` on the thread
/// that stops the gateway. What they share (the queue and the status) is behind one lock (`Locked`);
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
        /// The chain head (`seq`) after this writer's last commit (0 before the first).
        package var lastSeq: Int64 = 0
        package var queueDepth = 0
        /// Batches of derived data written (AuditDerived), and the longest one took (seconds).
        package var derivedBatches = 0
        package var slowestDerivedBatch = 0.0
        /// Rotations done (`audit.rotate`), and whether one is due but waits for another
        /// connection to close the file.
        package var rotations = 0
        package var rotationWaiting = false

        /// A commit that wrote a derived batch in `seconds` (nil: it wrote none).
        mutating func countDerivedBatch(_ seconds: Double?) {
            guard let seconds else { return }
            derivedBatches += 1
            slowestDerivedBatch = max(slowestDerivedBatch, seconds)
        }
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
    private let shared = Locked(Shared())
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let onFailure: @Sendable (String) -> Void
    private let onRecovery: @Sendable () -> Void
    private let onNotice: @Sendable (String) -> Void
    private let rotation: AuditRotation?
    private let path: String

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
        self.onNotice = onNotice
        self.rotation = config.rotate
        self.path = config.path
        let file = try AuditFile(config: config, derivedBatchRecords: derivedBatchRecords, onNotice: onNotice)
        var checkpointer: Checkpointer?
        if let keyPath = config.signingKey {
            do {
                let signer = try AuditSigningKey.load(path: keyPath, publicOnly: false)
                checkpointer = Checkpointer(signer: signer, intervalSeconds: config.checkpointIntervalS,
                                            logPath: config.checkpointLog, onNotice: onNotice)
            } catch {
                file.close()
                throw AuditError(.unusable, message: "audit.signing_key: \(error)")
            }
        }
        let handoff = Handoff((file, checkpointer))
        let thread = Thread { [self] in
            ThreadName.set("hookgate-audit")
            let (file, checkpointer) = handoff.take()
            run(file, checkpointer: checkpointer)
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

    private func run(_ file: AuditFile, checkpointer: Checkpointer?) {
        var rotationWaitingSince: UInt64?
        while true {
            checkpointer?.tick(file)
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
                waitIdle(file, checkpointer: checkpointer, rotationWaitingSince: &rotationWaitingSince)
                continue
            }
            let started = EventLoop.monotonicNanos()
            let result = file.commit(next.batch.flatMap(\.items))
            let seconds = Double(EventLoop.monotonicNanos() - started) / 1e9
            let wasHealthy = shared.withLock { s -> Bool in
                let was = s.status.healthy
                switch result {
                case .success:
                    s.status.countDerivedBatch(file.lastDerivedBatchSeconds)
                    s.status.commits += 1
                    s.status.records += next.count
                    s.status.lastSeq = file.headSeq
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
            if case .success = result { rotateIfDue(file, checkpointer: checkpointer, waitingSince: &rotationWaitingSince) }
        }
        checkpointer?.tick(file, stopping: true)
        file.close()
        stopped.signal()
    }

    /// Idle: waits for work. When a quiet spell passes with half a batch of derived data or more
    /// waiting, writes it (no call waits for a commit then; under load the commit that fills a
    /// batch writes it); when a probe interval passes, checks the file.
    private func waitIdle(_ file: AuditFile, checkpointer: Checkpointer?, rotationWaitingSince: inout UInt64?) {
        let due = file.derivedBatchDueWhenIdle
        let quiet = due ? Self.quietBeforeDerivedBatch : Self.probeIntervalSeconds
        // Nothing to do when a submit woke us, or came at the last moment.
        guard wake.wait(timeout: .now() + quiet) == .timedOut, shared.withLock({ $0.writerIdle }) else { return }
        guard due else {
            report(probe: file.probe())
            rotateIfDue(file, checkpointer: checkpointer, waitingSince: &rotationWaitingSince)
            return
        }
        if let failure = file.writeDerivedBatch() {
            report(probe: failure)
        } else {
            shared.withLock { $0.status.countDerivedBatch(file.lastDerivedBatchSeconds) }
        }
    }

    /// `audit.rotate`: between groups, so the file closes at a record boundary. The old file's
    /// last record is signed first (with a signing key). A rotation the file's other users hold up
    /// is tried again every second; one that fails is retried with the next group, whose reopen
    /// finishes a sealed file's rotation.
    /// `waitingSince`: when the last attempt found the file in use or failed (retried a second later).
    private func rotateIfDue(_ file: AuditFile, checkpointer: Checkpointer?, waitingSince rotationWaitingSince: inout UInt64?) {
        guard let rotation else { return }
        let now = EventLoop.monotonicNanos()
        if let since = rotationWaitingSince, now - since < 1_000_000_000 { return }
        let outcome = file.rotateIfDue(rotation, now: Date(), beforeSealing: { checkpointer?.tick(file, stopping: true) })
        let tookMs = Int((Double(EventLoop.monotonicNanos() - now) / 1e6).rounded())
        switch outcome {
        case .success(.notDue):
            return
        case .success(.waiting):
            if rotationWaitingSince == nil {
                onNotice("audit rotation waits: another connection has \(path) open (another gateway process, "
                         + "or a reader); tried again every second")
            }
            rotationWaitingSince = now
            shared.withLock { $0.status.rotationWaiting = true }
        case .success(.rotated(let archive, let first, let last)):
            rotationWaitingSince = nil
            shared.withLock {
                $0.status.rotations += 1
                $0.status.rotationWaiting = false
            }
            onNotice("audit file rotated: \(archive) holds records \(first)-\(last); the chain continues in \(path) "
                     + "(calls waited \(tookMs) ms)")
        case .failure(let error):
            rotationWaitingSince = now
            report(probe: error)
        }
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
