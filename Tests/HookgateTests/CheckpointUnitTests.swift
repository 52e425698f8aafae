import Foundation
import HookgateTestSupport
import Testing
@testable import Hookgate

/// The checkpoint keys of `audit`, and what a checkpoint signs.
@Suite struct CheckpointUnitTests {
    @Test func readsTheCheckpointKeys() throws {
        let config = try parsed(minimal(audit: #""path": "/a", "signing_key": {"file": "/etc/hookgate/audit-signing.key.pem"}, "checkpoint_interval_s": 30, "checkpoint_log": "/var/log/hookgate/checkpoints.jsonl""#))
        #expect(config.audit.signingKey == "/etc/hookgate/audit-signing.key.pem")
        #expect(config.audit.checkpointIntervalS == 30)
        #expect(config.audit.checkpointLog == "/var/log/hookgate/checkpoints.jsonl")
        let defaults = try parsed(minimal())
        #expect(defaults.audit.signingKey == nil && defaults.audit.checkpointIntervalS == 60 && defaults.audit.checkpointLog == nil)
        #expect(problems(minimal(audit: #""path": "/a", "signing_key": "-----BEGIN PRIVATE KEY-----", "checkpoint_interval_s": 0"#)) == [
            "audit.signing_key: an inline key is not allowed, use {\"file\": PATH}",
            "audit.checkpoint_interval_s: must be at least 1",
        ])
        #expect(problems(minimal(audit: #""path": "/a", "signing_key": {"env": "K"}"#)) == [
            "audit.signing_key.file: is required", "audit.signing_key.env: unknown key",
        ])
    }

    @Test func aCheckpointSignsEveryFieldAndSurvivesItsLogLine() throws {
        let key = try AuditSigningKey.generate()
        let checkpoint = try AuditCheckpoint.signed(chain: String(repeating: "a", count: 64), seq: 42, hash: String(repeating: "b", count: 64),
                                                    at: "2026-12-01T00:00:00.000Z", by: key)
        #expect(checkpoint.problem(under: key) == nil)
        #expect(AuditCheckpoint.parse(jsonLine: checkpoint.jsonLine) == checkpoint)
        for field in [\AuditCheckpoint.chain, \AuditCheckpoint.hash, \AuditCheckpoint.at] {
            var altered = checkpoint
            altered[keyPath: field] += "0"
            #expect(altered.problem(under: key) == "its signature does not match its content (forged or altered)")
        }
        var moved = checkpoint
        moved.seq = 41
        #expect(moved.problem(under: key) != nil)
        let other = try AuditSigningKey.generate()
        #expect(checkpoint.problem(under: other)?.hasPrefix("it was signed by another key") == true)
        // The public half alone verifies, and cannot sign.
        let pem = try key.pem()
        let path = TestDirectory.make("pub") + "/k.pub.pem"
        try pem.publicKey.write(toFile: path, atomically: true, encoding: .utf8)
        let publicOnly = try AuditSigningKey.load(path: path, publicOnly: true)
        #expect(publicOnly.fingerprint == key.fingerprint && checkpoint.problem(under: publicOnly) == nil)
        #expect(throws: CheckpointError.self) { try publicOnly.sign([1, 2, 3]) }
    }
}
