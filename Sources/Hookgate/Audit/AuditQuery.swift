import CSQLite
import Foundation

/// Read-only access to an audit database for `hookgate audit` and compliance tooling.
///
/// The file is opened with `SQLITE_OPEN_READONLY`: nothing is ever written, the journal mode
/// is left alone, and a missing file is an error (never created). Because the gateway keeps
/// the database in WAL mode, this works while the gateway writes; each query sees one
/// consistent snapshot. One instance is used by one thread at a time.
public final class AuditQuery {
    public let path: String
    private let db: SQLiteConnection

    /// The columns of the `audit_pairs` view, in order: the shape of every row returned by
    /// `list(_:)` and `forEachPair(_:_:)`.
    public static let pairColumns = AuditSchema.pairColumns

    public init(path: String) throws(AuditQueryError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw .noSuchFile(path)
        }
        guard !isDirectory.boolValue else { throw .notAuditDatabase(path, why: "it is a directory") }
        let connection: SQLiteConnection
        do throws(AuditError) {
            connection = try SQLiteConnection(path: path, readOnly: true)
        } catch {
            throw .sqlite(error)
        }
        self.path = path
        self.db = connection
        let found: Int64
        do throws(AuditError) {
            // A reader waits rather than failing at once on the rare WAL lock (recovery, checkpoint).
            try connection.execute("PRAGMA busy_timeout = 5000")
            found = try connection.scalarInt("""
                SELECT count(*) FROM sqlite_master
                 WHERE (type = 'table' AND name IN ('audit_requests', 'audit_responses'))
                    OR (type = 'view' AND name = 'audit_pairs')
                """) ?? 0
        } catch {
            connection.close()
            if error.primaryResultCode == SQLITE_NOTADB {
                throw .notAuditDatabase(path, why: "not an SQLite database")
            }
            throw .sqlite(error)
        }
        guard found == 3 else {
            connection.close()
            throw .notAuditDatabase(path, why: "no audit_requests, audit_responses and audit_pairs")
        }
    }

    deinit { db.close() }

    // MARK: - verify

    /// Checks the whole hash chain (`AuditChain.verify`) in one read transaction, and reads
    /// the newest record's seq and hash (worth noting outside the database: see `hash(seq:)`).
    public func verify() throws(AuditQueryError) -> AuditVerification {
        try readTransaction { () throws(AuditError) -> AuditVerification in
            let report = try AuditChain.verify(db)
            var result = AuditVerification(records: report.records, pairs: report.pairs,
                                           incomplete: report.incomplete, broken: report.broken)
            let head = try db.prepare("""
                SELECT seq, hash FROM audit_requests UNION ALL SELECT seq, hash FROM audit_responses
                 ORDER BY seq DESC LIMIT 1
                """)
            if try head.step(), !head.isNull(0), let hash = head.text(1) {
                result.lastSeq = head.int(0)
                result.lastHash = hash
            }
            head.reset()
            return result
        }
    }

    /// The stored hash of the record with this `seq` (either table), or nil if there is none.
    public func hash(seq: Int64) throws(AuditQueryError) -> String? {
        try readTransaction { () throws(AuditError) -> String? in
            let statement = try db.prepare("""
                SELECT hash FROM audit_requests WHERE seq = ?1
                UNION ALL SELECT hash FROM audit_responses WHERE seq = ?1
                """)
            try statement.bind([.int(seq)])
            defer { statement.reset() }
            guard try statement.step() else { return nil }
            return statement.text(0)
        }
    }

    // MARK: - list / export

    /// Rows of `audit_pairs` matching `filter`, at most `filter.limit` of them; `truncated`
    /// tells whether more would have matched.
    public func list(_ filter: AuditFilter) throws(AuditQueryError) -> AuditRows {
        var probe = filter
        if let limit = filter.limit, limit < Int.max { probe.limit = limit + 1 }
        var rows: [[SQLValue]] = []
        try run(probe) { rows.append($0); return true }
        var truncated = false
        if let limit = filter.limit, rows.count > limit {
            rows.removeLast(rows.count - limit)
            truncated = true
        }
        return AuditRows(columns: Self.pairColumns, rows: rows, truncated: truncated)
    }

    /// Streams the rows of `audit_pairs` matching `filter` (in `pairColumns` order) to `body`,
    /// without holding them all in memory. An error thrown by `body` stops the walk and is rethrown.
    public func forEachPair(_ filter: AuditFilter, _ body: ([SQLValue]) throws -> Void) throws {
        var failure: (any Error)?
        try run(filter) { row in
            do { try body(row) } catch { failure = error }
            return failure == nil
        }
        if let failure { throw failure }
    }

    /// Steps through the matching rows while `body` returns true.
    private func run(_ filter: AuditFilter, _ body: ([SQLValue]) -> Bool) throws(AuditQueryError) {
        let (sql, parameters) = filter.query()
        try readTransaction { () throws(AuditError) in
            let statement = try db.prepare(sql)
            try statement.bind(parameters)
            defer { statement.reset() }
            let width = Self.pairColumns.count
            while try statement.step() {
                var row: [SQLValue] = []
                row.reserveCapacity(width)
                for i in 0..<width { row.append(statement.value(i)) }
                guard body(row) else { break }
            }
        }
    }

    // MARK: - show

    /// Every stored column of the request record with this gateway request id (any case) and
    /// of its response record, in table order; nil when there is no such request.
    public func show(requestID: String) throws(AuditQueryError) -> AuditRecordPair? {
        let id = UUIDText.canonical(requestID) ?? requestID
        return try readTransaction { () throws(AuditError) -> AuditRecordPair? in
            guard let request = try record(table: "audit_requests", requestID: id) else { return nil }
            return AuditRecordPair(request: request, response: try record(table: "audit_responses", requestID: id))
        }
    }

    /// `table` is one of two literals above, never user input.
    private func record(table: String, requestID: String) throws(AuditError) -> [AuditField]? {
        let statement = try db.prepare("SELECT * FROM \(table) WHERE request_id = ?1")
        try statement.bind([.text(requestID)])
        defer { statement.reset() }
        guard try statement.step() else { return nil }
        return (0..<statement.columnCount).map { AuditField(name: statement.columnName($0), value: statement.value($0)) }
    }

    // MARK: -

    /// Runs `body` in one deferred (read-only) transaction: one snapshot of both tables.
    private func readTransaction<T>(_ body: () throws(AuditError) -> T) throws(AuditQueryError) -> T {
        do throws(AuditError) {
            try db.execute("BEGIN")
            do throws(AuditError) {
                let result = try body()
                try db.execute("COMMIT")
                return result
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        } catch {
            throw .sqlite(error)
        }
    }
}

/// Why an audit database cannot be read.
public enum AuditQueryError: Error, CustomStringConvertible, Sendable {
    case noSuchFile(String)
    case notAuditDatabase(String, why: String)
    case sqlite(AuditError)

    public var description: String {
        switch self {
        case .noSuchFile(let path): "\(path): no such file"
        case .notAuditDatabase(let path, let why): "\(path): not a Hookgate audit database (\(why))"
        case .sqlite(let error): error.description
        }
    }
}

/// The outcome of `hookgate audit verify`.
public struct AuditVerification: Sendable, Equatable {
    /// Records checked (request and response records together).
    public var records: Int
    /// Requests with their response record.
    public var pairs: Int
    /// Requests without a response record (in flight, or the gateway stopped in between).
    public var incomplete: Int
    /// nil when the chain is whole; else the first record that breaks it and why.
    public var broken: String?
    /// The newest record's seq and hash (nil for an empty database).
    public var lastSeq: Int64?
    public var lastHash: String?

    public var isIntact: Bool { broken == nil }
}

/// `audit_pairs` rows in `columns` order.
public struct AuditRows: Sendable, Equatable {
    public var columns: [String]
    public var rows: [[SQLValue]]
    /// More rows matched than the filter's limit.
    public var truncated: Bool
}

/// One stored column of one record.
public struct AuditField: Sendable, Equatable {
    public var name: String
    public var value: SQLValue
}

/// Both records of one request, every stored column in table order.
public struct AuditRecordPair: Sendable, Equatable {
    public var request: [AuditField]
    /// nil when the request has no response record.
    public var response: [AuditField]?
}

extension Array where Element == AuditField {
    /// The value of the column `name`, or nil when there is no such column.
    public subscript(column name: String) -> SQLValue? { first { $0.name == name }?.value }
}

// MARK: - Filter

/// What `hookgate audit list|export` select from `audit_pairs`. Build it with
/// `AuditFilter.parse`, which validates and canonicalises what a person typed.
public struct AuditFilter: Sendable, Equatable {
    public var team: String?
    /// Canonical (lower-case) UUIDs.
    public var hookID: String?
    public var eventRequestID: String?
    public var requestID: String?
    public var decision: DecisionWord?
    public var status: Int?
    /// Stored UTC form `YYYY-MM-DDTHH:MM:SS.sssZ`; `since` inclusive, `until` exclusive.
    public var since: String?
    public var until: String?
    /// At most this many rows; nil for all.
    public var limit: Int?

    public init() {}

    /// The decisions a record can hold (every `DecisionWord` but `audit_unavailable`).
    public static let decisionWords = DecisionWord.allCases.filter { $0 != .auditUnavailable }.map(\.rawValue)

    /// A value a person typed that cannot be used; `option` is the long option's name
    /// without dashes (`hook`, `since`, ...).
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var option: String
        public var message: String
        public var description: String { "--\(option): \(message)" }
    }

    /// Validates and canonicalises filter values as typed on the command line. `limit` 0
    /// means no limit.
    public static func parse(team: String? = nil, hook: String? = nil, eventRequestID: String? = nil,
                             requestID: String? = nil, decision: String? = nil, status: Int? = nil,
                             since: String? = nil, until: String? = nil, limit: Int? = nil) throws(Invalid) -> AuditFilter {
        func uuid(_ text: String?, _ option: String) throws(Invalid) -> String? {
            guard let text else { return nil }
            guard let id = UUIDText.canonical(text) else {
                throw Invalid(option: option, message: "\"\(text)\" is not a UUID (8-4-4-4-12 hex digits)")
            }
            return id
        }
        func time(_ text: String?, _ option: String) throws(Invalid) -> String? {
            guard let text else { return nil }
            guard let stored = AuditTime.storedForm(text) else {
                throw Invalid(option: option, message: "\"\(text)\" is not an RFC 3339 time "
                              + "(like 2025-03-01T09:30:00Z, 2025-03-01T11:30:00.250+02:00 or 2025-03-01)")
            }
            return stored
        }
        var filter = AuditFilter()
        filter.team = team
        filter.hookID = try uuid(hook, "hook")
        filter.eventRequestID = try uuid(eventRequestID, "event-request-id")
        filter.requestID = try uuid(requestID, "request-id")
        if let decision {
            guard let word = DecisionWord(rawValue: decision), word != .auditUnavailable else {
                let why = decision == DecisionWord.auditUnavailable.rawValue
                    ? "is never in the database (those calls were refused because their record could not be written)"
                    : "is not one of " + decisionWords.joined(separator: ", ")
                throw Invalid(option: "decision", message: "\"\(decision)\" \(why)")
            }
            filter.decision = word
        }
        if let status {
            guard (100...599).contains(status) else {
                throw Invalid(option: "status", message: "\(status) is not an HTTP status (100-599)")
            }
            filter.status = status
        }
        filter.since = try time(since, "since")
        filter.until = try time(until, "until")
        if let from = filter.since, let to = filter.until, to <= from {
            throw Invalid(option: "until", message: "must be later than --since")
        }
        if let limit {
            guard limit >= 0 else { throw Invalid(option: "limit", message: "must not be negative (0: no limit)") }
            filter.limit = limit == 0 ? nil : limit
        }
        return filter
    }

    /// One parameterised query over `audit_pairs`: column names are literals, every value a
    /// bound parameter.
    func query() -> (sql: String, parameters: [SQLValue]) {
        var conditions: [String] = []
        var parameters: [SQLValue] = []
        func add(_ condition: String, _ value: SQLValue) {
            parameters.append(value)
            conditions.append(condition.replacingOccurrences(of: "?", with: "?\(parameters.count)"))
        }
        if let team { add("team = ?", .text(team)) }
        if let hookID { add("hook_id = ?", .text(hookID)) }
        if let eventRequestID { add("event_request_id = ?", .text(eventRequestID)) }
        if let requestID { add("request_id = ?", .text(requestID)) }
        if let decision { add("decision = ?", .text(decision.rawValue)) }
        if let status { add("status = ?", .int(Int64(status))) }
        if let since { add("received_at >= ?", .text(since)) }
        if let until { add("received_at < ?", .text(until)) }
        var sql = "SELECT \(AuditSchema.pairColumns.joined(separator: ", ")) FROM audit_pairs"
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY received_at, request_id"
        if let limit {
            parameters.append(.int(Int64(limit)))
            sql += " LIMIT ?\(parameters.count)"
        }
        return (sql, parameters)
    }
}

// MARK: - Time

/// RFC 3339 times as typed, to the stored form.
public enum AuditTime {
    /// The stored UTC form (`YYYY-MM-DDTHH:MM:SS.sssZ`) of an RFC 3339 time: `Z` or an offset
    /// like `+02:00`, optional fractional seconds, `T`, `t` or a space between date and time;
    /// a bare date means midnight UTC. Fractions finer than a millisecond round up to the next
    /// millisecond, so that comparing stored (millisecond) times as strings with `>=` (since)
    /// and `<` (until) gives exactly the instants at or after the time typed / before it.
    /// nil when `text` is not such a time or falls outside years 0000-9999 in UTC.
    public static func storedForm(_ text: String) -> String? {
        guard let ms = epochMilliseconds(text) else { return nil }
        return format(epochMilliseconds: ms)
    }

    static func epochMilliseconds(_ text: String) -> Int64? {
        var p = Scanner(bytes: Array(text.utf8))
        guard let year = p.digits(4), p.skip("-"), let month = p.digits(2), p.skip("-"), let day = p.digits(2),
              (1...12).contains(month), (1...daysIn(month: month, year: year)).contains(day) else { return nil }
        var seconds = daysFromCivil(year: year, month: month, day: day) * 86_400
        var ms: Int64 = 0
        if !p.atEnd {
            guard p.skip("T") || p.skip("t") || p.skip(" "),
                  let hour = p.digits(2), p.skip(":"), let minute = p.digits(2), p.skip(":"), let second = p.digits(2),
                  hour < 24, minute < 60, second <= 60 else { return nil }  // 60: a leap second
            seconds += hour * 3600 + minute * 60 + second
            if p.skip(".") {
                let fraction = p.digitRun()
                guard !fraction.isEmpty else { return nil }
                ms = fractionMilliseconds(fraction)
                if fraction.dropFirst(3).contains(where: { $0 != 0 }) { ms += 1 }
            }
            if p.skip("Z") || p.skip("z") {
            } else {
                let sign: Int64
                if p.skip("+") { sign = 1 } else if p.skip("-") { sign = -1 } else { return nil }
                guard let oh = p.digits(2), p.skip(":"), let om = p.digits(2), oh < 24, om < 60 else { return nil }
                seconds -= sign * (oh * 3600 + om * 60)
            }
            guard p.atEnd else { return nil }
        }
        let total = seconds * 1000 + ms
        guard total >= minimum, total <= maximum else { return nil }
        return total
    }

    private static func fractionMilliseconds(_ digits: [Int64]) -> Int64 {
        var ms: Int64 = 0
        for i in 0..<3 { ms = ms * 10 + (i < digits.count ? digits[i] : 0) }
        return ms
    }

    /// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z.
    private static let minimum = daysFromCivil(year: 0, month: 1, day: 1) * 86_400_000
    private static let maximum = daysFromCivil(year: 10_000, month: 1, day: 1) * 86_400_000 - 1

    static func format(epochMilliseconds total: Int64) -> String? {
        guard total >= minimum, total <= maximum else { return nil }
        let days = floorDivide(total, 86_400_000)
        let inDay = total - days * 86_400_000
        let (year, month, day) = civil(fromDays: days)
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(inDay / 3_600_000, 2)):"
            + "\(pad(inDay / 60_000 % 60, 2)):\(pad(inDay / 1000 % 60, 2)).\(pad(inDay % 1000, 3))Z"
    }

    private static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    private static func isLeap(_ year: Int64) -> Bool { year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) }

    private static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    private static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = floorDivide(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = floorDivide(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private struct Scanner {
        let bytes: [UInt8]
        var i = 0

        var atEnd: Bool { i == bytes.count }

        mutating func skip(_ c: Unicode.Scalar) -> Bool {
            guard i < bytes.count, bytes[i] == UInt8(ascii: c) else { return false }
            i += 1
            return true
        }

        mutating func digits(_ n: Int) -> Int64? {
            guard i + n <= bytes.count else { return nil }
            var v: Int64 = 0
            for b in bytes[i..<i + n] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) else { return nil }
                v = v * 10 + Int64(b - UInt8(ascii: "0"))
            }
            i += n
            return v
        }

        mutating func digitRun() -> [Int64] {
            var out: [Int64] = []
            while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) {
                out.append(Int64(bytes[i] - UInt8(ascii: "0")))
                i += 1
            }
            return out
        }
    }
}
