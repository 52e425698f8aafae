import Foundation
import Testing
@testable import Hookgate

/// Every replica's audit shipped into one real PostgreSQL (issue 16): `initdb` in a temp dir,
/// password authentication, gateways with `audit.ship`, the bundled simulator upstream.
@Suite(.enabled(if: PostgresProcess.available)) struct AuditShippingTests {
    final class Central {
        let dir: String
        let sim: SimulatorProcess
        let pg: PostgresProcess
        let key = TeamKey()
        var gateways: [String: GatewayProcess] = [:]
        private var calls = 0

        init(_ name: String) throws {
            dir = Harness.tempDir(name)
            sim = try SimulatorProcess(dir: dir)
            pg = try PostgresProcess(dir: dir)
        }

        func stop() {
            gateways.values.forEach { $0.stop() }
            pg.stop()
            sim.stop()
        }

        /// A gateway shipping as `replica`, with its own audit file in `dir/<home>` (default: the replica's name).
        @discardableResult
        func start(replica: String, home: String? = nil, audit extra: [String: Any] = [:]) throws -> GatewayProcess {
            let path = dir + "/" + (home ?? replica)
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            var config = GatewayProcess.config(dir: path, simulator: sim,
                                               teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["e6db9c1a-d15f-4248-81fa-5b61fc321def"]]])
            var audit: [String: Any] = ["path": path + "/audit.sqlite3",
                                        "ship": ["postgres": pg.uri, "password": ["env": "PG_PASSWORD"], "replica": replica]]
            for (k, v) in extra { audit[k] = v }
            config["audit"] = audit
            let gw = try GatewayProcess(dir: path, config: config,
                                        environment: ["HOOKSHOT_SERVICE_TOKEN": Harness.serviceToken, "PG_PASSWORD": PostgresProcess.password])
            gateways[replica] = gw
            return gw
        }

        /// A call through `gw`: allowed, or (every third) on a hook outside the allow-list (403).
        func call(_ gw: GatewayProcess) throws -> Int {
            calls += 1
            let hook = calls % 3 == 0 ? "0f0f0f0f-1111-4222-8333-444444444444" : "e6db9c1a-d15f-4248-81fa-5b61fc321def"
            let event = String(format: "5a1b0000-0000-4000-8000-%012d", calls)
            return try RawHTTP.request(port: gw.port, target: "/hooks/\(hook)/requests/\(event)/redeliver",
                                       headers: [("Authorization", "Bearer \(key.key)")]).status
        }

        func metric(_ gw: GatewayProcess, _ name: String) -> Double? {
            guard let text = try? RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text else { return nil }
            return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }

        /// Waits until everything committed locally is in PostgreSQL, and the gateway says so.
        func waitShipped(_ gw: GatewayProcess, replica: String, seconds: Double = 20) throws {
            let local = try SQLiteConnection(path: gw.auditPath, readOnly: true)
            let head = try local.scalarInt("SELECT max((SELECT max(seq) FROM audit_requests), (SELECT max(seq) FROM audit_responses))") ?? 0
            try gw.child.wait("PostgreSQL holding seq \(head) of \(replica)", seconds: seconds) {
                let rows = try? pg.query("""
                    SELECT GREATEST((SELECT max(seq) FROM audit_requests WHERE replica = $1),
                                    (SELECT max(seq) FROM audit_responses WHERE replica = $1))
                    """, [replica])
                let held = rows?.first.flatMap { $0.first ?? nil }.flatMap { Int64($0) }
                return held == head && metric(gw, "hookgate_audit_ship_lag_records") == 0
            }
        }

        /// PostgreSQL holds exactly the local file's records for `replica`: same seqs, same hashes.
        func expectSame(replica: String, path: String) throws {
            let local = try SQLiteConnection(path: path, readOnly: true)
            for table in ["audit_requests", "audit_responses"] {
                let statement = try local.prepare("SELECT seq, hash FROM \(table) ORDER BY seq")
                var mine: [String] = []
                while try statement.step() { mine.append("\(statement.int(0)):\(statement.text(1) ?? "")") }
                let theirs = try pg.query("SELECT seq, hash FROM \(table) WHERE replica = $1 ORDER BY seq", [replica])
                    .map { "\($0[0] ?? ""):\($0[1] ?? "")" }
                #expect(theirs == mine, "\(replica) \(table): \(theirs.count) rows in PostgreSQL, \(mine.count) in the file; only in the file: \(Set(mine).subtracting(theirs).map { $0.prefix(8) }.sorted().prefix(10)), only in PostgreSQL: \(Set(theirs).subtracting(mine).map { $0.prefix(8) }.sorted().prefix(10))")
            }
        }
    }

    @Test func twoReplicasShipEveryRecordOnceWithTheirHashes() throws {
        let central = try Central("ship-two")
        defer { central.stop() }
        let gw1 = try central.start(replica: "gw-1"), gw2 = try central.start(replica: "gw-2")
        var statuses: [Int] = []
        for i in 0..<12 { statuses.append(try central.call(i % 2 == 0 ? gw1 : gw2)) }
        #expect(Set(statuses) == [200, 403])
        try central.waitShipped(gw1, replica: "gw-1")
        try central.waitShipped(gw2, replica: "gw-2")
        try central.expectSame(replica: "gw-1", path: gw1.auditPath)
        try central.expectSame(replica: "gw-2", path: gw2.auditPath)
        // The view: one row per call, with the contract's columns and the replica.
        let pairs = try central.pg.query("SELECT replica, decision, status FROM audit_pairs ORDER BY received_at")
        #expect(pairs.count == 12)
        #expect(Set(pairs.compactMap { $0[0] }) == ["gw-1", "gw-2"])
        #expect(pairs.filter { $0[1] == "forbidden" }.allSatisfy { $0[2] == "403" })
        let versions = try central.pg.query("SELECT version FROM hookgate_schema ORDER BY version")
        #expect(versions.map { $0[0] } == ["1", "2"])

        func audit(_ command: String, _ extra: [String] = []) throws -> (Int32, [String]) {
            let child = try ChildProcess(arguments: ["audit", command, "--db", central.pg.uri] + extra,
                                         environment: ["PGPASSWORD": PostgresProcess.password])
            let status = child.waitForExit()
            return (status, child.stdoutLines)
        }
        // list and export read the central view as they read a file, replica first.
        let (listed, table) = try audit("list", ["--replica", "gw-2", "--decision", "forbidden"])
        #expect(listed == 0 && table.count == 3, "\(table)")
        #expect(table.first?.hasPrefix("replica  request_id") == true)
        #expect(table.dropFirst().allSatisfy { $0.hasPrefix("gw-2 ") && $0.contains(" forbidden ") })
        let (exported, exportLines) = try audit("export")
        let objects = ChildProcess.objects(exportLines)
        #expect(exported == 0 && objects.count == 12)
        #expect(Set(objects.compactMap { $0["replica"] as? String }) == ["gw-1", "gw-2"])
        #expect(objects.allSatisfy { ($0["status"] as? Int) != nil && $0.count == CentralQuery.pairColumns.count })
        let shownCall = try #require(objects.first { $0["replica"] as? String == "gw-1" })
        let (shown, fields) = try audit("show", [shownCall["request_id"] as? String ?? "?"])
        #expect(shown == 0 && fields.first == "[audit_requests]" && fields.contains("replica: gw-1"), "\(fields)")
        #expect(fields.contains("[audit_responses]") && fields.contains { $0.hasPrefix("upstream_body: {") })

        // Each replica's chain verifies in PostgreSQL, as its file does locally ...
        func verify(_ extra: [String] = []) throws -> (Int32, [String]) { try audit("verify", extra) }
        let (ok, lines) = try verify()
        #expect(ok == 0, "\(lines)")
        #expect(lines.count == 3 && lines[0].hasPrefix("replica gw-1: audit chain OK: 12 records, 6 complete pairs, 0 requests without a response; last record: 12:"))
        #expect(lines.last == "audit chains OK: 2 replicas, 24 records")
        // ... and a row changed there is named, whatever the hash column says.
        _ = try central.pg.query("UPDATE audit_responses SET status = status + 1 WHERE replica = 'gw-2' AND seq = 6")
        let (failed, named) = try verify()
        #expect(failed == 1)
        #expect(named.contains("replica gw-2: audit chain BROKEN at seq 6 (audit_responses, replica gw-2): the stored hash does not match the record's content (the row was changed)"), "\(named)")
        let (alone, one) = try verify(["--replica", "gw-1"])
        #expect(alone == 0 && one.last == "audit chains OK: 1 replica, 12 records")
    }

    @Test func postgresStoppedUnderTrafficLosesAndDuplicatesNothing() throws {
        let central = try Central("ship-outage")
        defer { central.stop() }
        let gw = try central.start(replica: "gw-1")
        let stream = CallStream(port: gw.port, key: central.key, callers: 2)
        var outcomes: [CallStream.Outcome] = []
        do {
            defer { outcomes = stream.stop() }
            try stream.waitFor(calls: 30)
            central.pg.stop()
            try stream.waitFor(calls: 60)
            try gw.child.wait("lag while PostgreSQL is away") { (central.metric(gw, "hookgate_audit_ship_lag_records") ?? 0) > 0 }
            try central.pg.start()
            try stream.waitFor(calls: 30)
        }
        #expect(CallStream.problems(outcomes) == [:], "calls never wait for PostgreSQL")
        try central.waitShipped(gw, replica: "gw-1")
        try central.expectSame(replica: "gw-1", path: gw.auditPath)
        let warnings = ChildProcess.objects(gw.child.stderrLines).filter {
            $0["msg"] as? String == "audit shipping to PostgreSQL failing: calls go on, the central copy lags until it recovers"
        }
        #expect(warnings.count == 1, "once per outage")
    }

    @Test func aReplicaKilledMidBatchResumesWithoutAGap() throws {
        let central = try Central("ship-kill")
        defer { central.stop() }
        var gw = try central.start(replica: "gw-1")
        for _ in 0..<4 { _ = try central.call(gw) }
        try central.waitShipped(gw, replica: "gw-1")
        let before = try central.pg.query("SELECT count(*) FROM audit_requests WHERE replica = 'gw-1'")

        // Inserts into audit_responses wait for this lock (reads do not): the next batch stops in
        // the middle of its transaction, its requests copied, its responses not yet.
        let blocker = try PostgresConnection(uri: central.pg.uri, password: PostgresProcess.password)
        try blocker.execute("BEGIN")
        try blocker.execute("LOCK TABLE audit_responses IN SHARE MODE")
        for _ in 0..<6 { _ = try central.call(gw) }
        try gw.child.wait("the shipper blocked mid-batch") {
            let waiting = try? central.pg.query("""
                SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookgate-ship gw-1' AND wait_event_type = 'Lock'
                """)
            return waiting?.first?.first == "1"
        }
        gw.child.signal(SIGKILL)
        gw.child.waitForExit()
        try blocker.execute("ROLLBACK")
        #expect(try central.pg.query("SELECT count(*) FROM audit_requests WHERE replica = 'gw-1'") == before,
                "the killed batch left nothing behind")

        gw = try central.start(replica: "gw-1")
        for _ in 0..<3 { _ = try central.call(gw) }
        try central.waitShipped(gw, replica: "gw-1")
        try central.expectSame(replica: "gw-1", path: gw.auditPath)
    }

    @Test func aFileThatIsNotTheReplicasStopsShippingLoudly() throws {
        let central = try Central("ship-conflict")
        defer { central.stop() }
        let first = try central.start(replica: "gw-1")
        for _ in 0..<4 { _ = try central.call(first) }
        try central.waitShipped(first, replica: "gw-1")
        first.stop()
        // Another file under the same replica name (a copy-pasted config).
        let impostor = try central.start(replica: "gw-1", home: "other")
        for _ in 0..<2 { _ = try central.call(impostor) }
        try impostor.child.wait("shipping stopped") { central.metric(impostor, "hookgate_audit_ship_stopped") == 1 }
        // The log line reaches the pipe a moment after the metric changes.
        try impostor.child.wait("the stop logged") {
            ChildProcess.objects(impostor.child.stderrLines).contains { $0["msg"] as? String == "audit shipping stopped" }
        }
        let error = ChildProcess.objects(impostor.child.stderrLines).first { $0["msg"] as? String == "audit shipping stopped" }
        #expect((error?["error"] as? String)?.contains("replica \"gw-1\"") == true, "\(error ?? [:])")
        #expect(try central.call(impostor) == 200, "calls go on")
    }

    @Test func signedCheckpointsAreShippedToo() throws {
        let central = try Central("ship-checkpoints")
        defer { central.stop() }
        let keys = central.dir + "/keys"
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        #expect(try ChildProcess(arguments: ["keygen", "--audit-signing-key", keys]).waitForExit() == 0)
        let gw = try central.start(replica: "gw-1", audit: ["signing_key": ["file": keys + "/audit-signing.key.pem"], "checkpoint_interval_s": 1])
        for _ in 0..<4 { _ = try central.call(gw) }
        gw.stop()  // a final checkpoint, shipped on the way out
        let local = try SQLiteConnection(path: gw.auditPath, readOnly: true)
        let statement = try local.prepare("SELECT seq, signature FROM audit_checkpoints ORDER BY seq")
        var mine: [String] = []
        while try statement.step() { mine.append("\(statement.int(0)):\(statement.text(1) ?? "")") }
        #expect(mine.last?.hasPrefix("8:") == true, "the clean stop signed the last record: \(mine)")
        let theirs = try central.pg.query("SELECT seq, signature FROM audit_checkpoints WHERE replica = 'gw-1' ORDER BY seq")
            .map { "\($0[0] ?? ""):\($0[1] ?? "")" }
        #expect(theirs == mine)

        // The central copy checked with the public key: whole, then its last call cut off by
        // someone with write access to PostgreSQL — a chain check alone still passes.
        func verify(key: Bool) throws -> (status: Int32, out: [String]) {
            let child = try ChildProcess(arguments: ["audit", "verify", "--db", central.pg.uri, "--replica", "gw-1"]
                                         + (key ? ["--public-key", keys + "/audit-signing.pub.pem"] : []),
                                         environment: ["PGPASSWORD": PostgresProcess.password])
            let status = child.waitForExit()
            return (status, child.stdoutLines)
        }
        let whole = try verify(key: true)
        #expect(whole.status == 0, "\(whole.out)")
        #expect(whole.out.first?.hasPrefix("replica gw-1: audit checkpoints OK: \(mine.count) signed by ") == true, "\(whole.out)")
        #expect(whole.out.first?.hasSuffix("the newest at seq 8; 0 records after it are not signed yet") == true, "\(whole.out)")
        _ = try central.pg.query("DELETE FROM audit_responses WHERE replica = 'gw-1' AND seq = 8")
        _ = try central.pg.query("DELETE FROM audit_requests WHERE replica = 'gw-1' AND seq = 7")
        #expect(try verify(key: false).status == 0, "the chain alone cannot see a cut tail")
        let cut = try verify(key: true)
        #expect(cut.status == 1)
        #expect(cut.out.first?.contains("BROKEN at checkpoint seq 8") == true && cut.out.first?.contains("were cut off") == true, "\(cut.out)")
    }

    @Test func aRetiredReplicasFileIsShippedByHand() throws {
        let central = try Central("ship-by-hand")
        defer { central.stop() }
        let dir = central.dir + "/retired"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A gateway without audit.ship wrote this file.
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(
            dir: dir, simulator: central.sim, teams: [["name": "claims", "key_sha256": [central.key.sha256], "allow_hooks": ["*"]]]))
        for _ in 0..<5 { _ = try central.call(gw) }
        gw.stop()
        let ship = try ChildProcess(arguments: ["audit", "ship", "--db", gw.auditPath, "--to", central.pg.uri, "--replica", "retired-3"],
                                    environment: ["PGPASSWORD": PostgresProcess.password])
        #expect(ship.waitForExit() == 0, "\(ship.stderrLines)")
        #expect(ship.stdoutLines.first?.hasPrefix("shipped 10 records of replica retired-3 in ") == true, "\(ship.stdoutLines)")
        try central.expectSame(replica: "retired-3", path: gw.auditPath)
        // Again: nothing more, nothing twice.
        let again = try ChildProcess(arguments: ["audit", "ship", "--db", gw.auditPath, "--to", central.pg.uri, "--replica", "retired-3"],
                                     environment: ["PGPASSWORD": PostgresProcess.password])
        #expect(again.waitForExit() == 0)
        #expect(again.stdoutLines.first?.hasPrefix("shipped 0 records of replica retired-3") == true)
        try central.expectSame(replica: "retired-3", path: gw.auditPath)
    }

    /// With `audit.rotate`, a shipper that fell behind (PostgreSQL away) reads the rotated files
    /// in chain order, then the live one: every record once, across several rotations.
    @Test func aRotatedAuditIsShippedAcrossItsFiles() throws {
        let central = try Central("ship-rotated")
        defer { central.stop() }
        let gw = try central.start(replica: "gw-1", audit: ["rotate": ["max_bytes": 131_072]])
        _ = try central.call(gw)
        try central.waitShipped(gw, replica: "gw-1")
        central.pg.stop()
        for _ in 0..<360 { _ = try central.call(gw) }
        let dir = (gw.auditPath as NSString).deletingLastPathComponent
        let rotated = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("audit-") && $0.hasSuffix(".sqlite3") }
        // About 30 calls a file; a rotation that meets the shipper's brief reads waits a second,
        // so a slow run (ThreadSanitizer: 2 files of 240 calls) makes fewer: at least two to cross.
        #expect(rotated.count >= 2, "\(rotated)")
        try central.pg.start()
        try central.waitShipped(gw, replica: "gw-1", seconds: 30)
        let held = try central.pg.query("SELECT (SELECT count(*) FROM audit_requests WHERE replica = 'gw-1') + (SELECT count(*) FROM audit_responses WHERE replica = 'gw-1')")
        #expect(held.first?.first ?? nil == "722")
        let verify = try ChildProcess(arguments: ["audit", "verify", "--db", central.pg.uri, "--replica", "gw-1"],
                                      environment: ["PGPASSWORD": PostgresProcess.password])
        #expect(verify.waitForExit() == 0, "\(verify.stdoutLines)")
        #expect(verify.stdoutLines.first?.contains("audit chain OK: 722 records, 361 complete pairs") == true, "\(verify.stdoutLines)")
    }
}
