import Foundation
import Logging

// Threads: its own thread ("hookgate-ship") does all the work; `status` is read by the loop
// (metrics) through a lock; `start`/`stop` from the loop's owner.

/// Copies every committed record of the local audit file into PostgreSQL (`audit.ship`), in
/// `seq` order and exactly once, off the call path: a slow or absent PostgreSQL never delays or
/// refuses a call, it only makes the central copy lag. At start and after every failure it
/// resumes from the highest `seq` PostgreSQL holds for this replica; each batch is one
/// PostgreSQL transaction. A record there that differs from the local one stops shipping for
/// good (`ShipConflict`, logged as an error and in `/metrics`) until an operator looks.
package final class AuditShipper: @unchecked Sendable {
    package struct Status: Sendable, Equatable {
        /// The highest `seq` known to be in PostgreSQL (nil: not known yet).
        package var shipped: Int64?
        /// The local file's highest committed `seq`, as last read.
        package var head: Int64 = 0
        /// Age of the oldest record not yet in PostgreSQL (0 when none).
        package var lagSeconds: Double = 0
        package var records = 0
        package var failures = 0
        /// Why shipping stopped for good (a conflict), if it did.
        package var stopped: String?
        package var lastError: String?

        package var lagRecords: Int64 { max(0, head - (shipped ?? 0)) }
    }

    private let path: String
    private let config: AuditShipConfig
    private let password: String?
    private let logger: Logger
    private let batchRecords: Int
    private let pollMs: Int
    private let state = Locked(Status())
    private let control = Locked((stopping: false, wake: false))
    private let wakeSignal = DispatchSemaphore(value: 0)
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    init(path: String, config: AuditShipConfig, password: String?, logger: Logger, batchRecords: Int = 2000, pollMs: Int = 500) {
        self.path = path
        self.config = config
        self.password = password
        self.logger = logger
        self.batchRecords = batchRecords
        self.pollMs = pollMs
    }

    package var status: Status { state.withLock { $0 } }

    package func start() {
        let thread = Thread { [self] in
            ThreadName.set("hookgate-ship")
            run()
            finished.signal()
        }
        self.thread = thread
        thread.start()
    }

    /// Ships what it can within `graceMs` (a clean stop leaves little behind), then ends the thread.
    package func stop(graceMs: Int = 3000) {
        guard thread != nil else { return }
        control.withLock { $0.stopping = true }
        wakeSignal.signal()
        _ = finished.wait(timeout: .now() + .milliseconds(graceMs))
    }

    private var stopping: Bool { control.withLock { $0.stopping } }

    // MARK: - The thread

    private func run() {
        var central: PostgresConnection?
        var failingSince: Date?
        var backoffMs = 1000
        while true {
            // A stop arrives once the audit writer has flushed (and signed its last checkpoint):
            // the pass that ends the thread must start after it, not merely end after it.
            let finalPass = stopping
            do {
                if central == nil {
                    let pg = try PostgresConnection(uri: config.postgres, password: password, applicationName: "hookgate-ship \(config.replica)")
                    try CentralAudit.migrate(pg)
                    let shipped = try CentralAudit.shippedThrough(pg, replica: config.replica)
                    state.withLock { $0.shipped = shipped }
                    central = pg
                }
                // From the file holding the next record to ship (a rotated one, while behind), on to
                // the live file. Each file is opened for the pass only: an open connection would
                // hold up the writer's rotation.
                var shippedNow: (records: Int, shipped: Int64, head: Int64)
                var file = try AuditRotatedFiles.holding(seq: (state.withLock { $0.shipped } ?? 0) + 1, live: path)
                var records = 0
                while true {
                    shippedNow = try Self.shipAll(source: Self.openSource(file.path), central: central!, replica: config.replica,
                                                  batch: batchRecords, stop: { [self] in stopping && failingSince != nil }) { [self] shipped, head in
                        state.withLock {
                            $0.shipped = shipped
                            $0.head = head
                        }
                    }
                    records += shippedNow.records
                    guard file.path != path, shippedNow.shipped == file.last else { break }
                    file = try AuditRotatedFiles.holding(seq: shippedNow.shipped + 1, live: path)
                }
                shippedNow.records = records
                state.withLock {
                    $0.records += shippedNow.records
                    $0.head = shippedNow.head
                    $0.shipped = shippedNow.shipped
                    $0.lagSeconds = 0
                    $0.lastError = nil
                }
                if let since = failingSince {
                    failingSince = nil
                    logger.info("audit shipping to PostgreSQL resumed", metadata: [
                        "replica": "\(config.replica)", "failing_s": .stringConvertible(Int(Date().timeIntervalSince(since))),
                        "shipped_through": .stringConvertible(shippedNow.shipped),
                    ])
                }
                backoffMs = 1000
                if finalPass { return }
                if stopping { continue }
                wait(ms: pollMs)
            } catch let conflict as ShipConflict {
                state.withLock { $0.stopped = conflict.description; $0.failures += 1 }
                logger.error("audit shipping stopped", metadata: ["replica": "\(config.replica)", "error": "\(conflict)"])
                return
            } catch {
                central?.close()
                central = nil
                // The lag keeps being measured while PostgreSQL is away (it is what ops watch).
                let shipped = state.withLock { $0.shipped ?? 0 }
                let head = (try? Self.openSource(path)).flatMap { try? Self.localHead($0) }
                let lag = (try? Self.lagSeconds(path: path, after: shipped)) ?? 0
                state.withLock {
                    $0.failures += 1
                    $0.lastError = "\(error)"
                    $0.lagSeconds = lag
                    if let head { $0.head = head }
                }
                if failingSince == nil {
                    failingSince = Date()
                    logger.warning("audit shipping to PostgreSQL failing: calls go on, the central copy lags until it recovers",
                                   metadata: ["replica": "\(config.replica)", "error": "\(error)"])
                }
                if stopping { return }
                wait(ms: backoffMs)
                backoffMs = min(backoffMs * 2, 10_000)
            }
        }
    }

    private func wait(ms: Int) {
        _ = wakeSignal.wait(timeout: .now() + .milliseconds(ms))
    }

    // MARK: - Shipping (also `hookgate audit ship`)

    static func openSource(_ path: String) throws(AuditError) -> SQLiteConnection {
        let db = try SQLiteConnection(path: path, readOnly: true)
        try db.execute("PRAGMA busy_timeout = 5000")
        return db
    }

    /// Ships every record after what PostgreSQL holds for `replica` up to the local head, in
    /// batches of at most `batch` records and about `batchBytes` of COPY data (records keep up to
    /// `audit.max_body_bytes` of body each: the next batch's size follows the last one's average
    /// record, starting small). `progress(shipped, head)` after each.
    package static func shipAll(source: SQLiteConnection, central: PostgresConnection, replica: String, batch: Int,
                                batchBytes: Int = 8 << 20,
                                stop: () -> Bool = { false },
                                progress: (Int64, Int64) -> Void = { _, _ in }) throws -> (records: Int, shipped: Int64, head: Int64) {
        var shipped = try CentralAudit.shippedThrough(central, replica: replica)
        let head = try localHead(source)
        let segment = try AuditSegment.read(source)
        // Where PostgreSQL ends must be this file: its last record there equals the local one
        // (or, for a file a rotation started, the record the file continues).
        if shipped > 0, shipped < segment.firstSeq {
            guard shipped == segment.firstSeq - 1, try CentralAudit.hash(central, replica: replica, seq: shipped)?.hash == segment.prevHash else {
                throw ShipConflict(replica: replica, table: "", seq: shipped, localHead: head)
            }
        } else if shipped > 0 {
            guard shipped <= head else { throw ShipConflict(replica: replica, table: "", seq: shipped, localHead: head) }
            if let central = try CentralAudit.hash(central, replica: replica, seq: shipped) {
                let local = try source.prepare("SELECT hash FROM \(central.table) WHERE seq = ?1")
                try local.bind([.int(shipped)])
                guard try local.step(), local.text(0) == central.hash else {
                    throw ShipConflict(replica: replica, table: central.table, seq: shipped)
                }
            }
        }
        var records = 0
        var size = min(batch, 256)
        while shipped < head && !stop() {
            let through = min(head, shipped + Int64(size))
            try source.execute("BEGIN")
            let read: ShipBatch
            do {
                read = try ShipBatch(source: source, replica: replica, after: shipped, through: through)
                try source.execute("COMMIT")
            } catch {
                try? source.execute("ROLLBACK")
                throw error
            }
            records += try read.write(to: central, replica: replica)
            if read.count > 0 { size = max(16, min(batch, batchBytes / max(1, read.bytes / read.count))) }
            shipped = try CentralAudit.shippedThrough(central, replica: replica)
            progress(shipped, head)
        }
        _ = try CentralAudit.shipCheckpoints(source: source, central: central, replica: replica, through: shipped)
        return (records, shipped, head)
    }

    /// `hookgate audit ship`: one pass over a file, password from libpq's environment.
    package static func shipByHand(path: String, uri: String, replica: String,
                                   progress: (Int64, Int64) -> Void) throws -> (records: Int, shipped: Int64, head: Int64) {
        let source = try openSource(path)
        let central = try PostgresConnection(uri: uri, password: nil, applicationName: "hookgate audit ship")
        try CentralAudit.migrate(central)
        return try shipAll(source: source, central: central, replica: replica, batch: 2000, progress: progress)
    }

    static func localHead(_ source: SQLiteConnection) throws(AuditError) -> Int64 {
        try AuditDerived.head(source)
    }

    /// Seconds since the record after `after` was written (0 when there is none).
    static func lagSeconds(path: String, after: Int64) throws -> Double {
        let db = try openSource(path)
        let statement = try db.prepare("""
            SELECT received_at FROM audit_requests WHERE seq = ?1 UNION ALL SELECT completed_at FROM audit_responses WHERE seq = ?1
            """)
        try statement.bind([.int(after + 1)])
        guard try statement.step(), let text = statement.text(0), let ms = AuditTime.epochMilliseconds(text) else { return 0 }
        return max(0, Date().timeIntervalSince1970 - Double(ms) / 1000)
    }
}
