import CSQLite
import Foundation

/// Every SQLite failure: the result code, SQLite's message and the statement (never the
/// bound values, which may hold audit content).
/// Why the audit database could not be used, shaped like GRDB's `DatabaseError`: SQLite's own
/// failures keep their extended result code (and the statement's SQL, never bound values); the
/// gateway's own findings about the file have cases of their own instead of borrowed codes.
public struct AuditError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// SQLite failed with this extended result code.
        case sqlite(resultCode: Int32)
        /// The audit file exists but may not be written (permissions, no write bit).
        case notWritable
        /// The file the writer had open was removed or replaced by another.
        case fileReplaced
        /// The file is SQLite but not one this gateway can use (no WAL, a newer schema).
        case unusable
        /// A failure outside SQLite (a benchmark run that stopped).
        case other
    }

    public var kind: Kind
    public var message: String
    /// The statement that failed, without its bound values.
    public var sql: String?

    /// SQLite's extended result code, for `.sqlite`.
    public var resultCode: Int32? { if case .sqlite(let code) = kind { code } else { nil } }
    /// SQLite's primary result code (the low byte of the extended one), for `.sqlite`.
    public var primaryResultCode: Int32? { resultCode.map { $0 & 0xff } }

    public var description: String {
        var s: String
        switch kind {
        case .sqlite(let code):
            s = code & 0xff == code ? "SQLite error \(code): \(message)" : "SQLite error \(code & 0xff) (extended \(code)): \(message)"
        case .notWritable, .fileReplaced, .unusable, .other:
            s = message
        }
        if let sql { s += " (\(sql.prefix(120)))" }
        return s
    }

    package init(_ kind: Kind, message: String, sql: String? = nil) {
        self.kind = kind
        self.message = message
        self.sql = sql
    }

    /// A failure SQLite reported with `code`.
    package init(sqlite code: Int32, message: String, sql: String? = nil) {
        self.init(.sqlite(resultCode: code), message: message, sql: sql)
    }
}

/// One SQLite connection. Owns the `sqlite3*` (closed in `close()` or `deinit`); each
/// statement keeps its connection alive, so a statement never outlives its database.
/// Used by one thread at a time (the audit writer, or a CLI command).
package final class SQLiteConnection {
    private(set) var db: OpaquePointer?
    let path: String

    package init(path: String, readOnly: Bool = false) throws(AuditError) {
        self.path = path
        var handle: OpaquePointer?
        let flags = readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        let rc = sqlite3_open_v2(path, &handle, flags | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(handle)  // a failed open still allocates a handle
            throw AuditError(sqlite: rc, message: "\(message): \(path)")
        }
        db = handle
        sqlite3_extended_result_codes(handle, 1)
    }

    deinit { close() }

    package func close() {
        if let db {
            sqlite3_close_v2(db)
            self.db = nil
        }
    }

    /// How long a statement waits for another connection's lock before failing with
    /// SQLITE_BUSY. SQLite's own `busy_timeout` sleeps 25–100 ms between tries once it has
    /// waited a few: against another process that commits back to back (two gateways on one
    /// file, docs/audit.md) the lock is free only for microseconds between its commits, and
    /// such a waiter starves. This one tries again every 0.1–0.5 ms (jittered) until `ms` have
    /// passed; each try is one `fcntl` lock attempt.
    package func waitWhenBusy(ms: Int) {
        guard let db else { return }
        let wait = BusyWait(timeoutNanos: UInt64(max(ms, 0)) * 1_000_000)
        busyWait = wait
        sqlite3_busy_handler(db, { context, count in
            guard let context else { return 0 }
            return Unmanaged<BusyWait>.fromOpaque(context).takeUnretainedValue().tryAgain(count: count) ? 1 : 0
        }, Unmanaged.passUnretained(wait).toOpaque())
    }

    /// The busy handler's state; kept alive by the connection, whose handle dies first.
    private var busyWait: BusyWait?

    private final class BusyWait {
        let timeoutNanos: UInt64
        var started: UInt64 = 0

        init(timeoutNanos: UInt64) { self.timeoutNanos = timeoutNanos }

        /// `count`: how many times the handler was called for this lock (0 on the first).
        func tryAgain(count: Int32) -> Bool {
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            let now = UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
            if count == 0 { started = now }
            guard now - started < timeoutNanos else { return false }
            usleep(UInt32.random(in: 100...500))
            return true
        }
    }

    package func execute(_ sql: String) throws(AuditError) {
        guard let db else { throw AuditError(sqlite: SQLITE_MISUSE, message: "database is closed", sql: sql) }
        var errorMessage: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &errorMessage)
        if rc != SQLITE_OK {
            let message = errorMessage.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(errorMessage)
            throw AuditError(sqlite: rc, message: message, sql: sql)
        }
    }

    package func prepare(_ sql: String) throws(AuditError) -> SQLiteStatement {
        try SQLiteStatement(connection: self, sql: sql)
    }

    func error(_ rc: Int32, sql: String?) -> AuditError {
        AuditError(sqlite: rc, message: db.map { String(cString: sqlite3_errmsg($0)) } ?? "closed", sql: sql)
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int { db.map { Int(sqlite3_changes64($0)) } ?? 0 }

    /// First column of the first row as an integer (PRAGMA user_version and the like).
    func scalarInt(_ sql: String) throws(AuditError) -> Int64? {
        let statement = try prepare(sql)
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return statement.isNull(0) ? nil : statement.int(0)
    }
}

/// A prepared statement; finalized in `deinit`.
package final class SQLiteStatement {
    private let connection: SQLiteConnection
    private var statement: OpaquePointer?
    let sql: String
    /// The bytes of the values being bound by `run` (reused; see there).
    private var arena: [UInt8] = []

    fileprivate init(connection: SQLiteConnection, sql: String) throws(AuditError) {
        self.connection = connection
        self.sql = sql
        guard let db = connection.db else { throw AuditError(sqlite: SQLITE_MISUSE, message: "database is closed", sql: sql) }
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK else { throw connection.error(rc, sql: sql) }
    }

    deinit { sqlite3_finalize(statement) }

    func reset() {
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
    }

    /// Binds values to ?1, ?2, ... in order.
    func bind(_ values: [SQLValue]) throws(AuditError) {
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(statement, index)
            case .int(let v): rc = sqlite3_bind_int64(statement, index, v)
            case .double(let v): rc = sqlite3_bind_double(statement, index, v)
            case .text(let s):
                // Native strings are contiguous UTF-8: bind in place (SQLite copies: TRANSIENT).
                if s.isEmpty {
                    // An empty buffer may have no address, and NULL would bind SQL NULL, not "".
                    rc = hg_sqlite3_bind_text_transient(statement, index, "", 0)
                } else {
                    var text = s
                    rc = text.withUTF8 { buf in
                        hg_sqlite3_bind_text_transient(statement, index, buf.baseAddress, Int32(buf.count))
                    }
                }
            case .blob(let b):
                rc = b.withUnsafeBytes { hg_sqlite3_bind_blob_transient(statement, index, $0.baseAddress, Int32($0.count)) }
            }
            guard rc == SQLITE_OK else { throw connection.error(rc, sql: sql) }
        }
    }

    /// Steps once: true if a row is available, false when done.
    func step() throws(AuditError) -> Bool {
        let rc = sqlite3_step(statement)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw connection.error(rc, sql: sql)
        }
    }

    /// Runs a statement that returns no rows, then resets it for reuse. Text and blob values
    /// are copied once into the statement's own buffer and bound from there without SQLite
    /// copying them again (SQLITE_STATIC: a malloc per value fewer); the buffer stays pinned
    /// and unchanged until the statement is reset and its bindings cleared.
    package func run(_ values: [SQLValue]) throws(AuditError) {
        reset()
        arena.removeAll(keepingCapacity: true)
        for value in values {
            switch value {
            case .text(let s): arena.appendUTF8(s)
            case .blob(let b): arena.append(contentsOf: b)
            case .null, .int, .double: break
            }
        }
        let rc: Int32 = arena.withUnsafeBufferPointer { buffer in
            var offset = 0
            var rc = SQLITE_OK
            for (i, value) in values.enumerated() where rc == SQLITE_OK {
                let index = Int32(i + 1)
                switch value {
                case .null: rc = sqlite3_bind_null(statement, index)
                case .int(let v): rc = sqlite3_bind_int64(statement, index, v)
                case .double(let v): rc = sqlite3_bind_double(statement, index, v)
                case .text(let s):
                    let n = s.utf8.count
                    rc = n == 0 ? hg_sqlite3_bind_text_transient(statement, index, "", 0)
                        : buffer.baseAddress!.advanced(by: offset).withMemoryRebound(to: CChar.self, capacity: n) {
                            hg_sqlite3_bind_text_static(statement, index, $0, Int32(n))
                        }
                    offset += n
                case .blob(let b):
                    // A zero-length blob from a NULL pointer would bind SQL NULL.
                    rc = b.isEmpty ? sqlite3_bind_zeroblob(statement, index, 0)
                        : hg_sqlite3_bind_blob_static(statement, index, buffer.baseAddress! + offset, Int32(b.count))
                    offset += b.count
                }
            }
            if rc == SQLITE_OK { rc = sqlite3_step(statement) }
            reset()  // while the buffer is still pinned: no binding points into it afterwards
            return rc
        }
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw connection.error(rc, sql: sql) }
    }

    var columnCount: Int { Int(sqlite3_column_count(statement)) }
    func columnName(_ i: Int) -> String { String(cString: sqlite3_column_name(statement, Int32(i))) }
    func isNull(_ i: Int) -> Bool { sqlite3_column_type(statement, Int32(i)) == SQLITE_NULL }
    func int(_ i: Int) -> Int64 { sqlite3_column_int64(statement, Int32(i)) }
    func double(_ i: Int) -> Double { sqlite3_column_double(statement, Int32(i)) }
    /// The whole TEXT value, embedded NUL bytes included (a UTF-8 body may hold them; reading up to
    /// the first NUL would change what the hash chain covers).
    func text(_ i: Int) -> String? {
        guard let p = sqlite3_column_text(statement, Int32(i)) else { return nil }
        let n = Int(sqlite3_column_bytes(statement, Int32(i)))
        return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
    }
    func blob(_ i: Int) -> [UInt8]? {
        let n = Int(sqlite3_column_bytes(statement, Int32(i)))
        guard let p = sqlite3_column_blob(statement, Int32(i)) else { return isNull(i) ? nil : [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }

    /// A column's storage class in the current row.
    enum ColumnType { case null, int, double, text, blob }

    /// A column of the current row as stored, without copying: valid until the next step.
    struct RawColumn {
        var type: ColumnType
        /// The value of an integer or real column (`double` only for real).
        var int: Int64 = 0
        var double: Double = 0
        /// The bytes of a text or blob column.
        var bytes = UnsafeRawBufferPointer(start: nil, count: 0)
    }

    func raw(_ i: Int) -> RawColumn {
        let column = Int32(i)
        switch sqlite3_column_type(statement, column) {
        case SQLITE_NULL: return RawColumn(type: .null)
        case SQLITE_INTEGER: return RawColumn(type: .int, int: sqlite3_column_int64(statement, column))
        case SQLITE_FLOAT: return RawColumn(type: .double, double: sqlite3_column_double(statement, column))
        case SQLITE_BLOB:
            let p = sqlite3_column_blob(statement, column)
            let n = Int(sqlite3_column_bytes(statement, column))
            return RawColumn(type: .blob, bytes: UnsafeRawBufferPointer(start: n > 0 ? p : nil, count: n > 0 ? n : 0))
        default:
            let p = sqlite3_column_text(statement, column)
            let n = Int(sqlite3_column_bytes(statement, column))
            return RawColumn(type: .text, bytes: UnsafeRawBufferPointer(start: n > 0 ? p : nil, count: n > 0 ? n : 0))
        }
    }

    /// Whether a text or blob column's bytes are exactly `bytes`.
    func bytesEqual(_ i: Int, _ bytes: [UInt8]) -> Bool {
        let stored = raw(i).bytes
        guard stored.count == bytes.count else { return false }
        guard let base = stored.baseAddress else { return true }
        return bytes.withUnsafeBytes { memcmp(base, $0.baseAddress!, stored.count) == 0 }
    }

    /// The column as a typed value.
    func value(_ i: Int) -> SQLValue {
        switch sqlite3_column_type(statement, Int32(i)) {
        case SQLITE_NULL: return .null
        case SQLITE_INTEGER: return .int(int(i))
        case SQLITE_FLOAT: return .double(double(i))
        case SQLITE_BLOB: return .blob(blob(i) ?? [])
        default: return .text(text(i) ?? "")
        }
    }
}

public enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case blob([UInt8])
}
