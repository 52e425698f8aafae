import ArgumentParser
import Hookgate

struct AuditListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Print matching requests as an aligned table, oldest first.",
        discussion: """
            Columns: \(AuditFormat.listColumns.joined(separator: ", ")); "-" is an empty (null) value.
            The row count goes to stderr, so stdout holds only the table.
            For every column, or for other programs, use `hookgate audit export`.
            """)

    @OptionGroup var database: AuditDatabaseOption
    @OptionGroup var filters: AuditFilterOptions
    @Option(help: "Show at most this many rows (0: all).") var limit = 100

    func validate() throws {
        _ = try filters.filter(limit: limit)
        if filters.replica != nil && !database.isCentral { throw ValidationError("--replica applies to --db postgresql://... only") }
    }

    func run() throws {
        let filter = try filters.filter(limit: limit)
        let result: AuditRows
        if database.isCentral {
            let central = try database.openCentral()
            do { result = try central.list(filter, replica: filters.replica, columns: ["replica"] + AuditFormat.listColumns) } catch {
                throw AuditOutput.fail("\(error)")
            }
        } else {
            // Each file of a rotated audit in chain order, until the limit is reached.
            let set = try database.files()
            var rows = AuditRows(columns: AuditFormat.listColumns, rows: [], truncated: false)
            for file in set.files where !rows.truncated {
                var part = filter
                if let limit = filter.limit { part.limit = limit - rows.rows.count }
                do {
                    let next = set.file(after: file)?.path
                    if part.limit == 0 {
                        // The limit was reached at a file's end: more match only if a later file has a row.
                        part.limit = 1
                        rows.truncated = try !file.query().list(part, columns: ["request_id"], next: next).rows.isEmpty
                        continue
                    }
                    let got = try file.query().list(part, columns: AuditFormat.listColumns, next: next)
                    rows.rows += got.rows
                    rows.truncated = got.truncated
                } catch { throw AuditOutput.fail(error.description) }
            }
            result = rows
        }
        var table: [UInt8] = []
        AuditFormat.writeTable(result.rows, columns: result.columns, from: result.columns, into: &table)
        let out = AuditOutput.Stdout()
        out.write(bytes: table)
        out.flush()
        let n = result.rows.count
        AuditOutput.note(result.truncated
            ? "\(n) rows (more match: narrow with --since/--until, or use --limit 0 for all)"
            : "\(n) \(n == 1 ? "row" : "rows")")
    }
}
