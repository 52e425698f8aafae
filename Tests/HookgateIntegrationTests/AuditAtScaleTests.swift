import Foundation
import Testing
@testable import Hookgate

/// `hookgate generate-audit` (the year-of-traffic files of bench/AUDIT.md) and `audit verify`
/// on such a file, run as a user runs them.
@Suite struct AuditAtScaleTests {
    static func run(_ arguments: [String], seconds: Double = 60) throws -> (status: Int32, out: [String], err: [String]) {
        let child = try ChildProcess(arguments: arguments)
        let status = child.waitForExit(seconds: seconds)
        try child.wait("output") { !(child.stdoutLines + child.stderrLines).isEmpty }
        return (status, child.stdoutLines, child.stderrLines)
    }

    @Test func aGeneratedFileVerifiesIsSpreadLikeTrafficAndComesOutTheSameForTheSameSeed() throws {
        let dir = Harness.tempDir("generate")
        let made = try Self.run(["generate-audit", "--out", dir + "/a.sqlite3", "--calls", "3000", "--days", "3",
                                 "--teams", "4", "--hooks", "40", "--seed", "7", "--start", "2025-06-01"])
        #expect(made.status == 0, "\(made.err)")
        #expect(made.out.first?.hasPrefix("wrote \(dir)/a.sqlite3: 3000 calls, 6000 records") == true, "\(made.out)")
        let verify = try Self.run(["audit", "verify", "--db", dir + "/a.sqlite3"])
        #expect(verify.status == 0)
        #expect(verify.out.count == 3)
        #expect(verify.out.first == "audit derived tables OK: the summaries and the lookup agree with the records up to seq 6000")
        #expect(verify.out.dropFirst().first == "audit chain OK: 6000 records, 3000 complete pairs, 0 requests without a response")
        #expect(verify.err.isEmpty, "no progress line when standard error is not a terminal: \(verify.err)")

        let db = try SQLiteConnection(path: dir + "/a.sqlite3", readOnly: true)
        #expect(try db.scalarInt("SELECT count(DISTINCT team) FROM audit_requests") == 4)
        #expect(try db.scalarInt("SELECT count(DISTINCT hook_id) FROM audit_requests") == 40)
        #expect(try db.scalarInt("SELECT count(*) FROM audit_requests WHERE received_at < '2025-06-01' OR received_at >= '2025-06-04'") == 0)
        #expect(try db.scalarInt("SELECT count(DISTINCT substr(received_at, 1, 10)) FROM audit_requests") == 3)
        let forwarded = try #require(try db.scalarInt("SELECT count(*) FROM audit_pairs WHERE decision = 'forwarded'"))
        #expect((2400...2750).contains(forwarded), "about 86 % forwarded: \(forwarded)")
        #expect(try db.scalarInt("SELECT count(DISTINCT decision) FROM audit_pairs") ?? 0 >= 8, "refusals and failures of most kinds")
        #expect(try db.scalarInt("SELECT count(*) FROM (SELECT event_request_id FROM audit_requests WHERE event_request_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1)") ?? 0 > 50,
                "some Hookshot requests redelivered more than once")
        #expect(try db.scalarInt("SELECT count(*) FROM audit_responses r JOIN audit_requests q USING (request_id) WHERE r.seq != q.seq + 1") ?? 0 > 100,
                "calls overlap: responses recorded after later requests")

        let again = try Self.run(["generate-audit", "--out", dir + "/b.sqlite3", "--calls", "3000", "--days", "3",
                                  "--teams", "4", "--hooks", "40", "--seed", "7", "--start", "2025-06-01"])
        #expect(again.status == 0)
        let other = try Self.run(["audit", "verify", "--db", dir + "/b.sqlite3"])
        #expect(other.out.last == verify.out.last, "the same seed writes the same chain (same last hash)")
        #expect(other.out.last?.hasPrefix("last record: 6000:") == true)
    }

    @Test func verifyFailsOnAnEditedSummaryAndRebuildRepairsItAsAUserRunsThem() throws {
        let dir = Harness.tempDir("rebuild")
        let path = dir + "/a.sqlite3"
        let made = try Self.run(["generate-audit", "--out", path, "--calls", "2000", "--days", "2", "--teams", "3", "--hooks", "30"])
        #expect(made.status == 0, "\(made.err)")
        let before = try Self.run(["audit", "list", "--db", path, "--team", "team-01", "--limit", "0"])
        let writer = try SQLiteConnection(path: path)
        try writer.execute("UPDATE audit_summary_hooks SET calls = calls + 5 WHERE day = '2025-01-01' AND team = 'team-01' AND status = 200")
        writer.close()
        let broken = try Self.run(["audit", "verify", "--db", path])
        #expect(broken.status == 1)
        #expect(broken.out.first?.hasPrefix("audit derived tables DISAGREE: audit_summary_hooks on 2025-01-01, team team-01, hook ") == true, "\(broken.out)")
        #expect(broken.out.first?.contains("hookgate audit rebuild --db \(path)") == true)

        let rebuilt = try Self.run(["audit", "rebuild", "--db", path])
        #expect(rebuilt.status == 0, "\(rebuilt.err)")
        #expect(rebuilt.out.first?.hasPrefix("rebuilt \(path): 4000 records in ") == true, "\(rebuilt.out)")
        #expect(rebuilt.out.first?.hasSuffix("lookup rows in 1 batches") == true, "\(rebuilt.out)")
        let verify = try Self.run(["audit", "verify", "--db", path])
        #expect(verify.status == 0, "\(verify.out)")
        #expect(verify.out.first == "audit derived tables OK: the summaries and the lookup agree with the records up to seq 4000")
        let after = try Self.run(["audit", "list", "--db", path, "--team", "team-01", "--limit", "0"])
        #expect(after.out == before.out, "the records are untouched")
        // A file younger than a batch (the gateway has not written one yet): nothing to compare.
        let young = dir + "/young.sqlite3"
        #expect(try Self.run(["generate-audit", "--out", young, "--calls", "10"]).status == 0)
        let reset = try SQLiteConnection(path: young)
        try reset.execute("DELETE FROM audit_summary_hooks; DELETE FROM audit_summary_teams; DELETE FROM audit_event_lookup; DELETE FROM audit_batches")
        reset.close()
        let fresh = try Self.run(["audit", "verify", "--db", young])
        #expect(fresh.status == 0)
        #expect(fresh.out.first == "audit derived tables OK: no batch written yet (the views and lookups read the records themselves)")
        let missing = try Self.run(["audit", "rebuild", "--db", dir + "/none.sqlite3"])
        #expect(missing.status == 1)
        #expect(missing.err.joined().contains("no such file"), "\(missing.err)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/none.sqlite3"), "never creates a file")
    }

    @Test func aGatewayStartedOnASchema2FileDerivesItsSummariesSaysSoAndServes() throws {
        let dir = Harness.tempDir("migrate")
        let path = dir + "/audit.sqlite3"
        let made = try Self.run(["generate-audit", "--out", path, "--calls", "55000", "--days", "2", "--teams", "2", "--hooks", "20"])
        #expect(made.status == 0, "\(made.err)")
        // What a schema-2 gateway left: no derived tables.
        let old = try SQLiteConnection(path: path)
        try old.execute("""
            DROP VIEW audit_daily; DROP VIEW audit_daily_hooks; DROP TABLE audit_event_lookup; DROP TABLE audit_summary_hooks;
            DROP TABLE audit_summary_teams; DROP TABLE audit_batches; PRAGMA user_version = 2
            """)
        old.close()
        let before = try Self.run(["audit", "verify", "--db", path])
        #expect(before.out.first == "audit derived tables: none in this file (written before schema 3; hookgate audit rebuild adds them)")

        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let key = TeamKey()
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(
            dir: dir, simulator: sim, teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"]]]))
        defer { gw.stop() }
        let notices = ChildProcess.objects(gw.child.stderrLines).compactMap { $0["msg"] as? String }
        #expect(notices.contains { $0.hasPrefix("deriving the audit summaries and lookup for 110000 records") }, "\(notices)")
        #expect(notices.contains { $0.hasPrefix("audit summaries and lookup derived for 110000 records in ") }, "\(notices)")
        let event = "29dd8606-4e01-46cb-aca2-dd6022e74865"
        let ok = try RawHTTP.request(port: gw.port, target: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/\(event)/redeliver",
                                     headers: [("Authorization", "Bearer \(key.key)")])
        #expect(ok.status == 200)
        gw.stop()

        let verify = try Self.run(["audit", "verify", "--db", path])
        #expect(verify.status == 0, "\(verify.out)")
        #expect(verify.out.first == "audit derived tables OK: the summaries and the lookup agree with the records up to seq 110000")
        #expect(verify.out.dropFirst().first == "audit chain OK: 110002 records, 55001 complete pairs, 0 requests without a response")
        let db = try SQLiteConnection(path: path, readOnly: true)
        #expect(try db.scalarInt("PRAGMA user_version") == AuditSchema.version)
        #expect(try db.scalarInt("SELECT sum(calls) FROM audit_daily") == 55001, "the view adds the new call from the tail")
        #expect(try db.scalarInt("SELECT sum(calls) FROM audit_daily WHERE team = 'claims'") == 1)
        db.close()
        let found = try Self.run(["audit", "list", "--db", path, "--event-request-id", event])
        #expect(found.out.count == 2 && found.out[1].hasPrefix(ok.header("X-Request-Id") ?? "?"), "\(found.out)")
    }

    @Test func generateRefusesAnExistingFileAndBadOptions() throws {
        let dir = Harness.tempDir("generate-refuse")
        #expect(FileManager.default.createFile(atPath: dir + "/x.sqlite3", contents: Data("keep".utf8)))
        let exists = try Self.run(["generate-audit", "--out", dir + "/x.sqlite3", "--calls", "10"])
        #expect(exists.status == 64)
        #expect(exists.err.joined().contains("exists"), "\(exists.err)")
        #expect(try String(contentsOfFile: dir + "/x.sqlite3", encoding: .utf8) == "keep")
        let badDay = try Self.run(["generate-audit", "--out", dir + "/y.sqlite3", "--start", "2025-02-30"])
        #expect(badDay.status == 64)
        #expect(badDay.err.joined().contains("--start"), "\(badDay.err)")
    }
}
