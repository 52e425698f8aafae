import ArgumentParser
import Foundation
import Hookgate

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Read the audit database: verify its hash chain, list, export or show records; rebuild its summaries.",
        discussion: """
            Every subcommand but rebuild opens the file read-only: it never writes, never creates
            a file, and works while the gateway is running (the database is in WAL mode).
            See docs/audit.md for the tables, the view audit_pairs and the hash chain.
            """,
        subcommands: [AuditVerifyCommand.self, AuditListCommand.self, AuditExportCommand.self, AuditShowCommand.self, AuditRebuildCommand.self,
                      AuditShipCommand.self])
}

/// `--db FILE`, shared by every `audit` subcommand.
struct AuditDatabaseOption: ParsableArguments {
    @Option(name: .customLong("db"),
            help: ArgumentHelp("The audit database (opened read-only), or the central one: postgresql://user@host/db (password from PGPASSWORD or ~/.pgpass). verify, list, export and show take it several times, or a directory, for the files of a rotated audit (audit.rotate), read as one chain.",
                               valueName: "file|dir"))
    var all: [String] = []

    /// The one `--db` (the first, for commands that take one).
    var db: String { all.first ?? "" }

    func validate() throws {
        guard !all.isEmpty else { throw ValidationError("Missing expected argument '--db <file|dir>'") }
        if isCentral, all.count > 1 { throw ValidationError("--db postgresql://... is given once, alone") }
    }

    /// The file set of a rotated audit (several `--db`, or a directory), in chain order.
    func files() throws -> AuditFileSet {
        do { return try AuditFileSet(all) } catch { throw AuditOutput.fail(error.description) }
    }

    /// For commands that read one file: several, or a directory, is a usage error.
    func single() throws -> String {
        var isDirectory: ObjCBool = false
        if all.count > 1 || (FileManager.default.fileExists(atPath: db, isDirectory: &isDirectory) && isDirectory.boolValue) {
            throw ValidationError("this command reads one audit file: give --db once, with a file")
        }
        return db
    }

    /// `--db` names the central PostgreSQL database (`audit.ship`), not a file.
    var isCentral: Bool { db.hasPrefix("postgresql://") || db.hasPrefix("postgres://") }

    /// The central database, opened read-only, or why not (exit 1).
    func openCentral() throws -> CentralQuery {
        if let problem = AuditShipConfig.uriProblem(db), problem.contains("password") {
            throw AuditOutput.fail("--db must not hold a password: use PGPASSWORD or ~/.pgpass")
        }
        do { return try CentralQuery(uri: db) } catch { throw AuditOutput.fail("\(error)") }
    }

    /// Opens the database, or prints why not and exits 1 (not a usage error: the file is the problem).
    func open() throws -> AuditQuery {
        let path = try single()
        do {
            return try AuditQuery(path: path)
        } catch {
            throw AuditOutput.fail(error.description)
        }
    }
}

/// The filters of `audit list` and `audit export`.
struct AuditFilterOptions: ParsableArguments {
    @Option(help: "Only this team's requests.") var team: String?
    @Option(help: ArgumentHelp("Only requests for this hook id.", valueName: "uuid")) var hook: String?
    @Option(help: ArgumentHelp("Only redeliveries of this Hookshot request id (event_request_id).", valueName: "uuid"))
    var eventRequestID: String?
    @Option(help: ArgumentHelp("Only the request with this gateway request id (X-Request-Id).", valueName: "uuid"))
    var requestID: String?
    @Option(help: ArgumentHelp("Only this decision: \(AuditFilter.decisionWords.joined(separator: ", ")).",
                               valueName: "word"))
    var decision: String?
    @Option(help: ArgumentHelp("Only requests answered with this HTTP status.", valueName: "code")) var status: Int?
    @Option(help: ArgumentHelp("Only requests received at or after this time (RFC 3339, e.g. 2025-03-01T09:00:00Z or 2025-03-01T11:00:00+02:00).",
                               valueName: "time"))
    var since: String?
    @Option(help: ArgumentHelp("Only requests received before this time (RFC 3339).", valueName: "time")) var until: String?
    @Option(help: ArgumentHelp("With --db postgresql://...: only this replica's requests.", valueName: "name")) var replica: String?

    func filter(limit: Int?) throws -> AuditFilter {
        do {
            return try AuditFilter.parse(team: team, hook: hook, eventRequestID: eventRequestID, requestID: requestID,
                                         decision: decision, status: status, since: since, until: until, limit: limit)
        } catch {
            throw ValidationError(error.description)
        }
    }
}

/// Buffered writes to stdout (export can be large) and error messages on stderr.
enum AuditOutput {
    /// Prints `hookgate audit: message` on stderr; returns exit code 1 to throw.
    static func fail(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("hookgate audit: \(message)\n".utf8))
        return ExitCode(1)
    }

    static func note(_ message: String) {
        FileHandle.standardError.write(Data("\(message)\n".utf8))
    }

    final class Stdout {
        private var buffer: [UInt8] = []
        private let threshold = 64 * 1024

        init() { buffer.reserveCapacity(threshold + 4096) }

        func write(_ line: String, terminator: String = "\n") {
            buffer.append(contentsOf: line.utf8)
            buffer.append(contentsOf: terminator.utf8)
            if buffer.count >= threshold { flush() }
        }

        func write(bytes: [UInt8]) {
            flush()
            FileHandle.standardOutput.write(Data(bytes))
        }

        func flush() {
            guard !buffer.isEmpty else { return }
            FileHandle.standardOutput.write(Data(buffer))
            buffer.removeAll(keepingCapacity: true)
        }

        deinit { flush() }
    }
}
