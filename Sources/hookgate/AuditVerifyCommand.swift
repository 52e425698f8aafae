import ArgumentParser
import Foundation
import Hookgate

struct AuditVerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the audit log's hash chain from the first record to the last.",
        discussion: """
            Exit 0 when every record is present, in order and unchanged since it was written;
            exit 1 naming the first record that breaks the chain (edited, deleted, inserted or
            reordered), naming the first row of a summary or of the lookup by Hookshot request
            id that disagrees with the records (rebuild those with `hookgate audit rebuild`), or
            when the file cannot be read. The last line on success names the
            newest record's seq and hash: note it somewhere else, and pass it back later with
            --anchor to also detect that newer records were cut off the end. With a signing key
            (audit.signing_key), --public-key checks the signed checkpoints (the file's, and
            --checkpoints, the log kept elsewhere) instead: a cut tail, an older copy, records
            rewritten with recomputed hashes, a forged checkpoint or another key fail (exit 1).
            With --db postgresql://..., each replica's chain in the central database.
            """)

    @OptionGroup var database: AuditDatabaseOption

    @Option(help: ArgumentHelp("A record noted earlier as SEQ:HASH (from a previous verify); fail if it is gone or differs.",
                               valueName: "seq:hash"))
    var anchor: [String] = []

    @Option(help: ArgumentHelp("With --db postgresql://...: verify only this replica's chain.", valueName: "name"))
    var replica: String?

    @Option(help: ArgumentHelp("The audit signing key's public half (PEM, from hookgate keygen --audit-signing-key): check every signed checkpoint against the chain (with --db postgresql://..., each replica's shipped checkpoints).",
                               valueName: "pem"))
    var publicKey: String?

    @Option(help: ArgumentHelp("The checkpoint log kept elsewhere (audit.checkpoint_log, one JSON line each), checked with the file's own checkpoints. Needs --public-key.",
                               valueName: "jsonl"))
    var checkpoints: String?

    var central: Bool { database.db.hasPrefix("postgresql://") || database.db.hasPrefix("postgres://") }

    func validate() throws {
        if central {
            if let problem = AuditShipConfig.uriProblem(database.db), problem.contains("password") {
                throw ValidationError("--db must not hold a password: use PGPASSWORD or ~/.pgpass")
            }
            if !anchor.isEmpty { throw ValidationError("--anchor applies to an audit file, not to the central database") }
        } else if replica != nil {
            throw ValidationError("--replica applies to --db postgresql://... only")
        }
        if checkpoints != nil && publicKey == nil { throw ValidationError("--checkpoints needs --public-key") }
        if central && checkpoints != nil {
            throw ValidationError("--checkpoints applies to an audit file (the central database holds the shipped checkpoints)")
        }
        for a in anchor where Self.parseAnchor(a) == nil {
            throw ValidationError("--anchor: \"\(a)\" is not SEQ:HASH (a record number and its 64-hex-digit hash)")
        }
    }

    static func parseAnchor(_ text: String) -> (seq: Int64, hash: String)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let seq = Int64(parts[0]), seq > 0, parts[1].count == 64,
              parts[1].utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) || (65...70).contains($0) })
        else { return nil }
        return (seq, parts[1].lowercased())
    }

    func run() throws {
        if central { return try verifyCentral() }
        let set = try database.files()
        let several = set.files.count > 1
        let result: AuditSetVerification
        let meter = isatty(STDERR_FILENO) == 1 ? ProgressLine() : nil
        do {
            result = try set.verify(progress: meter.map { meter in { meter.update(done: $0, total: $1) } })
        } catch {
            meter?.clear()
            throw AuditOutput.fail(error.description)
        }
        meter?.clear()
        if let broken = result.brokenDescription(severalFiles: several) {
            print("audit chain BROKEN at \(broken)")
            throw ExitCode(1)
        }
        for (seq, hash) in anchor.compactMap(Self.parseAnchor) {
            let stored: String?
            do { stored = try set.file(holding: seq)?.query().hash(seq: seq) } catch { throw AuditOutput.fail(error.description) }
            guard stored == hash else {
                print("audit chain BROKEN at anchor seq \(seq): "
                      + (stored == nil ? "the record is gone (the log was truncated or replaced)" : "its hash differs (the log was rewritten)"))
                throw ExitCode(1)
            }
        }
        let signed = try checkSignedCheckpoints(set, result)
        for (path, one) in result.perFile {
            if let mismatch = one.derivedMismatch {
                print("audit derived tables DISAGREE\(several ? " in \((path as NSString).lastPathComponent)" : ""): \(mismatch). The chain itself is whole; "
                      + "hookgate audit rebuild --db \(path) writes them again from the records")
                throw ExitCode(1)
            }
        }
        func count(_ n: Int, _ one: String, _ many: String) -> String { "\(n) \(n == 1 ? one : many)" }
        if several {
            let derived = result.perFile.filter { $0.result.derivedThrough != nil }.count
            print("audit derived tables OK: the summaries and the lookup of \(derived) of \(set.files.count) files agree with their records")
        } else if let through = result.perFile.first?.result.derivedThrough, through < result.firstSeq {
            print("audit derived tables OK: no batch written yet (the views and lookups read the records themselves)")
        } else if let through = result.perFile.first?.result.derivedThrough {
            print("audit derived tables OK: the summaries and the lookup agree with the records up to seq \(through)")
        } else {
            print("audit derived tables: none in this file (written before schema 3; hookgate audit rebuild adds them)")
        }
        if let signed { print(signed) }
        if several || result.firstSeq > 1 {
            var line = "audit files: \(count(set.files.count, "file", "files")) in chain order, records \(result.firstSeq)-\(result.lastSeq ?? 0)"
            if result.firstSeq > 1 {
                line += "; the chain starts before them (seq \(result.firstSeq - 1) and earlier are in files not given"
                    + (result.responsesBeforeFirstFile > 0 ? ", with the requests of \(result.responsesBeforeFirstFile) responses" : "") + ")"
            }
            print(line)
        }
        print("audit chain OK: \(count(result.records, "record", "records")), "
              + "\(count(result.pairs, "complete pair", "complete pairs")), "
              + "\(count(result.incomplete, "request without a response", "requests without a response"))")
        if let seq = result.lastSeq, let hash = result.lastHash {
            print("last record: \(seq):\(hash)")
        }
    }
}

/// A progress line on a terminal's standard error (records/s and time left), rewritten in place
/// at most once a second and erased at the end, so standard output keeps only the result lines.
final class ProgressLine {
    private let started = Date()
    private var shown = Date.distantPast
    private let verb: String

    init(verb: String = "verifying") { self.verb = verb }

    func update(done: Int, total: Int) {
        let now = Date()
        guard now.timeIntervalSince(shown) >= 1 else { return }
        shown = now
        let elapsed = max(now.timeIntervalSince(started), 0.001)
        let rate = Double(done) / elapsed
        var line = "\(verb): \(done) of \(total) records (\(Int(rate)) records/s"
        if total > done, rate > 0 { line += ", about \(Int((Double(total - done) / rate).rounded(.up))) s left" }
        line += ")"
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
    }

    func clear() {
        guard shown != .distantPast else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}

extension AuditVerifyCommand {
    /// Each replica's chain in the central PostgreSQL database (`audit.ship`).
    func verifyCentral() throws {
        var key: AuditSigningKey?
        if let publicKey {
            do { key = try AuditSigningKey.load(path: publicKey, publicOnly: true) } catch { throw AuditOutput.fail("--public-key \(error)") }
        }
        let results: [CentralVerification]
        do {
            results = try CentralVerification.verify(uri: database.db, only: replica, key: key)
        } catch {
            throw AuditOutput.fail("\(error)")
        }
        guard !results.isEmpty else { throw AuditOutput.fail("no replica's records in \(database.db)") }
        var broken = false
        for r in results {
            if let why = r.broken {
                broken = true
                print("replica \(r.replica): audit chain BROKEN at \(why)")
                continue
            }
            if let key {
                // Checked in the same snapshot as the chain (CentralVerification.verify).
                if let problem = r.checkpoints?.problem {
                    broken = true
                    print("replica \(r.replica): audit chain BROKEN at \(problem)")
                    continue
                }
                guard let newest = r.newestCheckpoint else {
                    broken = true
                    print("replica \(r.replica): audit chain BROKEN at checkpoints: none shipped for this replica (is audit.signing_key set?)")
                    continue
                }
                print("replica \(r.replica): audit checkpoints OK: \(r.checkpointCount) signed by \(key.fingerprint.prefix(16))…, "
                      + "the newest at seq \(newest); \(r.lastSeq - newest) records after it are not signed yet")
            }
            print("replica \(r.replica): audit chain OK: \(r.records) records, \(r.pairs) complete pairs, "
                  + "\(r.incomplete) requests without a response; last record: \(r.lastSeq):\(r.lastHash)")
        }
        if broken { throw ExitCode(1) }
        print("audit chains OK: \(results.count) replica\(results.count == 1 ? "" : "s"), \(results.reduce(0) { $0 + $1.records }) records")
    }

    /// The checkpoints of the file and of --checkpoints, against --public-key and the chain (whole
    /// by now, up to `last`). Prints BROKEN and exits 1 at the first that does not hold; else
    /// returns the line to print.
    func checkSignedCheckpoints(_ set: AuditFileSet, _ verified: AuditSetVerification) throws -> String? {
        let last = verified.lastSeq ?? 0
        var inFile: [AuditCheckpoint] = []
        do { for file in set.files { inFile += try file.query().checkpoints() } } catch { throw AuditOutput.fail(error.description) }
        guard let publicKey else {
            return inFile.isEmpty ? nil : "audit checkpoints: \(inFile.count) in the file\(set.files.count > 1 ? "s" : ""), not checked (pass --public-key PEM)"
        }
        let key: AuditSigningKey
        do { key = try AuditSigningKey.load(path: publicKey, publicOnly: true) } catch { throw AuditOutput.fail("--public-key \(error)") }
        var all = inFile.map { (checkpoint: $0, source: "from the file") }
        if let checkpoints {
            let log: (checkpoints: [AuditCheckpoint], badLines: [Int])
            do { log = try AuditCheckpoint.readLog(path: checkpoints) } catch { throw AuditOutput.fail("--checkpoints \(error)") }
            if let line = log.badLines.first {
                print("audit chain BROKEN at checkpoint log line \(line) of \(checkpoints): not a checkpoint (the log was altered)")
                throw ExitCode(1)
            }
            all += log.checkpoints.map { (checkpoint: $0, source: "from \(checkpoints)") }
        }
        guard !all.isEmpty else {
            print("audit chain BROKEN at checkpoints: none to check (the file has none and no --checkpoints log was given)")
            throw ExitCode(1)
        }
        let checked: CheckpointCheck
        do {
            let chain = try set.files.first?.query().chainID()
            checked = try AuditCheckpoint.check(all, key: key, chain: chain, firstSeq: verified.firstSeq, lastSeq: last, holder: "the file") {
                try set.file(holding: $0)?.query().hash(seq: $0)
            }
        } catch { throw AuditOutput.fail("\(error)") }
        if let problem = checked.problem {
            print("audit chain BROKEN at \(problem)")
            throw ExitCode(1)
        }
        let before = checked.skipped  // in files not given (retired under the retention policy)
        let newest = all.max { $0.checkpoint.seq < $1.checkpoint.seq }!.checkpoint
        let fromLog = all.count - inFile.count
        return "audit checkpoints OK: \(inFile.count) in the file\(set.files.count > 1 ? "s" : "")\(checkpoints == nil ? "" : ", \(fromLog) in the log")"
            + " signed by \(key.fingerprint.prefix(16))…, the newest at seq \(newest.seq) (\(newest.at)); "
            + "\(last - newest.seq) records after it are not signed yet"
            + (before > 0 ? "; \(before) cover records before the files given (not checked)" : "")
    }
}
