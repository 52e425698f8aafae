import Foundation

// Threads: the CLI's (`hookgate audit list|export --db postgresql://...`).

/// `audit_pairs` of the central database, read as `AuditQuery` reads a file's: the same filters,
/// plus `replica`, which leads every row. Read-only, in one repeatable-read transaction; export
/// streams through a server-side cursor.
package final class CentralQuery {
    private let pg: PostgresConnection
    /// The view's columns, `replica` first.
    package static let pairColumns = ["replica"] + AuditSchema.pairColumns

    package init(uri: String) throws {
        pg = try PostgresConnection(uri: uri, password: nil, applicationName: "hookgate audit")
        try pg.execute("SET default_transaction_read_only = on")
        try pg.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    }

    /// Rows matching `filter` (and `replica`), at most `filter.limit`; `truncated` when more match.
    package func list(_ filter: AuditFilter, replica: String?, columns: [String] = pairColumns) throws -> AuditRows {
        var probe = filter
        if let limit = filter.limit, limit < Int.max { probe.limit = limit + 1 }
        var rows: [[SQLValue]] = []
        try forEachPair(probe, replica: replica, columns: columns) { rows.append($0) }
        var truncated = false
        if let limit = filter.limit, rows.count > limit {
            rows.removeLast(rows.count - limit)
            truncated = true
        }
        return AuditRows(columns: columns, rows: rows, truncated: truncated)
    }

    /// Streams the matching rows, 5,000 at a time from a cursor.
    package func forEachPair(_ filter: AuditFilter, replica: String?, columns: [String] = pairColumns,
                             _ body: ([SQLValue]) throws -> Void) throws {
        var (sql, parameters) = filter.query(eventLookup: false, columns: columns)
        // SQLite's ?N placeholders are PostgreSQL's $N; the replica condition comes first.
        sql = sql.replacingOccurrences(of: "?", with: "$")
        var texts: [String?] = parameters.map(Self.text)
        if let replica {
            texts.append(replica)
            let condition = "replica = $\(texts.count)"
            sql = sql.contains(" WHERE ")
                ? sql.replacingOccurrences(of: " WHERE ", with: " WHERE \(condition) AND ")
                : sql.replacingOccurrences(of: " ORDER BY ", with: " WHERE \(condition) ORDER BY ")
        }
        sql = sql.replacingOccurrences(of: " ORDER BY received_at, request_id", with: " ORDER BY received_at, request_id, replica")
        try pg.execute("DECLARE pairs NO SCROLL CURSOR FOR \(sql)", texts)
        while true {
            let page = try pg.execute("FETCH 5000 FROM pairs")
            for cells in page {
                try body(zip(columns, cells).map { Self.value($1, column: $0) })
            }
            if page.count < 5000 { break }
        }
        try pg.execute("CLOSE pairs")
    }

    /// Both records of the call with this gateway request id, as stored (`replica` first, the
    /// hashes last), for each replica that has it (normally one).
    package func show(requestID: String) throws -> [AuditRecordPair] {
        let id = UUIDText.canonical(requestID) ?? requestID
        func records(_ table: String, _ columns: [String]) throws -> [(replica: String, fields: [AuditField])] {
            let extra = table == "audit_responses" ? ", upstream_body_is_text" : ""
            let rows = try pg.execute("SELECT \(columns.joined(separator: ", ")), hash\(extra), replica FROM \(table) WHERE request_id = $1 ORDER BY replica", [id])
            return try rows.map { cells in
                let row = try CentralVerification.Page.row(cells, table: table, columns: columns)
                let replica = cells.last.flatMap { $0 } ?? ""
                let fields = [AuditField(name: "replica", value: .text(replica))]
                    + zip(columns, row.values).map { AuditField(name: $0, value: $1) } + [AuditField(name: "hash", value: .text(row.hash))]
                return (replica, fields)
            }
        }
        let responses = try records("audit_responses", AuditSchema.responseColumns)
        return try records("audit_requests", AuditSchema.requestColumns).map { request in
            AuditRecordPair(request: request.fields, response: responses.first { $0.replica == request.replica }?.fields)
        }
    }

    private static func text(_ value: SQLValue) -> String? {
        switch value {
        case .null: nil
        case .int(let v): String(v)
        case .double(let d): "\(d)"
        case .text(let s): s
        case .blob(let b): String(decoding: b, as: UTF8.self)
        }
    }

    private static func value(_ text: String?, column: String) -> SQLValue {
        text.map { CentralAudit.value($0, column: column) } ?? .null
    }
}
