import ArgumentParser
import Hookgate

struct AuditShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print every stored field of one request's records.",
        discussion: """
            The request record (audit_requests), then the response record (audit_responses),
            one "name: value" line per column, hashes included. Text is printed as text with
            control characters escaped (\\n, \\u{1b}); a body that is not UTF-8 as hex.
            Exit 1 when there is no such request.
            """)

    @OptionGroup var database: AuditDatabaseOption
    @Argument(help: ArgumentHelp("The gateway request id (the X-Request-Id the caller got).", valueName: "request-id"))
    var requestID: String

    func validate() throws {
        guard UUIDText.canonical(requestID) != nil else {
            throw ValidationError("\"\(requestID)\" is not a request id (a UUID, 8-4-4-4-12 hex digits)")
        }
    }

    func run() throws {
        if database.isCentral {
            let pairs: [AuditRecordPair]
            do { pairs = try database.openCentral().show(requestID: requestID) } catch { throw AuditOutput.fail("\(error)") }
            guard !pairs.isEmpty else { throw AuditOutput.fail("no request \(UUIDText.canonical(requestID) ?? requestID) in \(database.db)") }
            let out = AuditOutput.Stdout()
            for pair in pairs { for line in AuditFormat.showLines(pair) { out.write(line) } }
            out.flush()
            return
        }
        // In a rotated audit, the request's file, and the response from the next file when the
        // call was in flight at the rotation.
        let set = try database.files()
        var pair: AuditRecordPair?
        do {
            for file in set.files {
                guard var found = try file.query().show(requestID: requestID) else { continue }
                if found.response == nil, let next = set.file(after: file) {
                    found.response = try next.query().show(responseOf: requestID)
                }
                pair = found
                break
            }
        } catch { throw AuditOutput.fail(error.description) }
        guard let pair else {
            throw AuditOutput.fail("no request \(UUIDText.canonical(requestID) ?? requestID) in \(database.db)")
        }
        let out = AuditOutput.Stdout()
        for line in AuditFormat.showLines(pair) { out.write(line) }
        out.flush()
    }
}
