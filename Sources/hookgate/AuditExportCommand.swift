import ArgumentParser
import Hookgate

struct AuditExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write matching requests as JSON lines or CSV, oldest first.",
        discussion: """
            One record per request with exactly the columns of the view audit_pairs, in order.
            jsonl: one JSON object per line; numbers are JSON numbers, empty values null.
            csv: a header row, then RFC 4180 records (CRLF line ends); an empty (null) value is
            an empty field, an empty string is "".
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case jsonl, csv
    }

    @OptionGroup var database: AuditDatabaseOption
    @OptionGroup var filters: AuditFilterOptions
    @Option(help: "Output format.") var format: Format = .jsonl
    @Option(help: "Write at most this many records (0: all).") var limit = 0

    func validate() throws {
        _ = try filters.filter(limit: limit)
        if filters.replica != nil && !database.isCentral { throw ValidationError("--replica applies to --db postgresql://... only") }
    }

    func run() throws {
        let filter = try filters.filter(limit: limit)
        // The central database's view leads with `replica`.
        let columns = database.isCentral ? CentralQuery.pairColumns : AuditQuery.pairColumns
        let each: (([SQLValue]) throws -> Void) throws -> Void
        if database.isCentral {
            let central = try database.openCentral()
            each = { try central.forEachPair(filter, replica: filters.replica, $0) }
        } else {
            // Each file of a rotated audit in chain order, until the limit is reached.
            let set = try database.files()
            each = { body in
                var left = filter.limit
                for file in set.files where left != 0 {
                    var part = filter
                    part.limit = left
                    try file.query().forEachPair(part, next: set.file(after: file)?.path) { row in
                        try body(row)
                        left = left.map { $0 - 1 }
                    }
                }
            }
        }
        let out = AuditOutput.Stdout()
        var count = 0
        do {
            switch format {
            case .jsonl:
                try each { row in
                    out.write(AuditFormat.jsonLine(columns: columns, row: row))
                    count += 1
                }
            case .csv:
                out.write(AuditFormat.csvHeader(columns), terminator: "\r\n")
                try each { row in
                    out.write(AuditFormat.csvLine(row), terminator: "\r\n")
                    count += 1
                }
            }
        } catch {
            out.flush()
            throw AuditOutput.fail("\(error)")
        }
        out.flush()
        AuditOutput.note("\(count) \(count == 1 ? "record" : "records")")
    }
}
