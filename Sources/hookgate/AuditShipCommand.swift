import ArgumentParser
import Foundation
import Hookgate

struct AuditShipCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ship",
        abstract: "Copy an audit file's records into the central PostgreSQL database, as a replica's gateway does.",
        discussion: """
            For a file from a stopped or retired replica (or to catch up by hand): the same code as
            the gateway's `audit.ship`. It resumes after the highest seq PostgreSQL holds for the
            replica, copies every later record exactly once in batches (each one transaction),
            creates the central tables on first use, and stops with exit 1, naming the record, if
            PostgreSQL holds a record of that replica that differs from the file. The password, if
            any, comes from libpq's PGPASSWORD or ~/.pgpass, never the command line. Safe beside a
            running gateway: the file is opened read-only.
            """)

    @Option(help: ArgumentHelp("The audit database (opened read-only).", valueName: "file"))
    var db: String

    @Option(help: ArgumentHelp("A libpq connection URI, without a password: postgresql://user@host:port/db", valueName: "uri"))
    var to: String

    @Option(help: ArgumentHelp("The replica name the records are filed under (the gateway's audit.ship.replica).", valueName: "name"))
    var replica: String

    func validate() throws {
        if let problem = AuditShipConfig.uriProblem(to) {
            throw ValidationError(problem.contains("password") ? "--to must not hold a password: use PGPASSWORD or ~/.pgpass" : "--to \(problem)")
        }
        guard AuditShipConfig.isReplicaName(replica) else { throw ValidationError("--replica must be 1 to 64 characters from A-Z a-z 0-9 . _ -") }
    }

    func run() throws {
        guard FileManager.default.fileExists(atPath: db) else { throw AuditOutput.fail("\(db): no such file") }
        let meter = isatty(STDERR_FILENO) == 1 ? ProgressLine(verb: "shipped") : nil
        let started = Date()
        do {
            let result = try AuditShipper.shipByHand(path: db, uri: to, replica: replica) { shipped, head in
                meter?.update(done: Int(shipped), total: Int(head))
            }
            meter?.clear()
            print(String(format: "shipped %d records of replica %@ in %.1f s; PostgreSQL holds it through seq %lld (the file's last: %lld)",
                         result.records, replica, Date().timeIntervalSince(started), result.shipped, result.head))
        } catch {
            meter?.clear()
            throw AuditOutput.fail("\(error)")
        }
    }
}
