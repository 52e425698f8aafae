import Foundation

// Threads: any (values).

/// A signed statement that the audit chain `chain` reached record `seq` with hash `hash` at time
/// `at`: kept in the file's `audit_checkpoints` table and, one JSON line each, in
/// `audit.checkpoint_log` — a place the file's writers cannot rewrite. Whoever can edit the file
/// but not sign can no longer cut its tail or rewrite it with recomputed hashes unseen
/// (docs/audit.md, "Signed checkpoints").
package struct AuditCheckpoint: Sendable, Equatable {
    /// The hash of the chain's record seq 1: names the chain, whichever file holds it.
    package var chain: String
    package var seq: Int64
    package var hash: String
    /// UTC, RFC 3339 with milliseconds.
    package var at: String
    /// The signing key's fingerprint.
    package var key: String
    /// Ed25519 signature of `message`, base64.
    package var signature: String

    static let domain = "hookgate-audit-checkpoint-v1"

    /// The signed bytes: a domain tag and every field, one per line.
    package var message: [UInt8] {
        Array("\(Self.domain)\nchain \(chain)\nseq \(seq)\nhash \(hash)\nat \(at)\nkey \(key)\n".utf8)
    }

    package static func signed(chain: String, seq: Int64, hash: String, at: String, by signer: AuditSigningKey) throws(CheckpointError) -> AuditCheckpoint {
        var checkpoint = AuditCheckpoint(chain: chain, seq: seq, hash: hash, at: at, key: signer.fingerprint, signature: "")
        checkpoint.signature = Data(try signer.sign(checkpoint.message)).base64EncodedString()
        return checkpoint
    }

    /// Why this checkpoint does not hold under `key` (nil: it does).
    package func problem(under key: AuditSigningKey) -> String? {
        guard self.key == key.fingerprint else {
            return "it was signed by another key (\(self.key.prefix(16))…, not \(key.fingerprint.prefix(16))…)"
        }
        guard let signature = Data(base64Encoded: signature), key.verify(message, signature: Array(signature)) else {
            return "its signature does not match its content (forged or altered)"
        }
        return nil
    }

    /// One line of the checkpoint log.
    package var jsonLine: String {
        func quoted(_ s: String) -> String { "\"" + s.filter { $0 != "\"" && $0 != "\\" } + "\"" }
        return "{\"chain\":\(quoted(chain)),\"seq\":\(seq),\"hash\":\(quoted(hash)),\"at\":\(quoted(at)),"
            + "\"key\":\(quoted(key)),\"signature\":\(quoted(signature))}"
    }

    /// A line of the checkpoint log (nil: not one).
    package static func parse(jsonLine line: String) -> AuditCheckpoint? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let chain = object["chain"] as? String, let seq = (object["seq"] as? NSNumber)?.int64Value,
              let hash = object["hash"] as? String, let at = object["at"] as? String,
              let key = object["key"] as? String, let signature = object["signature"] as? String else { return nil }
        return AuditCheckpoint(chain: chain, seq: seq, hash: hash, at: at, key: key, signature: signature)
    }

    /// The checkpoint log at `path`: its checkpoints, and the numbers of lines that are not.
    package static func readLog(path: String) throws(CheckpointError) -> (checkpoints: [AuditCheckpoint], badLines: [Int]) {
        guard let data = FileManager.default.contents(atPath: path) else { throw CheckpointError("\(path): cannot read") }
        var checkpoints: [AuditCheckpoint] = []
        var bad: [Int] = []
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            if let checkpoint = parse(jsonLine: String(line)) { checkpoints.append(checkpoint) } else { bad.append(i + 1) }
        }
        return (checkpoints, bad)
    }
}
