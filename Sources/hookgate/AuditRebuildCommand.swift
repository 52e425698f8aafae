import ArgumentParser
import Foundation
import Hookgate

struct AuditRebuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild",
        abstract: "Rebuild what is derived from the audit records: the daily summaries and the lookup by Hookshot request id.",
        discussion: """
            The records and their hash chain are read, never changed. Use it on a file restored
            from a backup, written by other tools, or whose summaries `audit verify` found wrong.
            An older file is migrated first (the gateway does the same when it opens one). Unlike
            the other audit subcommands this one writes to the file: stop the gateway first, or
            its calls wait while each batch is written (the result is right either way). About
            10 s per million calls.
            """)

    @Option(help: ArgumentHelp("The audit database (opened for writing).", valueName: "file"))
    var db: String

    func run() throws {
        guard FileManager.default.fileExists(atPath: db) else { throw AuditOutput.fail("\(db): no such file") }
        let meter = isatty(STDERR_FILENO) == 1 ? ProgressLine(verb: "rebuilt") : nil
        let started = Date()
        let done: AuditDerived.Rebuilt
        do {
            done = try AuditDerived.rebuild(path: db) { meter?.update(done: Int($0), total: Int($1)) }
        } catch {
            meter?.clear()
            throw AuditOutput.fail(error.description)
        }
        meter?.clear()
        print(String(format: "rebuilt %@: %lld records in %.1f s; %lld summary rows, %lld lookup rows in %lld batches",
                     db, done.records, Date().timeIntervalSince(started), done.summaryRows, done.lookupRows, done.batches))
    }
}
