import Foundation
public import Hookgate

/// The engine of `hookgate bench-audit` (the command only parses options and prints): commits
/// request/response pairs of realistic audit records into a fresh database and times it.
/// Lives in the library because it drives the internal `AuditWriter`, `SQLiteConnection` and
/// `AuditChain` exactly as the gateway does.
public enum AuditBenchmark {
    public enum Mode: Sendable, Equatable {
        /// The gateway's path: an `AuditWriter` completing jobs on an `EventLoop` running on its
        /// own thread, `concurrency` callers each submitting a request record, then on its
        /// completion the response record, then the next pair. `maxBatch` 1: group commit off.
        case writer(maxBatch: Int, concurrency: Int)
        /// The ceiling: the same records, columns and hash chain, inserted by one plain
        /// connection in one transaction (same pragmas).
        case oneTransaction
    }

    public struct Outcome: Sendable, Equatable {
        public var pairs: Int
        public var seconds: Double
        public var commits: Int
        public var records: Int
        /// Batches of derived data the writer wrote, and the slowest (seconds); 0 for the ceiling.
        public var derivedBatches = 0
        public var slowestDerivedBatch = 0.0
        /// `AuditChain.verify` on the produced file: nil when the chain is whole and holds
        /// exactly `pairs` complete pairs; else what is wrong.
        public var chainProblem: String?

        public var pairsPerSecond: Double { seconds > 0 ? Double(pairs) / seconds : 0 }
        public var recordsPerCommit: Double { commits > 0 ? Double(records) / Double(commits) : 0 }
    }

    /// Runs `mode` on a new database at `path` (any existing file there, and its -wal and -shm,
    /// is removed first), then verifies the chain.
    public static func run(_ mode: Mode, path: String, pairs: Int, durability: Durability) throws(AuditError) -> Outcome {
        precondition(pairs >= 1, "pairs must be at least 1")
        removeDatabase(at: path)
        var outcome: Outcome
        switch mode {
        case .writer(let maxBatch, let concurrency):
            outcome = try runWriter(path: path, pairs: pairs, durability: durability,
                                    maxBatch: maxBatch, concurrency: max(1, concurrency))
        case .oneTransaction:
            outcome = try runOneTransaction(path: path, pairs: pairs, durability: durability)
        }
        outcome.chainProblem = try verify(path: path, pairs: pairs)
        return outcome
    }

    /// Removes a database file with its WAL and shared-memory files.
    public static func removeDatabase(at path: String) {
        for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) }
    }

    /// Average size of the upstream bodies the benchmark records.
    public static var sampleBodyBytes: Int {
        let factory = RecordFactory()
        let n = 64
        var total = 0
        for _ in 0..<n {
            let request = factory.request()
            total += factory.response(to: request).upstreamBody?.count ?? 0
        }
        return total / n
    }

    // MARK: - Group commit (the gateway's writer)

    private static func runWriter(path: String, pairs: Int, durability: Durability, maxBatch: Int,
                                  concurrency: Int) throws(AuditError) -> Outcome {
        let loop = EventLoop()
        let config = AuditConfig(path: path, durability: durability)
        // Failures also reach every job's completion, which stops the run; nothing to do here.
        let writer = try AuditWriter(loop: loop, config: config, maxBatch: maxBatch) { _ in }
        let driver = PairDriver(loop: loop, writer: writer, pairs: pairs)
        let finished = DispatchSemaphore(value: 0)
        let thread = Thread {
            // Keeps event_base_dispatch from returning while every caller waits on the writer.
            driver.keepAlive = loop.timer(after: 86_400_000) {}
            loop.soon { driver.begin(concurrency: concurrency) }
            loop.run()
            driver.keepAlive = nil
            finished.signal()
        }
        thread.name = "bench-audit-loop"
        thread.start()
        finished.wait()
        writer.flushAndStop()
        let status = writer.currentStatus
        if let failure = driver.failure {
            throw AuditError(.other, message: "group-commit run stopped: \(failure)")
        }
        return Outcome(pairs: driver.completed, seconds: Double(driver.endNanos - driver.startNanos) / 1e9,
                       commits: status.commits, records: status.records, derivedBatches: status.derivedBatches,
                       slowestDerivedBatch: status.slowestDerivedBatch, chainProblem: nil)
    }

    /// The callers; touched only on the loop thread once the loop runs (hence unchecked).
    private final class PairDriver: @unchecked Sendable {
        let loop: EventLoop
        let writer: AuditWriter
        let pairs: Int
        let factory = RecordFactory()
        var started = 0
        var completed = 0
        var failure: String?
        var startNanos: UInt64 = 0
        var endNanos: UInt64 = 0
        var keepAlive: LoopTimer?

        init(loop: EventLoop, writer: AuditWriter, pairs: Int) {
            self.loop = loop
            self.writer = writer
            self.pairs = pairs
        }

        func begin(concurrency: Int) {
            startNanos = EventLoop.monotonicNanos()
            for _ in 0..<min(concurrency, pairs) { nextPair() }
        }

        /// One caller's pair: the request record, and once it is durable the response record;
        /// once that is durable, the caller starts the next pair.
        private func nextPair() {
            guard failure == nil, started < pairs else { return }
            started += 1
            let request = factory.request()
            let accepted = writer.submit([.request(request)]) { [self] result in
                if case .failure(let error) = result { return fail(error.description) }
                let response = factory.response(to: request)
                let accepted = writer.submit([.response(response)]) { [self] result in
                    if case .failure(let error) = result { return fail(error.description) }
                    completed += 1
                    if completed == pairs { finish() } else { nextPair() }
                }
                if !accepted { fail("the writer refused a response record (queue full or stopped)") }
            }
            if !accepted { fail("the writer refused a request record (queue full or stopped)") }
        }

        private func fail(_ why: String) {
            guard failure == nil else { return }
            failure = why
            finish()
        }

        private func finish() {
            endNanos = EventLoop.monotonicNanos()
            keepAlive?.cancel()
            loop.stop()
        }
    }

    // MARK: - The ceiling

    private static func runOneTransaction(path: String, pairs: Int, durability: Durability) throws(AuditError) -> Outcome {
        let maxBodyBytes = AuditConfig(path: path).maxBodyBytes
        let db = try AuditSchema.openForWriting(path: path, durability: durability, busyTimeoutMs: 1000)
        defer { db.close() }
        let q = AuditSchema.requestColumns + ["hash"]
        let r = AuditSchema.responseColumns + ["hash"]
        let insertRequest = try db.prepare("INSERT INTO audit_requests (\(q.joined(separator: ", "))) VALUES (\(q.map { _ in "?" }.joined(separator: ", ")))")
        let insertResponse = try db.prepare("INSERT INTO audit_responses (\(r.joined(separator: ", "))) VALUES (\(r.map { _ in "?" }.joined(separator: ", ")))")
        let factory = RecordFactory()
        var seq: Int64 = 0
        var hash = AuditChain.genesis
        func insert(_ table: String, _ content: [SQLValue], _ statement: SQLiteStatement) throws(AuditError) {
            seq += 1
            let values = [.int(seq)] + content + [.text(hash)]
            hash = AuditChain.hash(table: table, values: values)
            try statement.run(values + [.text(hash)])
        }
        let started = EventLoop.monotonicNanos()
        try db.execute("BEGIN IMMEDIATE")
        for _ in 0..<pairs {
            let request = factory.request()
            try insert("audit_requests", request.values, insertRequest)
            let response = factory.response(to: request)
            try insert("audit_responses", response.values(maxBodyBytes: maxBodyBytes), insertResponse)
        }
        try db.execute("COMMIT")
        let seconds = Double(EventLoop.monotonicNanos() - started) / 1e9
        return Outcome(pairs: pairs, seconds: seconds, commits: 1, records: 2 * pairs, chainProblem: nil)
    }

    // MARK: - Verification

    private static func verify(path: String, pairs: Int) throws(AuditError) -> String? {
        let db = try SQLiteConnection(path: path, readOnly: true)
        defer { db.close() }
        // The writer thread closes its connection (a final checkpoint) just after
        // flushAndStop returns: wait for that lock instead of failing with SQLITE_BUSY.
        try db.execute("PRAGMA busy_timeout = 5000")
        let report = try AuditChain.verify(db)
        if let broken = report.broken { return "broken at \(broken)" }
        if report.pairs != pairs || report.incomplete != 0 {
            return "chain whole but holds \(report.pairs) pairs and \(report.incomplete) incomplete (expected \(pairs) and 0)"
        }
        return nil
    }

    // MARK: - Records

    /// Records shaped like the gateway's for a redeliver call that Hookshot answered 200 with
    /// its event object (about 500 bytes); a few teams, keys and hooks.
    private struct RecordFactory: Sendable {
        struct Team: Sendable {
            var name: String
            var fingerprint: String
            var hooks: [String]
            var tenant: String
            var userAgent: String
        }

        /// Traffic spread like real traffic: 20 teams, 100 hooks each (2,000 hooks), random
        /// event ids. (A few hooks would flatter the hook index: every insert would land on the
        /// same few pages.)
        let teams: [Team] = {
            let agents = ["payments-redeliver/2.3.1", "curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1"]
            return (1...20).map { i in
                Team(name: "team\(i < 10 ? "0" : "")\(i)", fingerprint: String(SHA256.hex("team-key-\(i)").prefix(16)),
                     hooks: (0..<100).map { _ in UUIDText.format(SecureRandom.bytes(16)) },
                     tenant: RequestID.make(), userAgent: agents[i % agents.count])
            }
        }()
        let configVersion = "9e107d9d372bb6826bd81d3542a419d6e277d4d731479571562b82f3a9c1e0b4"

        func request() -> AuditRequestRecord {
            let team = teams.randomElement()!
            let hook = team.hooks.randomElement()!
            let event = RequestID.make()
            return AuditRequestRecord(
                requestID: RequestID.make(), receivedAt: Timestamp.rfc3339(Date()),
                clientAddr: "10.20.\(Int.random(in: 0...3)).\(Int.random(in: 2...250))", team: team.name,
                keyFingerprint: team.fingerprint, method: "POST", path: "/hooks/\(hook)/requests/\(event)/redeliver",
                hookID: hook, eventRequestID: event, decision: "forwarded", userAgent: team.userAgent,
                clientRequestID: Bool.random() ? RequestID.make() : nil, configVersion: configVersion)
        }

        func response(to request: AuditRequestRecord) -> AuditResponseRecord {
            let team = teams.first { $0.name == request.team } ?? teams[0]
            let now = Timestamp.rfc3339(Date())
            let duration = Int.random(in: 20...400)
            let body = "{\"id\":\"\(request.eventRequestID ?? "")\",\"tenant_id\":\"\(team.tenant)\","
                + "\"delivery_id\":\"\(RequestID.make())\",\"event\":\"application_form:inactive\","
                + "\"enqueued_at\":\"\(now)\",\"redelivery\":true,\"hook_id\":\"\(request.hookID ?? "")\","
                + "\"created_at\":\"\(request.receivedAt)\",\"updated_at\":\"\(now)\",\"attempt\":\(Int.random(in: 2...6)),"
                + "\"response_status\":200,\"response_duration_ms\":\(duration),"
                + "\"signature\":\"sha256=\(SHA256.hex(bytes: Array(request.requestID.utf8)))\"}"
            let upstreamMs = Double(duration) + Double(Int.random(in: 100...900)) / 100
            return AuditResponseRecord(
                requestID: request.requestID, completedAt: now, decision: "forwarded", status: 200, upstreamStatus: 200,
                upstreamMs: upstreamMs, totalMs: upstreamMs + Double(Int.random(in: 30...250)) / 100,
                upstreamContentType: "application/json; charset=utf-8", upstreamBody: Array(body.utf8), detail: nil)
        }
    }
}
