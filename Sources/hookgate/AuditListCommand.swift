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

    func validate() throws { _ = try filters.filter(limit: limit) }

    func run() throws {
        let filter = try filters.filter(limit: limit)
        let query = try database.open()
        let result: AuditRows
        do { result = try query.list(filter) } catch { throw AuditOutput.fail(error.description) }
        let out = AuditOutput.Stdout()
        for line in AuditFormat.table(result.rows, from: result.columns) { out.write(line) }
        out.flush()
        let n = result.rows.count
        AuditOutput.note(result.truncated
            ? "\(n) rows (more match: narrow with --since/--until, or use --limit 0 for all)"
            : "\(n) \(n == 1 ? "row" : "rows")")
    }
}
