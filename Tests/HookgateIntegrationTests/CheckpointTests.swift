import Foundation
import Testing
@testable import Hookgate

/// Signed checkpoints (issue 17): a gateway signs its chain with a key made by `hookgate keygen
/// --audit-signing-key`; `audit verify --public-key` catches what an insider without the key
/// can do to the file — cut its tail, rewrite it with recomputed hashes, put back an older copy,
/// forge or alter a checkpoint — and a check with the wrong key.
@Suite struct CheckpointTests {
    struct Signed {
        let dir: String
        let keys: String
        let audit: String
        let log: String
        let olderCopy: String
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, out: [String], err: [String]) {
        let child = try ChildProcess(arguments: arguments)
        let status = child.waitForExit()
        return (status, child.stdoutLines, child.stderrLines)
    }

    /// A gateway with a signing key and a checkpoint log: 3 calls, a checkpoint, a copy of the
    /// file taken then, 3 more calls, a clean stop (a final checkpoint).
    static func signedAudit(_ name: String) throws -> Signed {
        let dir = Harness.tempDir(name)
        let keys = dir + "/keys"
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        let made = try run(["keygen", "--audit-signing-key", keys])
        #expect(made.status == 0, "\(made.err)")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let key = TeamKey()
        var config = GatewayProcess.config(dir: dir, simulator: sim, teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"]]])
        let audit = dir + "/audit.sqlite3", log = dir + "/checkpoints.jsonl"
        config["audit"] = ["path": audit, "signing_key": ["file": keys + "/audit-signing.key.pem"], "checkpoint_interval_s": 1,
                           "checkpoint_log": log]
        let gw = try GatewayProcess(dir: dir, config: config)
        defer { gw.stop() }
        func calls(_ n: Int) throws {
            for _ in 0..<n {
                let event = "c0ffee00-0000-4000-8000-" + String(UUID().uuidString.suffix(12)).lowercased()
                _ = try RawHTTP.request(port: gw.port, target: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/\(event)/redeliver",
                                        headers: [("Authorization", "Bearer \(key.key)")])
            }
        }
        try calls(3)
        try gw.child.wait("a checkpoint of the first calls") {
            (try? String(contentsOfFile: log, encoding: .utf8))?.contains("\"seq\":6,") == true
        }
        let olderCopy = dir + "/older.sqlite3"
        try SQLiteConnection(path: audit, readOnly: true).execute("VACUUM INTO '\(olderCopy)'")
        try calls(3)
        gw.stop()
        return Signed(dir: dir, keys: keys, audit: audit, log: log, olderCopy: olderCopy)
    }

    func verify(_ s: Signed, db: String? = nil, key: String? = nil, log: Bool = true) throws -> (status: Int32, out: [String]) {
        var args = ["audit", "verify", "--db", db ?? s.audit, "--public-key", key ?? s.keys + "/audit-signing.pub.pem"]
        if log { args += ["--checkpoints", s.log] }
        let r = try Self.run(args)
        return (r.status, r.out)
    }

    /// A copy of the file to tamper with.
    func copy(_ s: Signed, _ name: String) throws -> String {
        let path = s.dir + "/" + name + ".sqlite3"
        try SQLiteConnection(path: s.audit, readOnly: true).execute("VACUUM INTO '\(path)'")
        return path
    }

    @Test func keygenWritesAKeyPairAndItsFingerprint() throws {
        let dir = Harness.tempDir("keygen-signing")
        let made = try Self.run(["keygen", "--audit-signing-key", dir])
        #expect(made.status == 0)
        var st = stat()
        #expect(stat(dir + "/audit-signing.key.pem", &st) == 0 && st.st_mode & 0o777 == 0o600)
        let key = try AuditSigningKey.load(path: dir + "/audit-signing.pub.pem", publicOnly: true)
        #expect(made.out.last == "fingerprint: \(key.fingerprint)")
        #expect(try Self.run(["keygen", "--audit-signing-key", dir]).status == 1, "never overwrites")
    }

    @Test func anUntouchedFileVerifiesWithItsCheckpoints() throws {
        let s = try Self.signedAudit("checkpoints-ok")
        let (status, out) = try verify(s)
        #expect(status == 0, "\(out)")
        let lines = try String(contentsOfFile: s.log, encoding: .utf8).split(separator: "\n")
        #expect(lines.count >= 2, "one line per checkpoint: after the first calls (one a second), and at the clean stop")
        #expect(out.contains { $0.hasPrefix("audit checkpoints OK: \(lines.count) in the file, \(lines.count) in the log signed by ")
                && $0.contains("the newest at seq 12 ") }, "\(out)")
        #expect(out.suffix(2).first == "audit chain OK: 12 records, 6 complete pairs, 0 requests without a response")
    }

    @Test func aCutTailIsCaughtByTheLogKeptElsewhere() throws {
        let s = try Self.signedAudit("checkpoints-cut")
        let cut = try copy(s, "cut")
        // An insider removes the last calls, and the checkpoints that cover them.
        try SQLiteConnection(path: cut).execute("""
            DROP TRIGGER audit_checkpoints_append_only_delete;
            DELETE FROM audit_checkpoints WHERE seq > 6; DELETE FROM audit_requests WHERE seq > 6; DELETE FROM audit_responses WHERE seq > 6
            """)
        #expect(try Self.run(["audit", "verify", "--db", cut]).status == 0, "the chain alone cannot tell")
        #expect(try verify(s, db: cut, log: false).status == 0, "nor the file's own checkpoints, once removed too")
        let (status, out) = try verify(s, db: cut)
        #expect(status == 1)
        #expect(out.last?.contains("the file ends at seq 6, records signed up to seq 12 were cut off") == true, "\(out)")
        // An older copy put back is the same case.
        let older = try verify(s, db: s.olderCopy)
        #expect(older.status == 1 && older.out.last?.contains("the file ends at seq 6, records signed up to seq 12") == true, "\(older.out)")
    }

    @Test func aRewriteWithRecomputedHashesIsCaught() throws {
        let s = try Self.signedAudit("checkpoints-rewrite")
        let forged = try copy(s, "rewritten")
        // Team of the call at seq 3 changed, every hash from there recomputed: a whole chain.
        let db = try SQLiteConnection(path: forged)
        try db.execute("UPDATE audit_requests SET team = 'billing' WHERE seq = 3")
        var previous = try #require(try db.prepare("SELECT hash FROM audit_responses WHERE seq = 2").text(forStep: 0))
        for seq in Int64(3)...12 {
            let table = seq % 2 == 1 ? "audit_requests" : "audit_responses"
            let columns = table == "audit_requests" ? AuditSchema.requestColumns : AuditSchema.responseColumns
            let read = try db.prepare("SELECT \(columns.joined(separator: ", ")) FROM \(table) WHERE seq = ?1")
            try read.bind([.int(seq)])
            #expect(try read.step())
            var values = (0..<columns.count).map { read.value($0) }
            read.reset()
            values[columns.count - 1] = .text(previous)
            let hash = AuditChain.hash(table: table, values: values)
            try db.prepare("UPDATE \(table) SET prev_hash = ?1, hash = ?2 WHERE seq = ?3").run([.text(previous), .text(hash), .int(seq)])
            previous = hash
        }
        db.close()
        #expect(try Self.run(["audit", "verify", "--db", forged]).status == 0, "the chain alone is whole again")
        let (status, out) = try verify(s, db: forged)
        #expect(status == 1)
        #expect(out.last?.contains("is not the one signed (records up to it were rewritten after it)") == true, "\(out)")
    }

    @Test func aForgedOrAlteredCheckpointAndTheWrongKeyAreCaught() throws {
        let s = try Self.signedAudit("checkpoints-forged")
        // A log line altered to claim less.
        let original = try String(contentsOfFile: s.log, encoding: .utf8)
        try original.replacingOccurrences(of: "\"seq\":12,", with: "\"seq\":4,").write(toFile: s.log, atomically: true, encoding: .utf8)
        let altered = try verify(s)
        #expect(altered.status == 1 && altered.out.last?.contains("its signature does not match its content (forged or altered)") == true,
                "\(altered.out)")
        try original.write(toFile: s.log, atomically: true, encoding: .utf8)
        // A checkpoint in the file rewritten (its trigger dropped first).
        let edited = try copy(s, "edited")
        try SQLiteConnection(path: edited).execute("""
            DROP TRIGGER audit_checkpoints_append_only_update; UPDATE audit_checkpoints SET at = '2020-01-01T00:00:00.000Z' WHERE rowid = 1
            """)
        let inFile = try verify(s, db: edited, log: false)
        #expect(inFile.status == 1 && inFile.out.last?.contains("(from the file): its signature does not match") == true, "\(inFile.out)")
        // Another key: nothing verifies.
        let other = Harness.tempDir("other-key")
        #expect(try Self.run(["keygen", "--audit-signing-key", other]).status == 0)
        let wrong = try verify(s, key: other + "/audit-signing.pub.pem")
        #expect(wrong.status == 1 && wrong.out.last?.contains("it was signed by another key") == true, "\(wrong.out)")
    }
}

extension SQLiteStatement {
    /// The first row's column `i` as text, for one-value queries in tests.
    func text(forStep i: Int) throws -> String? {
        defer { reset() }
        return try step() ? text(i) : nil
    }
}
