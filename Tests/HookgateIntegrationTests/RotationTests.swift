import Foundation
import Testing
@testable import Hookgate

/// Audit rotation (issue 17, `audit.rotate`): a real gateway under concurrent calls rotates its
/// file by size; the files verify as one chain (by directory, or several `--db` in any order),
/// with the signed checkpoints; list/export/show read them as one audit; an insider deleting a
/// middle file, cutting a rotated file's tail or removing the newest file is caught; a crash
/// (SIGKILL) at any moment, or between the steps of a rotation, leaves files that verify.
@Suite struct RotationTests {
    static let hook = "e6db9c1a-d15f-4248-81fa-5b61fc321def"

    struct Rig {
        let dir: String
        let auditDir: String
        let sim: SimulatorProcess
        let key = TeamKey()
        let keys: String
        let log: String
        let config: [String: Any]

        init(_ name: String, maxBytes: Int = 131_072) throws {
            dir = Harness.tempDir(name)
            auditDir = dir + "/audit"
            keys = dir + "/keys"
            log = dir + "/checkpoints.jsonl"
            try FileManager.default.createDirectory(atPath: auditDir, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
            let made = try ChildProcess(arguments: ["keygen", "--audit-signing-key", keys])
            #expect(made.waitForExit() == 0)
            sim = try SimulatorProcess(dir: dir)
            var config = GatewayProcess.config(dir: dir, simulator: sim, teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"]]])
            config["audit"] = ["path": auditDir + "/audit.sqlite3", "rotate": ["max_bytes": maxBytes],
                               "signing_key": ["file": keys + "/audit-signing.key.pem"], "checkpoint_interval_s": 1, "checkpoint_log": log]
            self.config = config
        }

        func start() throws -> GatewayProcess { try GatewayProcess(dir: dir, config: config) }

        /// The rotated files, oldest first (by name: the seqs are zero-padded).
        var rotated: [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: auditDir)) ?? [])
                .filter { $0.hasPrefix("audit-") && $0.hasSuffix(".sqlite3") }.sorted().map { auditDir + "/" + $0 }
        }

        func hookgate(_ arguments: [String]) throws -> (status: Int32, out: [String], err: [String]) {
            let child = try ChildProcess(arguments: arguments)
            let status = child.waitForExit(seconds: 60)
            return (status, child.stdoutLines, child.stderrLines)
        }

        func verify(_ dbs: [String], signed: Bool = true) throws -> (status: Int32, out: [String]) {
            var args = ["audit", "verify"] + dbs.flatMap { ["--db", $0] }
            if signed { args += ["--public-key", keys + "/audit-signing.pub.pem", "--checkpoints", log] }
            let r = try hookgate(args)
            return (r.status, r.out + r.err)
        }
    }

    /// Every 200 answer's request id, from 8 callers for about `seconds`.
    static func load(_ gw: GatewayProcess, key: TeamKey, seconds: Double) throws -> [String] {
        let stream = CallStream(port: gw.port, key: key, callers: 8)
        Thread.sleep(forTimeInterval: seconds)
        let outcomes = stream.stop()
        #expect(CallStream.problems(outcomes).isEmpty, "\(CallStream.problems(outcomes))")
        return outcomes.compactMap { if case .answered(200, let id) = $0 { id } else { nil } }
    }

    @Test func filesRotatedUnderLoadVerifyAsOneChainAndReadAsOneAudit() throws {
        let rig = try Rig("rotate-load")
        defer { rig.sim.stop() }
        let gw = try rig.start()
        let ids = try Self.load(gw, key: rig.key, seconds: 4)
        // A rotation follows the answers of the group before it: the metric catches up.
        var metrics = ""
        try gw.child.wait("the rotations counted") {
            metrics = (try? RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text) ?? ""
            return metrics.contains("\nhookgate_audit_rotations_total \(rig.rotated.count)\n")
        }
        #expect(metrics.contains("\nhookgate_audit_rotation_waiting 0\n"))
        gw.stop()
        let rotated = rig.rotated
        #expect(rotated.count >= 3, "only \(rotated.count) rotations for \(ids.count) calls")
        #expect(gw.child.stderrLines.filter { $0.contains("audit file rotated") }.count == rotated.count)
        // Names: stem-first-last-day; each file's range continues the one before.
        var expectedFirst: Int64 = 1
        for path in rotated {
            let range = try #require(AuditRotatedFiles.range(of: (path as NSString).lastPathComponent, stem: "audit", ext: "sqlite3"))
            #expect(range.lowerBound == expectedFirst, "\(path)")
            expectedFirst = range.upperBound + 1
        }
        let live = try SQLiteConnection(path: rig.auditDir + "/audit.sqlite3", readOnly: true)
        #expect(try AuditSegment.read(live).firstSeq == expectedFirst)

        // One chain: the directory, and the files named one by one in any order.
        let byDirectory = try rig.verify([rig.auditDir])
        #expect(byDirectory.status == 0, "\(byDirectory.out)")
        #expect(byDirectory.out.contains("audit chain OK: \(2 * ids.count) records, \(ids.count) complete pairs, 0 requests without a response"),
                "\(byDirectory.out)")
        #expect(byDirectory.out.contains { $0.hasPrefix("audit files: \(rotated.count + 1) files in chain order, records 1-\(2 * ids.count)") })
        #expect(byDirectory.out.contains { $0.hasPrefix("audit checkpoints OK:") })
        let shuffled = try rig.verify((rotated + [rig.auditDir + "/audit.sqlite3"]).shuffled())
        #expect(shuffled.status == 0, "\(shuffled.out)")

        // Read as one audit: every answered call exported once, each complete.
        let export = try rig.hookgate(["audit", "export", "--db", rig.auditDir])
        #expect(export.status == 0)
        let rows = export.out.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(rows.count == ids.count)
        #expect(Set(rows.compactMap { $0["request_id"] as? String }) == Set(ids))
        #expect(rows.allSatisfy { $0["status"] as? Int == 200 && !($0["completed_at"] is NSNull) })
        // A call in flight at a rotation: its request in one file, its response in the next.
        var straddlingCall: String?
        for (a, b) in zip(rotated, rotated.dropFirst() + [rig.auditDir + "/audit.sqlite3"]) where straddlingCall == nil {
            let db = try SQLiteConnection(path: a, readOnly: true)
            try db.execute("ATTACH '\(b)' AS b")
            let q = try db.prepare("SELECT q.request_id FROM audit_requests q JOIN b.audit_responses r ON r.request_id = q.request_id LIMIT 1")
            if try q.step() { straddlingCall = q.text(0) }
            q.reset()
        }
        // With 8 callers, some call is in flight at one rotation or another.
        let straddling = try #require(straddlingCall, "no call was in flight at any of \(rotated.count) rotations")
        do {
            let listed = try rig.hookgate(["audit", "list", "--db", rig.auditDir, "--request-id", straddling])
            #expect(listed.out.count == 2 && listed.out[1].contains("forwarded") && listed.out[1].contains("200"), "\(listed.out)")
            let shown = try rig.hookgate(["audit", "show", "--db", rig.auditDir, straddling])
            #expect(shown.status == 0)
            #expect(shown.out.contains { $0.hasPrefix("completed_at: 20") }, "\(shown.out)")
        }
    }

    /// Renaming a database another connection has open would be unsafe: an idle reader (no
    /// transaction) holds the rotation up, calls go on, and it happens once the reader closes.
    @Test func aRotationWaitsWhileAnotherConnectionHasTheLiveFileOpen() throws {
        let rig = try Rig("rotate-reader")
        defer { rig.sim.stop() }
        let gw = try rig.start()
        defer { gw.stop() }
        let reader = try SQLiteConnection(path: rig.auditDir + "/audit.sqlite3", readOnly: true)
        #expect(try reader.scalarInt("SELECT count(*) FROM audit_requests") == 0)
        let ids = try Self.load(gw, key: rig.key, seconds: 1.5)
        func metrics() throws -> String { try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text }
        #expect(rig.rotated.isEmpty)
        #expect(try metrics().contains("\nhookgate_audit_rotation_waiting 1\n"))
        try gw.child.wait("the waiting line") { gw.child.stderrLines.contains { $0.contains("audit rotation waits: another connection has") } }
        reader.close()
        // The file is renamed a moment before the writer counts the rotation.
        try gw.child.wait("a rotation once the reader closed", seconds: 10) {
            rig.rotated.count == 1 && (try? metrics().contains("\nhookgate_audit_rotations_total 1\n")) == true
        }
        #expect(try metrics().contains("\nhookgate_audit_rotation_waiting 0\n"))
        gw.stop()
        let verified = try rig.verify([rig.auditDir])
        #expect(verified.status == 0, "\(verified.out)")
        #expect(verified.out.contains("audit chain OK: \(2 * ids.count) records, \(ids.count) complete pairs, 0 requests without a response"))
    }

    /// Years of daily files outnumber the descriptors a process may open: the tools keep a few
    /// files open at a time (here, under `ulimit -n 40`, over 100 files).
    @Test func manyFilesAreReadWithFewDescriptors() throws {
        let rig = try Rig("rotate-many", maxBytes: 4096)
        defer { rig.sim.stop() }
        let gw = try rig.start()
        var ids: [String] = []
        for i in 0..<60 {
            let answer = try RawHTTP.request(port: gw.port, target: "/hooks/\(Self.hook)/requests/5eed0000-0000-4000-8000-\(String(format: "%012d", i))/redeliver",
                                             headers: [("Authorization", "Bearer \(rig.key.key)")])
            #expect(answer.status == 200)
            ids.append(answer.header("X-Request-Id") ?? "")
        }
        gw.stop()
        let files = rig.rotated.count + 1
        #expect(files > 100, "\(files) files")
        func limited(_ arguments: [String]) throws -> (status: Int32, out: [String]) {
            let child = try ChildProcess(arguments: ["-c", "ulimit -n 40 && exec \"$0\" \"$@\"", Harness.binary] + arguments,
                                         executable: "/bin/bash")
            let status = child.waitForExit(seconds: 60)
            return (status, child.stdoutLines + child.stderrLines)
        }
        let verified = try limited(["audit", "verify", "--db", rig.auditDir, "--public-key", rig.keys + "/audit-signing.pub.pem",
                                    "--checkpoints", rig.log])
        #expect(verified.status == 0, "\(verified.out.suffix(5))")
        #expect(verified.out.contains { $0.hasPrefix("audit files: \(files) files in chain order, records 1-120") }, "\(verified.out)")
        // A limit reached exactly at a file's end says "more match" only when more do.
        let all = try limited(["audit", "list", "--db", rig.auditDir, "--limit", "60"])
        #expect(all.status == 0 && all.out.filter { $0.contains("forwarded") }.count == 60 && all.out.last == "60 rows", "\(all.out.suffix(2))")
        let fewer = try limited(["audit", "list", "--db", rig.auditDir, "--limit", "59"])
        #expect(fewer.out.last?.hasPrefix("59 rows (more match") == true, "\(fewer.out.suffix(2))")
        let exported = try limited(["audit", "export", "--db", rig.auditDir])
        #expect(exported.status == 0)
        #expect(Set(exported.out.compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["request_id"] as? String
        }) == Set(ids))
    }

    @Test func aDeletedMiddleFileACutTailOrAMissingNewestFileIsCaught() throws {
        let rig = try Rig("rotate-tamper")
        defer { rig.sim.stop() }
        let gw = try rig.start()
        _ = try Self.load(gw, key: rig.key, seconds: 3)
        gw.stop()
        let rotated = rig.rotated
        try #require(rotated.count >= 3)
        let live = rig.auditDir + "/audit.sqlite3"

        // A middle file deleted (moved away).
        let middle = rotated[1], name = (middle as NSString).lastPathComponent
        let range = try #require(AuditRotatedFiles.range(of: name, stem: "audit", ext: "sqlite3"))
        try FileManager.default.moveItem(atPath: middle, toPath: rig.dir + "/" + name)
        let gap = try rig.verify([rig.auditDir])
        #expect(gap.status == 1)
        #expect(gap.out.contains { $0.contains("records \(range.lowerBound)-\(range.upperBound) are missing") }, "\(gap.out)")
        try FileManager.default.moveItem(atPath: rig.dir + "/" + name, toPath: middle)

        // The last records of a rotated file cut (a copy, rehashing nothing: the seal names its end).
        let first = rotated[0], copy = rig.dir + "/cut.sqlite3"
        try FileManager.default.copyItem(atPath: first, toPath: copy)
        let cut = try SQLiteConnection(path: copy)
        try cut.execute("DELETE FROM audit_responses WHERE seq = (SELECT max(seq) FROM audit_responses); "
                        + "DELETE FROM audit_requests WHERE seq > (SELECT COALESCE(max(seq), 0) FROM audit_responses)")
        cut.close()
        let cutTail = try rig.verify([copy] + rotated.dropFirst() + [live])
        #expect(cutTail.status == 1)
        #expect(cutTail.out.contains { $0.contains("records were cut from its end") }, "\(cutTail.out)")

        // The newest file removed: the signed checkpoints go past what is left.
        let withoutNewest = try rig.verify(rotated)
        #expect(withoutNewest.status == 1)
        #expect(withoutNewest.out.contains { $0.contains("were cut off") }, "\(withoutNewest.out)")

        // Older files retired under a retention policy: the rest still verifies, saying so.
        let retained = try rig.verify(Array(rotated.dropFirst()) + [live])
        #expect(retained.status == 0, "\(retained.out)")
        #expect(retained.out.contains { $0.contains("the chain starts before them") })
        #expect(retained.out.contains { $0.contains("cover records before the files given (not checked)") })
    }

    @Test func aKillAtAnyMomentLeavesFilesThatVerifyAndEveryAnsweredCallRecorded() throws {
        let rig = try Rig("rotate-kill")
        defer { rig.sim.stop() }
        var answered: Set<String> = []
        for round in 0..<5 {
            let gw = try rig.start()
            let stream = CallStream(port: gw.port, key: rig.key, callers: 8)
            Thread.sleep(forTimeInterval: 0.6 + 0.25 * Double(round))
            gw.child.signal(SIGKILL)
            _ = gw.child.waitForExit()
            for case .answered(200, let id) in stream.stop() { answered.insert(id) }
        }
        // The sealed-but-not-renamed state of a crash between the two steps, made by hand on a
        // live file that holds records of its own.
        let live = rig.auditDir + "/audit.sqlite3"
        let filler = try rig.start()
        for i in 0..<3 {
            let answer = try RawHTTP.request(port: filler.port, target: "/hooks/\(Self.hook)/requests/5eed0000-0000-4000-8000-9999000000\(i)0/redeliver",
                                             headers: [("Authorization", "Bearer \(rig.key.key)")])
            #expect(answer.status == 200)
            if let id = answer.header("X-Request-Id") { answered.insert(id) }
        }
        filler.stop()
        let db = try SQLiteConnection(path: live)
        db.waitWhenBusy(ms: 1000)
        let sealing = try AuditRotator.seal(db, path: live, now: Date(), busyTimeoutMs: 1000) { _, _ throws(AuditError) in }
        db.close()
        guard case .sealed(let sealed) = sealing else {
            Issue.record("the live file was not sealed: \(sealing)")
            return
        }
        // ... and the archive name already linked (a crash after the link, before the rename).
        #expect(link(live, rig.auditDir + "/" + sealed.archivedAs!) == 0)
        let before = rig.rotated.count - 1
        let gw = try rig.start()
        answered.formUnion(try Self.load(gw, key: rig.key, seconds: 1))
        gw.stop()
        #expect(rig.rotated.count > before, "the sealed file's rotation was not finished")
        #expect(rig.rotated.contains { $0.hasSuffix(sealed.archivedAs!) })
        let verified = try rig.verify([rig.auditDir])
        #expect(verified.status == 0, "\(verified.out)")
        let export = try rig.hookgate(["audit", "export", "--db", rig.auditDir])
        let rows = export.out.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let complete = Set(rows.filter { $0["status"] as? Int == 200 }.compactMap { $0["request_id"] as? String })
        #expect(answered.isSubset(of: complete), "\(answered.subtracting(complete).count) answered calls without their pair")
        #expect(answered.count > 50, "too little load: \(answered.count)")
    }
}
