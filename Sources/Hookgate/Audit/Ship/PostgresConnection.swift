import CLibpq
import Foundation

// Threads: one thread at a time (the shipper's own thread, or a CLI command); never the loop.

/// Why PostgreSQL failed: its message and SQLSTATE (never a password, never row values).
package struct PostgresError: Error, CustomStringConvertible, Sendable, Equatable {
    package var message: String
    /// The five-character SQLSTATE, when the server sent one (`23505`: unique violation).
    package var sqlState: String?

    package var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }
    package var isUniqueViolation: Bool { sqlState == "23505" }
}

/// One libpq connection, blocking. Owns its `PGconn` (finished in `close()` or `deinit`);
/// every `PGresult` is cleared before the call that made it returns.
package final class PostgresConnection {
    private var conn: OpaquePointer?

    /// Connects with a URI (`postgresql://user@host:port/db?...`) and, if given, a password kept
    /// out of it. libpq's own variables (`PGPASSWORD`, `PGPASSFILE`, `PGSSLMODE`...) apply too.
    package init(uri: String, password: String?, applicationName: String = "hookgate", connectTimeoutSeconds: Int = 5) throws(PostgresError) {
        var keys = ["dbname", "application_name", "connect_timeout"]
        var values = [uri, applicationName, String(connectTimeoutSeconds)]
        if let password {
            keys.append("password")
            values.append(password)
        }
        let made: OpaquePointer? = Self.withCStrings(keys) { k in
            Self.withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let made, PQstatus(made) == CONNECTION_OK else {
            let message = made.map { Self.message(PQerrorMessage($0)) } ?? "out of memory"
            if let made { PQfinish(made) }
            throw PostgresError(message: "cannot connect to PostgreSQL: \(message)")
        }
        conn = made
        _ = try execute("SET client_min_messages = warning")
    }

    deinit { close() }

    package func close() {
        if let conn {
            self.conn = nil
            PQfinish(conn)
        }
    }

    /// Whether the connection is still usable (not broken by a failure).
    package var isOpen: Bool { conn.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// Runs `sql` (one or more statements, no parameters); the rows of the last, as text.
    @discardableResult
    package func execute(_ sql: String) throws(PostgresError) -> [[String?]] {
        guard let conn else { throw PostgresError(message: "not connected") }
        return try Self.rows(of: PQexec(conn, sql), conn: conn)
    }

    /// One statement with text parameters (`$1`, `$2`, ...); its rows, as text.
    @discardableResult
    package func execute(_ sql: String, _ parameters: [String?]) throws(PostgresError) -> [[String?]] {
        guard let conn else { throw PostgresError(message: "not connected") }
        let copies = parameters.map { $0.map { strdup($0) } ?? nil }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer<CChar>($0) }
        let result = pointers.withUnsafeBufferPointer { p in
            PQexecParams(conn, sql, Int32(parameters.count), nil, p.baseAddress, nil, nil, 0)
        }
        return try Self.rows(of: result, conn: conn)
    }

    /// `COPY <table> (<columns>) FROM STDIN` with `data` in COPY's text format.
    package func copy(into table: String, columns: [String], data: [UInt8]) throws(PostgresError) {
        guard let conn else { throw PostgresError(message: "not connected") }
        let start = PQexec(conn, "COPY \(table) (\(columns.joined(separator: ", "))) FROM STDIN")
        let status = PQresultStatus(start)
        PQclear(start)
        guard status == PGRES_COPY_IN else { throw Self.error(conn, result: nil) }
        var sent: Int32 = 1
        if !data.isEmpty {
            sent = data.withUnsafeBufferPointer { b in
                b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { PQputCopyData(conn, $0, Int32(b.count)) }
            }
        }
        guard sent == 1, PQputCopyEnd(conn, nil) == 1 else { throw Self.error(conn, result: nil) }
        // The COPY's outcome, then nothing more.
        var failure: PostgresError?
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) != PGRES_COMMAND_OK, failure == nil { failure = Self.error(conn, result: result) }
            PQclear(result)
        }
        if let failure { throw failure }
    }

    // MARK: - Results

    private static func rows(of result: OpaquePointer?, conn: OpaquePointer) throws(PostgresError) -> [[String?]] {
        defer { PQclear(result) }
        guard let result else { throw error(conn, result: nil) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return []
        case PGRES_TUPLES_OK:
            var out: [[String?]] = []
            let n = PQntuples(result), m = PQnfields(result)
            out.reserveCapacity(Int(n))
            for i in 0..<n {
                var row: [String?] = []
                row.reserveCapacity(Int(m))
                for j in 0..<m {
                    row.append(PQgetisnull(result, i, j) == 1 ? nil : String(cString: PQgetvalue(result, i, j)))
                }
                out.append(row)
            }
            return out
        default:
            throw error(conn, result: result)
        }
    }

    private static func error(_ conn: OpaquePointer, result: OpaquePointer?) -> PostgresError {
        if let result, let text = PQresultErrorMessage(result), text.pointee != 0 {
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            return PostgresError(message: message(text), sqlState: state)
        }
        return PostgresError(message: message(PQerrorMessage(conn)))
    }

    private static func message(_ text: UnsafePointer<CChar>?) -> String {
        guard let text else { return "unknown error" }
        return String(cString: text).trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\t", with: "")
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        let copies = strings.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer<CChar>($0) } + [nil]
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
