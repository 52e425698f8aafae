import Foundation
import Testing
@testable import Hookgate

/// The audit log as compliance sees it, written by the real gateway.
@Suite struct AuditIntegrationTests {
    static let hook = "e6db9c1a-d15f-4248-81fa-5b61fc321def"

    static func path(_ request: String, hook: String = hook) -> String { "/hooks/\(hook)/requests/\(request)/redeliver" }

    /// Rows of `audit_pairs` keyed by request id, read with a separate read-only connection.
    static func pairs(_ db: String) throws -> [String: [String: SQLValue]] {
        let conn = try SQLiteConnection(path: db, readOnly: true)
        let s = try conn.prepare("SELECT \(AuditSchema.pairColumns.joined(separator: ", ")) FROM audit_pairs")
        var out: [String: [String: SQLValue]] = [:]
        while try s.step() {
            var row: [String: SQLValue] = [:]
            for (i, name) in AuditSchema.pairColumns.enumerated() { row[name] = s.value(i) }
            if case .text(let id)? = row["request_id"] { out[id] = row }
        }
        return out
    }

    @Test func everyCallHasOneCorrectRowAndNoSecretIsStored() throws {
        try withRig("audit", allowHooks: [Self.hook]) { rig in
            let dir = rig.dir, gw = rig.gw, key = rig.key
            let configVersion = SHA256.hex(bytes: try Data(contentsOf: URL(fileURLWithPath: gw.configPath)))
            let auth = [("Authorization", "Bearer \(key.key)")]

            let ok = try RawHTTP.request(port: gw.port, target: Self.path("29DD8606-4e01-46cb-aca2-dd6022e74865"),
                                         headers: auth + [("X-Request-Id", "caller-123"), ("User-Agent", "audit-test/1")])
            let e500 = try RawHTTP.request(port: gw.port, target: Self.path("00000500-4e01-46cb-aca2-dd6022e74865"), headers: auth)
            let forbidden = try RawHTTP.request(port: gw.port, target: Self.path("29dd8606-4e01-46cb-aca2-dd6022e74865",
                                                                                   hook: "0f0f0f0f-1111-4222-8333-444444444444"), headers: auth)
            let unknown = try RawHTTP.request(port: gw.port, target: Self.path("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                              headers: [("Authorization", "Bearer some-unknown-key")])
            let notFound = try RawHTTP.request(port: gw.port, method: "GET", target: "/nope")
            let statuses: [Int] = [ok.status, e500.status, forbidden.status, unknown.status, notFound.status]
            #expect(statuses == [200, 500, 403, 401, 404])

            let rows = try Self.pairs(dir + "/audit.sqlite3")
            #expect(rows.count == 5)
            let a = try #require(rows[ok.header("X-Request-Id") ?? ""])
            #expect(a["team"] == .text("claims"))
            #expect(a["key_fingerprint"] == .text(String(key.sha256.prefix(16))))
            #expect(a["decision"] == .text("forwarded"))
            #expect(a["status"] == .int(200))
            #expect(a["upstream_status"] == .int(200))
            #expect(a["method"] == .text("POST"))
            #expect(a["path"] == .text(Self.path("29dd8606-4e01-46cb-aca2-dd6022e74865")))
            #expect(a["hook_id"] == .text(Self.hook))
            #expect(a["event_request_id"] == .text("29dd8606-4e01-46cb-aca2-dd6022e74865"))
            #expect(a["delivery_id"] == .text(ok.json["delivery_id"] as? String ?? "?"))
            #expect(a["event"] == .text("application_form:inactive"))
            #expect(a["tenant_id"] == .text(ok.json["tenant_id"] as? String ?? "?"))
            #expect(a["client_addr"] == .text("127.0.0.1"))
            #expect(a["client_request_id"] == .text("caller-123"))
            #expect(a["user_agent"] == .text("audit-test/1"))
            #expect(a["config_version"] == .text(configVersion))
            guard case .text(let received)? = a["received_at"], case .text(let completed)? = a["completed_at"],
                  case .double(let upstreamMs)? = a["upstream_ms"], case .double(let totalMs)? = a["total_ms"] else {
                Issue.record("timestamps or durations missing: \(a)")
                return
            }
            #expect(received.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil)
            #expect(completed >= received)
            #expect(upstreamMs > 0 && totalMs >= upstreamMs)

            let b = try #require(rows[e500.header("X-Request-Id") ?? ""])
            #expect(b["decision"] == .text("forwarded"))
            #expect(b["status"] == .int(500))
            #expect(b["upstream_status"] == .int(500))
            let c = try #require(rows[forbidden.header("X-Request-Id") ?? ""])
            #expect(c["decision"] == .text("forbidden"))
            #expect(c["status"] == .int(403))
            #expect(c["team"] == .text("claims"))
            #expect(c["upstream_status"] == .null)
            #expect(c["upstream_ms"] == .null)
            let d = try #require(rows[unknown.header("X-Request-Id") ?? ""])
            #expect(d["decision"] == .text("unauthenticated"))
            #expect(d["team"] == .null)
            #expect(d["key_fingerprint"] == .text(String(SHA256.hex("some-unknown-key").prefix(16))))
            let e = try #require(rows[notFound.header("X-Request-Id") ?? ""])
            #expect(e["decision"] == .text("not_found"))
            #expect(e["key_fingerprint"] == .null)
            #expect(e["path"] == .text("/nope"))

            // No secret anywhere in the database files (main file and WAL).
            gw.stop()
            for file in try FileManager.default.contentsOfDirectory(atPath: dir) where file.hasPrefix("audit.sqlite3") {
                let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file))
                for secret in [key.key, Harness.serviceToken, "some-unknown-key"] {
                    #expect(bytes.range(of: Data(secret.utf8)) == nil, "\(file) contains a secret")
                }
            }
            let report = try AuditChain.verify(try SQLiteConnection(path: dir + "/audit.sqlite3", readOnly: true))
            #expect(report.broken == nil)
            #expect(report.records == 10)
            #expect(report.pairs == 5)
            #expect(report.incomplete == 0)
        }
    }

    @Test func failsClosedWhileTheDatabaseIsLockedAndRecoversByItself() throws {
        try withRig("lock", allowHooks: ["*"], extra: [:]) { rig in
            let dir = rig.dir, sim = rig.sim, gw = rig.gw, key = rig.key
            let auth = [("Authorization", "Bearer \(key.key)")]
            #expect(try RawHTTP.request(port: gw.port, target: Self.path("29dd8606-4e01-46cb-aca2-dd6022e74865"), headers: auth).status == 200)

            // Another connection holds the write lock (as a careless tool would).
            let locker = try SQLiteConnection(path: dir + "/audit.sqlite3")
            try locker.execute("BEGIN IMMEDIATE")
            let refused = try RawHTTP.request(port: gw.port, target: Self.path("29dd8606-4e01-46cb-aca2-dd6022e74866"), headers: auth)
            #expect(refused.status == 503)
            #expect(refused.header("Content-Type") == "application/problem+json")
            #expect((refused.json["detail"] as? String)?.contains("audit") == true)
            let ready = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz")
            #expect(ready.status == 503)
            #expect(ready.text.contains("audit"))
            let reached = sim.requests.filter { ($0["target"] as? String ?? "").contains("dd6022e74866") }
            #expect(reached.isEmpty)

            try locker.execute("ROLLBACK")
            locker.close()
            let back = try RawHTTP.request(port: gw.port, target: Self.path("29dd8606-4e01-46cb-aca2-dd6022e74867"), headers: auth)
            #expect(back.status == 200)
            #expect(try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz").status == 200)
            let report = try AuditChain.verify(try SQLiteConnection(path: dir + "/audit.sqlite3", readOnly: true))
            #expect(report.broken == nil)
            #expect(report.pairs == 2)
        }
    }

    @Test func sigtermLetsACallInFlightFinishThenExitsZero() throws {
        try withRig("drain", allowHooks: ["*"], upstream: ["timeout_ms": 6000]) { rig in
            let dir = rig.dir, sim = rig.sim, gw = rig.gw, key = rig.key
            let result = LockedBox<HTTPResponse?>(nil)
            let done = DispatchSemaphore(value: 0)
            let port = gw.port
            Thread.detachNewThread {
                let r = try? RawHTTP.request(port: port, target: Self.path("00005100-4e01-46cb-aca2-dd6022e74865"),
                                             headers: [("Authorization", "Bearer \(key.key)")])
                result.set(r)
                done.signal()
            }
            try gw.child.wait("the slow call to reach the upstream") { !sim.requests.isEmpty }
            gw.child.signal(SIGTERM)
            #expect(done.wait(timeout: .now() + 10) == .success)
            #expect(result.get()?.status == 200)
            #expect(gw.child.waitForExit() == 0)
            let rows = try Self.pairs(dir + "/audit.sqlite3")
            #expect(rows.values.first?["status"] == .int(200))
        }
    }

    @Test func aDrainDoesNotWaitForAClientThatLeftBeforeItsAnswer() throws {
        // The caller hangs up while its call is upstream: its answer can never be written, and
        // the drain must not wait drain_timeout_ms (10 s here) for it.
        try withRig("drain-gone", allowHooks: ["*"], extra: ["limits": ["drain_timeout_ms": 10_000]],
                    upstream: ["timeout_ms": 6000]) { rig in
            let fd = try RawSocket.connect(port: rig.gw.port)
            let request = Array(("POST \(Self.path("00005100-4e01-46cb-aca2-dd6022e74865")) HTTP/1.1\r\nHost: gw\r\n"
                + "Authorization: Bearer \(rig.key.key)\r\n\r\n").utf8)
            #expect(send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count)
            try rig.gw.child.wait("the slow call to reach the upstream") { !rig.sim.requests.isEmpty }
            close(fd)
            Thread.sleep(forTimeInterval: 0.2)
            let stopped = Date()
            rig.gw.child.signal(SIGTERM)
            #expect(rig.gw.child.waitForExit(seconds: 12) == 0)
            // The call finishes upstream (the simulator answers after 3 s), is recorded, and then
            // the gateway exits: well before the 10 s drain timeout.
            #expect(Date().timeIntervalSince(stopped) < 6, "exit took \(Date().timeIntervalSince(stopped)) s")
            #expect(!rig.gw.child.stderrLines.contains { $0.contains("drain timeout") })
            let rows = try Self.pairs(rig.dir + "/audit.sqlite3")
            #expect(rows.values.first?["status"] == .int(200), "the call is recorded as Hookshot answered it")
        }
    }
}

final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
    func update(_ change: (inout T) -> Void) { lock.lock(); change(&value); lock.unlock() }
}

/// SIGKILL under load: every call that got an answer has its complete pair, and the chain
/// (with the requests cut off mid-flight) still verifies.
@Suite struct CrashSafetyTests {
    @Test func killedUnderLoadLosesNoAnsweredCall() throws {
        try withRig("crash", allowHooks: ["*"]) { rig in
            let dir = rig.dir, gw = rig.gw, key = rig.key
            let answered = LockedBox<[(String, Int)]>([])
            let stop = LockedBox(false)
            let group = DispatchGroup()
            let port = gw.port, k = key.key
            for worker in 0..<8 {
                group.enter()
                Thread.detachNewThread {
                    var i = 0
                    while !stop.get() {
                        i += 1
                        let id = String(format: "29dd8606-4e01-46cb-%04d-%012d", worker, i)
                        if let r = try? RawHTTP.request(port: port, target: AuditIntegrationTests.path(id),
                                                        headers: [("Authorization", "Bearer \(k)")], timeout: 3),
                           r.status > 0, let gid = r.header("X-Request-Id") {
                            answered.update { $0.append((gid, r.status)) }
                        }
                    }
                    group.leave()
                }
            }
            Thread.sleep(forTimeInterval: 1.0)
            gw.child.signal(SIGKILL)
            _ = gw.child.waitForExit()
            stop.set(true)
            #expect(group.wait(timeout: .now() + 10) == .success)
            let calls = answered.get()
            #expect(calls.count > 20, "too little load: \(calls.count)")
            let rows = try AuditIntegrationTests.pairs(dir + "/audit.sqlite3")
            for (id, status) in calls {
                guard let row = rows[id] else { Issue.record("answered call \(id) has no audit record"); continue }
                #expect(row["status"] == .int(Int64(status)), "\(id)")
                #expect(row["completed_at"] != .null, "\(id)")
            }
            let report = try AuditChain.verify(try SQLiteConnection(path: dir + "/audit.sqlite3", readOnly: true))
            #expect(report.broken == nil, "\(report)")
        }
    }
}

@Suite struct ReadOnlyAuditFileTests {
    @Test func aReadOnlyAuditFileFailsClosedEvenForRootAndRecovers() throws {
        try withRig("readonly") { rig in
            let db = rig.dir + "/audit.sqlite3"
            #expect(try RawHTTP.request(port: rig.gw.port, target: AuditIntegrationTests.path("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                        headers: rig.auth).status == 200)
            try FileManager.default.setAttributes([.posixPermissions: 0o444], ofItemAtPath: db)
            let refused = try RawHTTP.request(port: rig.gw.port, target: AuditIntegrationTests.path("29dd8606-4e01-46cb-aca2-dd6022e74866"),
                                              headers: rig.auth)
            #expect(refused.status == 503)
            // Still refused on the next call (the writer reopens, and checks again).
            let again = try RawHTTP.request(port: rig.gw.port, target: AuditIntegrationTests.path("29dd8606-4e01-46cb-aca2-dd6022e74868"),
                                            headers: rig.auth)
            #expect(again.status == 503)
            #expect(rig.sim.requests.count == 1, "a call was forwarded without its audit record")
            try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: db)
            #expect(try RawHTTP.request(port: rig.gw.port, target: AuditIntegrationTests.path("29dd8606-4e01-46cb-aca2-dd6022e74867"),
                                        headers: rig.auth).status == 200)
        }
    }

    @Test func readinessFollowsTheFilesWritabilityWithoutTraffic() throws {
        try withRig("readyz-idle") { rig in
            let db = rig.dir + "/audit.sqlite3"
            func ready() -> (Int, String) {
                let r = try? RawHTTP.request(port: rig.gw.adminPort, method: "GET", target: "/readyz")
                return (r?.status ?? -1, r?.text ?? "")
            }
            #expect(ready().0 == 200)
            try FileManager.default.setAttributes([.posixPermissions: 0o444], ofItemAtPath: db)
            let down = Date()
            try rig.gw.child.wait("/readyz to report the read-only file", seconds: 5) { ready().0 == 503 }
            #expect(Date().timeIntervalSince(down) < 3)
            #expect(ready().1.contains("audit log not writable"))
            try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: db)
            let up = Date()
            try rig.gw.child.wait("/readyz to recover", seconds: 5) { ready().0 == 200 }
            #expect(Date().timeIntervalSince(up) < 3)
            #expect(rig.sim.requests.isEmpty, "no call was made: the probe alone followed the file")
            try rig.gw.child.wait("the recovery log line", seconds: 3) {
                rig.gw.child.stderrLines.contains { $0.contains("audit log writable again") }
            }
        }
    }
}
