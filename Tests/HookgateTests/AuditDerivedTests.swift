import Foundation
import HookgateTestSupport
import Testing
@testable import Hookgate

/// The summaries and the lookup by Hookshot request id (schema 3): written by the real writer in
/// batches, they must say at every moment exactly what the records say — through a batch, in
/// the tail after it, after a crash lost the batch in memory, and after `rebuild`.
@Suite struct AuditDerivedTests {
    static let config = String(repeating: "c", count: 64)
    static let hooks = (0..<6).map { String(format: "00000000-0000-4000-8000-%012d", $0) }
    static let events = (0..<9).map { String(format: "29dd8606-4e01-46cb-aca2-%012d", $0) }

    /// A seeded walk through calls like the gateway's: three teams and callers without a key,
    /// six hooks, calls over three UTC days, refusals written with their response in one group,
    /// forwarded calls answered a few calls later, some never answered.
    struct Traffic {
        var state: UInt64
        var calls = 0
        var waiting: [AuditResponseRecord] = []

        mutating func next(_ n: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(n))
        }

        /// The next group the writer commits.
        mutating func group() -> [AuditWriter.Item] {
            calls += 1
            let id = RequestID.make()
            // Five calls an hour from 22:00 on day one: three days are crossed.
            let minute = calls * 12
            let day = 1 + (22 * 60 + minute) / 1440, inDay = (22 * 60 + minute) % 1440
            let at = String(format: "2025-03-%02dT%02d:%02d:%02d.000Z", day, inDay / 60, inDay % 60, calls % 60)
            let team: String? = next(8) == 0 ? nil : ["claims", "billing", "ops"][next(3)]
            let hook = AuditDerivedTests.hooks[next(6)]
            let refused = team == nil || next(5) == 0
            let decision = team == nil ? "unauthenticated" : (refused ? "forbidden" : "forwarded")
            let request = AuditRequestRecord(
                requestID: id, receivedAt: at, clientAddr: "10.0.0.7", team: team,
                keyFingerprint: team.map { _ in "0123456789abcdef" }, method: "POST", path: "/hooks/\(hook)/requests/x/redeliver",
                hookID: hook, eventRequestID: AuditDerivedTests.events[next(9)], decision: decision, userAgent: nil,
                clientRequestID: nil, configVersion: AuditDerivedTests.config)
            func answer(_ decision: String, _ status: Int) -> AuditResponseRecord {
                AuditResponseRecord(requestID: id, completedAt: at, decision: decision, status: status,
                                    upstreamStatus: status == 502 ? nil : status, upstreamMs: 5, totalMs: 9,
                                    upstreamContentType: nil, upstreamBody: nil, detail: nil)
            }
            if refused {
                return [.request(request), .response(answer(decision, team == nil ? 401 : 403))]
            }
            var items: [AuditWriter.Item] = [.request(request)]
            if next(10) != 0 {  // one forwarded call in ten is never answered
                waiting.append(next(6) == 0 ? answer("upstream_error", 502) : answer("forwarded", [200, 200, 404][next(3)]))
            }
            while !waiting.isEmpty, next(3) == 0 { items.append(.response(waiting.removeFirst())) }
            return items
        }
    }

    /// `audit_daily_hooks` and `audit_daily` against the same counts taken from `audit_pairs`
    /// (what the views promise): rows that differ.
    static func dailyDisagreements(_ path: String) throws -> Int64 {
        let db = try SQLiteConnection(path: path, readOnly: true)
        defer { db.close() }
        var differ: Int64 = 0
        for (view, columns) in [("audit_daily_hooks", "team, hook_id"), ("audit_daily", "team")] {
            let pairs = "SELECT substr(received_at, 1, 10), \(columns), decision, status, count(*) FROM audit_pairs GROUP BY \(columns), 1, decision, status"
            let daily = "SELECT day, \(columns), decision, status, calls FROM \(view)"
            differ += try db.scalarInt("SELECT (SELECT count(*) FROM (\(daily) EXCEPT \(pairs))) + (SELECT count(*) FROM (\(pairs) EXCEPT \(daily)))") ?? 1
        }
        return differ
    }

    /// Request ids of one Hookshot request id's redeliveries, found by scanning the table.
    static func scanned(_ path: String, event: String) throws -> [String] {
        let db = try SQLiteConnection(path: path, readOnly: true)
        defer { db.close() }
        let s = try db.prepare("SELECT request_id FROM audit_pairs WHERE event_request_id = ?1 ORDER BY received_at, request_id")
        try s.bind([.text(event)])
        var ids: [String] = []
        while try s.step() { ids.append(s.text(0) ?? "") }
        return ids
    }

    /// A new audit file written by the writer's `AuditFile` with batches of `batch` records:
    /// `calls` groups of seeded traffic.
    static func written(seed: UInt64, batch: Int, calls: Int) throws -> (String, AuditFile, Traffic) {
        let path = TestDirectory.make("derived") + "/audit.sqlite3"
        var traffic = Traffic(state: seed)
        let file = try AuditFile(config: AuditConfig(path: path), derivedBatchRecords: batch)
        for _ in 1...calls { try file.commit(traffic.group()).get() }
        return (path, file, traffic)
    }

    static func count(_ path: String, _ sql: String) throws -> Int64 {
        let db = try SQLiteConnection(path: path, readOnly: true)
        defer { db.close() }
        return try db.scalarInt(sql) ?? -1
    }

    static func checkEverything(_ path: String, _ comment: Comment) throws {
        #expect(try dailyDisagreements(path) == 0, comment)
        let query = try AuditQuery(path: path)
        #expect(query.hasDerivedTables)
        let result = try query.verify()
        #expect(result.isIntact, comment)
        #expect(result.derivedMismatch == nil, comment)
        for event in events {
            let found = try query.list(.parse(eventRequestID: event.uppercased())).rows.map { $0[0] }
            #expect(found == (try scanned(path, event: event)).map(SQLValue.text), comment)
        }
    }

    @Test func theWritersBatchesAgreeWithTheRecordsAtEveryMomentAndAfterACrash() throws {
        let path = TestDirectory.make("derived") + "/audit.sqlite3"
        var traffic = Traffic(state: 7)
        var file: AuditFile? = try AuditFile(config: AuditConfig(path: path), derivedBatchRecords: 25)
        for round in 1...240 {
            try file!.commit(traffic.group()).get()
            if round % 40 == 0 { try Self.checkEverything(path, "after call \(round)") }
        }
        let db = try SQLiteConnection(path: path, readOnly: true)
        let batches = try #require(try db.scalarInt("SELECT count(*) FROM audit_batches"))
        let head = try #require(try db.scalarInt("SELECT max(seq) FROM audit_requests"))
        let through = try AuditDerived.watermark(db)
        #expect(batches >= 10, "the writer wrote its batches (\(batches))")
        #expect(through < head, "and the newest records are in the tail, not yet in a batch")
        #expect(try db.scalarInt("SELECT count(*) FROM audit_summary_hooks WHERE day = '2025-03-03'") ?? 0 > 0, "three days are crossed")
        // A crash: the batch in memory is lost with the process; the next writer derives the tail.
        file = nil
        file = try AuditFile(config: AuditConfig(path: path), derivedBatchRecords: 25)
        #expect(try AuditDerived.watermark(db) >= head)
        try Self.checkEverything(path, "after the restart")
        for _ in 1...30 { try file!.commit(traffic.group()).get() }
        try Self.checkEverything(path, "after more calls")
        db.close()
    }

    @Test func anIdleWriterWritesHalfABatchWithoutWaitingForMoreCalls() throws {
        let path = TestDirectory.make("derived") + "/audit.sqlite3"
        let loop = EventLoop()  // made here, so this thread may submit; completions wait for a run that never comes
        let writer = try AuditWriter(loop: loop, config: AuditConfig(path: path), derivedBatchRecords: 20) { _ in }
        var traffic = Traffic(state: 3)
        var submitted = 0
        while submitted < 12 {
            let group = traffic.group()
            #expect(writer.submit(group) { _ in })
            submitted += group.count
        }
        let db = try SQLiteConnection(path: path, readOnly: true)
        // The writer may go idle between two submits: then a batch covers what was there.
        let deadline = Date().addingTimeInterval(5)
        while try AuditDerived.watermark(db) < 10, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        let through = try AuditDerived.watermark(db)
        #expect(through >= 10 && Int64(submitted) - through < 10,
                "half a batch (10 records) or more is written once the writer is idle: \(through) of \(submitted)")
        #expect(writer.currentStatus.derivedBatches >= 1)
        writer.flushAndStop()
        #expect(writer.currentStatus.records == submitted)
        db.close()
        try Self.checkEverything(path, "after the idle batch")
    }

    @Test func aRebuildRunAgainstTheLiveFileLeavesItRight() throws {
        let (path, file, written) = try Self.written(seed: 13, batch: 10, calls: 30)
        var traffic = written
        // A whole rebuild between two commits.
        _ = try AuditDerived.rebuild(path: path)
        for _ in 1...30 { try file.commit(traffic.group()).get() }
        try Self.checkEverything(path, "after a rebuild between commits")
        // A rebuild caught half-way: its first step (emptying the tables) done, the rest not yet.
        let other = try AuditSchema.openForWriting(path: path, durability: .normal, busyTimeoutMs: 1000, catchUp: false)
        try other.execute("""
            DELETE FROM audit_summary_hooks; DELETE FROM audit_summary_teams; DELETE FROM audit_event_lookup;
            DELETE FROM audit_batches
            """)
        for _ in 1...20 { try file.commit(traffic.group()).get() }
        #expect(try AuditDerived.watermark(other) == 0, "the writer leaves a file that far behind to the rebuild")
        try AuditDerived.catchUp(other)  // the rest of the rebuild
        for _ in 1...30 { try file.commit(traffic.group()).get() }
        other.close()
        try Self.checkEverything(path, "after a rebuild that overlapped commits")
    }

    @Test func twoWritersOnOneFileInterleaveIntoOneChainWithRightSummaries() throws {
        // Two gateway processes on one file (a rolling restart's overlap): two connections here.
        let path = TestDirectory.make("derived") + "/audit.sqlite3"
        var traffic = Traffic(state: 23)
        let first = try AuditFile(config: AuditConfig(path: path), derivedBatchRecords: 12)
        let second = try AuditFile(config: AuditConfig(path: path), derivedBatchRecords: 12)
        for round in 1...150 {
            // A response may come through the other writer than its request did.
            try (round % 3 == 0 ? second : first).commit(traffic.group()).get()
        }
        let result = try AuditQuery(path: path).verify()
        #expect(result.isIntact, "\(result.broken ?? "")")
        #expect(result.records == 150 + (try Self.count(path, "SELECT count(*) FROM audit_responses")))
        try Self.checkEverything(path, "two writers")
        #expect(try Self.count(path, "SELECT count(*) FROM audit_batches") >= 10)
    }

    @Test func verifyNamesASummaryThatDisagreesAndRebuildRepairsIt() throws {
        let (path, _, _) = try Self.written(seed: 11, batch: 10, calls: 60)
        let writer = try SQLiteConnection(path: path)
        let hook = Self.hooks[0]
        try writer.execute("""
            UPDATE audit_summary_hooks SET calls = calls + 1
             WHERE day = '2025-03-01' AND team = 'claims' AND hook_id = '\(hook)' AND decision = 'forbidden' AND status = 403
            """)
        if writer.changes == 0 {
            try writer.execute("INSERT INTO audit_summary_hooks VALUES ('2025-03-01', 'claims', '\(hook)', 'forbidden', 403, 1)")
        }
        let result = try AuditQuery(path: path).verify()
        #expect(result.isIntact, "the chain itself is whole")
        let mismatch = try #require(result.derivedMismatch)
        #expect(mismatch.hasPrefix("audit_summary_hooks on 2025-03-01, team claims, hook \(hook), decision forbidden, status 403 counts "))
        writer.close()
        _ = try AuditDerived.rebuild(path: path)
        let teams = try SQLiteConnection(path: path)
        try teams.execute("UPDATE audit_summary_teams SET calls = calls - 1 WHERE day = '2025-03-01' AND team = '' AND status = 401")
        #expect(teams.changes == 1)
        teams.close()
        let unauthenticated = try Self.count(path, "SELECT count(*) FROM audit_pairs WHERE team IS NULL AND status = 401 AND received_at < '2025-03-02'")
        let found = try AuditQuery(path: path).verify()
        #expect(found.derivedMismatch == "audit_summary_teams on 2025-03-01, team (none), decision unauthenticated, status 401 counts "
                + "\(unauthenticated - 1) calls; the records up to seq \(found.derivedThrough ?? -1) hold \(unauthenticated)")
        let writer2 = try SQLiteConnection(path: path)
        // A batch row removed: the summary now claims records the watermark no longer covers.
        try writer2.execute("DELETE FROM audit_batches WHERE first_seq = (SELECT max(first_seq) FROM audit_batches)")
        #expect(try AuditQuery(path: path).verify().derivedMismatch != nil)
        writer2.close()
        let rebuilt = try AuditDerived.rebuild(path: path)
        #expect(rebuilt.batches == 1)
        #expect(rebuilt.records == (try AuditQuery(path: path).verify().lastSeq))
        try Self.checkEverything(path, "after rebuild")
    }

    @Test func theCheckIsTheSameWhenItCannotRememberEveryRequestWaitingForItsResponse() throws {
        let (path, _, _) = try Self.written(seed: 17, batch: 16, calls: 120)
        let db = try SQLiteConnection(path: path)
        func check() throws -> AuditDerivedCheck.Outcome? {
            try db.execute("BEGIN")
            defer { try? db.execute("COMMIT") }
            return try AuditDerivedCheck.run(db, waitingLimit: 2)  // responses read their request from the file
        }
        #expect(try check()?.mismatch == nil)
        try db.execute("UPDATE audit_summary_teams SET calls = calls + 1 WHERE decision = 'forwarded' AND status = 200 AND team = 'ops'")
        #expect(db.changes >= 1)
        #expect(try check()?.mismatch?.hasPrefix("audit_summary_teams on 2025-03-0") == true)
        db.close()
    }

    @Test func verifyNamesALookupRowMissingOrForgedAndABatchGap() throws {
        let (path, _, _) = try Self.written(seed: 5, batch: 10, calls: 60)
        try Self.checkEverything(path, "as written")
        let db = try SQLiteConnection(path: path)
        let (bucket, seq) = try #require(try { () throws -> (Int64, Int64)? in
            let s = try db.prepare("""
                SELECT bucket, seq FROM audit_event_lookup WHERE bucket = (SELECT max(bucket) FROM audit_event_lookup)
                 ORDER BY event_key, seq LIMIT 1
                """)
            defer { s.reset() }
            return try s.step() ? (s.int(0), s.int(1)) : nil
        }())
        try db.execute("DELETE FROM audit_event_lookup WHERE bucket = \(bucket) AND seq = \(seq)")
        #expect(try AuditQuery(path: path).verify().derivedMismatch
                == "audit_event_lookup disagrees with the records in the batch at seq \(bucket): expected request seq \(seq), found a row for seq "
                + "\(try Self.count(path, "SELECT seq FROM audit_event_lookup WHERE bucket = \(bucket) ORDER BY event_key, seq LIMIT 1"))")
        // The redelivery is now hidden from the lookup: verify is what tells.
        _ = try AuditDerived.rebuild(path: path)
        try db.execute("INSERT INTO audit_event_lookup VALUES (1, x'00000000000000000000000000000000', 2)")
        #expect(try AuditQuery(path: path).verify().derivedMismatch?.hasPrefix("audit_event_lookup disagrees with the records in the batch at seq 1") == true)
        _ = try AuditDerived.rebuild(path: path)
        try db.execute("UPDATE audit_batches SET first_seq = 2")
        #expect(try AuditQuery(path: path).verify().derivedMismatch == "audit_batches: the batch starting at seq 2 should start at seq 1 and end at or after it (it ends at \(try AuditDerived.watermark(db)))")
        db.close()
    }

    @Test func aFileFromOtherToolsGetsItsSummariesAndLookupFromRebuild() throws {
        // Records chained by hand, as another tool would (no batches), including an id that is
        // not a UUID and one in upper case.
        let path = TestDirectory.make("derived") + "/audit.sqlite3"
        let db = try AuditSchema.openForWriting(path: path, durability: .normal, busyTimeoutMs: 1000)
        var seq: Int64 = 0, head = AuditChain.genesis
        func append(_ table: String, _ columns: [String], _ values: [SQLValue]) throws {
            seq += 1
            let full = [.int(seq)] + values + [.text(head)]
            head = AuditChain.hash(table: table, values: full)
            let names = columns + ["hash"]
            try db.prepare("INSERT INTO \(table) (\(names.joined(separator: ", "))) VALUES (\(names.map { _ in "?" }.joined(separator: ", ")))")
                .run(full + [.text(head)])
        }
        let ids = ["not-a-uuid", Self.events[1].uppercased(), Self.events[1]]
        for (i, event) in ids.enumerated() {
            let id = RequestID.make()
            let request = AuditRequestRecord(requestID: id, receivedAt: "2025-03-0\(i + 1)T10:00:00.000Z", clientAddr: "10.0.0.1",
                                             team: "claims", keyFingerprint: nil, method: "POST", path: "/x", hookID: Self.hooks[i],
                                             eventRequestID: event, decision: "forwarded", userAgent: nil, clientRequestID: nil,
                                             configVersion: Self.config)
            try append("audit_requests", AuditSchema.requestColumns, request.values)
            let response = AuditResponseRecord(requestID: id, completedAt: "2025-03-0\(i + 1)T10:00:01.000Z", decision: "forwarded",
                                               status: 200, upstreamStatus: 200, upstreamMs: 1, totalMs: 2,
                                               upstreamContentType: nil, upstreamBody: nil, detail: nil)
            try append("audit_responses", AuditSchema.responseColumns, response.values(maxBodyBytes: 100))
        }
        db.close()
        // Before: the view reads everything from the tail and is already right.
        #expect(try Self.dailyDisagreements(path) == 0)
        let rebuilt = try AuditDerived.rebuild(path: path)
        #expect((rebuilt.records, rebuilt.summaryRows, rebuilt.lookupRows) == (6, 3, 3))
        #expect(try Self.dailyDisagreements(path) == 0)
        let query = try AuditQuery(path: path)
        #expect(try query.verify().derivedThrough == 6)
        #expect(try query.list(.parse(eventRequestID: Self.events[1])).rows.count == 2,
                "a UUID is found whatever case another tool stored it in")
        let check = try SQLiteConnection(path: path, readOnly: true)
        #expect(try check.scalarInt("SELECT count(*) FROM audit_event_lookup WHERE typeof(event_key) = 'blob' AND length(event_key) = 16") == 2)
        #expect(try check.scalarInt("SELECT count(*) FROM audit_event_lookup WHERE event_key = 'not-a-uuid'") == 1)
        check.close()
    }

    @Test func eventKeysAreTheUUIDsSixteenBytes() {
        #expect(AuditDerived.eventKey("29DD8606-4E01-46CB-ACA2-DD6022E74865")
                == .blob([0x29, 0xdd, 0x86, 0x06, 0x4e, 0x01, 0x46, 0xcb, 0xac, 0xa2, 0xdd, 0x60, 0x22, 0xe7, 0x48, 0x65]))
        #expect(AuditDerived.eventKey("29dd8606-4e01-46cb-aca2-dd6022e74865") == AuditDerived.eventKey("29DD8606-4E01-46CB-ACA2-DD6022E74865"))
        #expect(AuditDerived.eventKey("29dd8606-4e01-46cb-aca2-dd6022e7486") == .text("29dd8606-4e01-46cb-aca2-dd6022e7486"))
        #expect(AuditDerived.eventKey("29dd8606x4e01-46cb-aca2-dd6022e74865") == .text("29dd8606x4e01-46cb-aca2-dd6022e74865"))
    }
}
