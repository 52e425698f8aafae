import CSQLite
import Foundation

// Threads: any (pure values: the filters of `hookgate audit list|export`).

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
    /// `eventLookup`: the file has `audit_event_lookup` (schema 3): a Hookshot request id is found
    /// with one probe per batch plus the records after the last batch, instead of a scan.
    /// `columns`: of `audit_pairs`, in order (literals from `AuditSchema.pairColumns`, never input).
    func query(eventLookup: Bool = false, columns: [String] = AuditSchema.pairColumns) -> (sql: String, parameters: [SQLValue]) {
        var conditions: [String] = []
        var parameters: [SQLValue] = []
        func add(_ condition: String, _ value: SQLValue) {
            parameters.append(value)
            conditions.append(condition.replacingOccurrences(of: "?", with: "?\(parameters.count)"))
        }
        if let team { add("team = ?", .text(team)) }
        if let hookID { add("hook_id = ?", .text(hookID)) }
        if let eventRequestID {
            if eventLookup {
                parameters.append(AuditDerived.eventKey(eventRequestID))
                parameters.append(.text(eventRequestID))
                let key = parameters.count - 1, text = parameters.count
                conditions.append("""
                    request_id IN (SELECT request_id FROM audit_requests WHERE seq IN (
                        SELECT seq FROM audit_event_lookup WHERE bucket IN (SELECT first_seq FROM audit_batches) AND event_key = ?\(key)
                        UNION ALL
                        SELECT seq FROM audit_requests WHERE seq > (SELECT COALESCE(max(last_seq), 0) FROM audit_batches)
                           AND event_request_id = ?\(text) COLLATE NOCASE))
                    """)
            } else {
                add("event_request_id = ?", .text(eventRequestID))
            }
        }
        if let requestID { add("request_id = ?", .text(requestID)) }
        if let decision { add("decision = ?", .text(decision.rawValue)) }
        if let status { add("status = ?", .int(Int64(status))) }
        if let since { add("received_at >= ?", .text(since)) }
        if let until { add("received_at < ?", .text(until)) }
        var sql = "SELECT \(columns.joined(separator: ", ")) FROM audit_pairs"
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY received_at, request_id"
        if let limit {
            parameters.append(.int(Int64(limit)))
            sql += " LIMIT ?\(parameters.count)"
        }
        return (sql, parameters)
    }
}
