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

/// What checking signed checkpoints against a verified chain found.
package struct CheckpointCheck: Sendable, Equatable {
    /// The first checkpoint that does not hold, described; nil when all hold.
    package var problem: String?
    /// Checkpoints of records before the first one given (files retired, not given): not checked.
    package var skipped = 0
}

extension AuditCheckpoint {
    /// Checks `checkpoints` (each with where it came from: "from the file", "replica gw-1") against
    /// `key` and a chain already verified from `firstSeq` to `lastSeq`, named `chain`: each must be
    /// signed by the key, name this chain, lie within it and match its record's hash there
    /// (`stored(seq)`). `holder` names what holds the chain in messages ("the file", "PostgreSQL").
    /// One check for an audit file (or set of files) and for the central database.
    package static func check(_ checkpoints: [(checkpoint: AuditCheckpoint, source: String)], key: AuditSigningKey,
                              chain: String?, firstSeq: Int64 = 1, lastSeq: Int64, holder: String,
                              stored: (Int64) throws -> String?) rethrows -> CheckpointCheck {
        var result = CheckpointCheck()
        for (checkpoint, source) in checkpoints.sorted(by: { $0.checkpoint.seq < $1.checkpoint.seq }) {
            let place = "checkpoint seq \(checkpoint.seq) signed \(checkpoint.at) (\(source))"
            if let problem = checkpoint.problem(under: key) {
                result.problem = "\(place): \(problem)"
                return result
            }
            guard checkpoint.chain == chain else {
                result.problem = "\(place): it belongs to another chain (the records were replaced from seq 1)"
                return result
            }
            guard checkpoint.seq <= lastSeq else {
                result.problem = "\(place): \(holder) ends at seq \(lastSeq), records signed up to seq \(checkpoint.seq) were cut off"
                    + (holder == "the file" ? " (or the file is an older copy)" : "")
                return result
            }
            guard checkpoint.seq >= firstSeq else {
                result.skipped += 1
                continue
            }
            guard try stored(checkpoint.seq) == checkpoint.hash else {
                result.problem = "\(place): record seq \(checkpoint.seq) is not the one signed (records up to it were rewritten after it)"
                return result
            }
        }
        return result
    }
}
