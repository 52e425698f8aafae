// Threads: made on the loop, read on the audit writer thread (values, Sendable).

/// What the gateway records when a request arrives (before anything is forwarded).
public struct AuditRequestRecord: Sendable, Equatable {
    public var requestID: String
    public var receivedAt: String
    public var clientAddr: String
    public var team: String?
    public var keyFingerprint: String?
    public var method: String
    public var path: String
    public var hookID: String?
    public var eventRequestID: String?
    public var decision: String
    public var userAgent: String?
    public var clientRequestID: String?
    public var configVersion: String

    package init(requestID: String, receivedAt: String, clientAddr: String, team: String?, keyFingerprint: String?,
                 method: String, path: String, hookID: String?, eventRequestID: String?, decision: String,
                 userAgent: String?, clientRequestID: String?, configVersion: String) {
        self.requestID = requestID
        self.receivedAt = receivedAt
        self.clientAddr = clientAddr
        self.team = team
        self.keyFingerprint = keyFingerprint
        self.method = method
        self.path = path
        self.hookID = hookID
        self.eventRequestID = eventRequestID
        self.decision = decision
        self.userAgent = userAgent
        self.clientRequestID = clientRequestID
        self.configVersion = configVersion
    }

    /// Values in `AuditSchema.requestColumns` order (without seq and prev_hash).
    package var values: [SQLValue] {
        [.text(requestID), .text(receivedAt), .text(clientAddr), team.sql, keyFingerprint.sql, .text(method),
         .text(path), hookID.sql, eventRequestID.sql, .text(decision), userAgent.sql, clientRequestID.sql,
         .text(configVersion)]
    }
}

/// What the gateway records before it answers.
public struct AuditResponseRecord: Sendable, Equatable {
    public var requestID: String
    public var completedAt: String
    public var decision: String
    public var status: Int
    public var upstreamStatus: Int?
    public var upstreamMs: Double?
    public var totalMs: Double
    public var upstreamContentType: String?
    /// Hookshot's body as received; the writer keeps up to `audit.max_body_bytes` of it and
    /// parses `delivery_id`, `event`, `tenant_id` from it.
    public var upstreamBody: [UInt8]?
    public var detail: String?

    package init(requestID: String, completedAt: String, decision: String, status: Int, upstreamStatus: Int?,
                 upstreamMs: Double?, totalMs: Double, upstreamContentType: String?, upstreamBody: [UInt8]?,
                 detail: String?) {
        self.requestID = requestID
        self.completedAt = completedAt
        self.decision = decision
        self.status = status
        self.upstreamStatus = upstreamStatus
        self.upstreamMs = upstreamMs
        self.totalMs = totalMs
        self.upstreamContentType = upstreamContentType
        self.upstreamBody = upstreamBody
        self.detail = detail
    }

    package func values(maxBodyBytes: Int) -> [SQLValue] {
        let fields = upstreamBody.map(EventFields.parse) ?? EventFields()
        var stored: SQLValue = .null
        if let body = upstreamBody {
            let kept = Array(body.prefix(maxBodyBytes))
            // TEXT when it is UTF-8 (readable in the sqlite3 shell), BLOB otherwise.
            if let text = String(validating: kept, as: UTF8.self) { stored = .text(text) } else { stored = .blob(kept) }
        }
        return [.text(requestID), .text(completedAt), .text(decision), .int(Int64(status)),
                upstreamStatus.map { .int(Int64($0)) } ?? .null, upstreamMs.map { .double($0) } ?? .null,
                .double(totalMs), fields.deliveryID.sql, fields.event.sql, fields.tenantID.sql,
                upstreamContentType.sql, stored, upstreamBody.map { .int(Int64($0.count)) } ?? .null, detail.sql]
    }
}

extension Optional where Wrapped == String {
    var sql: SQLValue { map { .text($0) } ?? .null }
}

/// `delivery_id`, `event`, `tenant_id` of a Hookshot event object, when the body is one.
struct EventFields: Equatable {
    var deliveryID: String?
    var event: String?
    var tenantID: String?

    static func parse(_ body: [UInt8]) -> EventFields {
        var fields = EventFields()
        MiniJSON.topLevelStrings(body, keys: ["delivery_id", "event", "tenant_id"]) { key, value in
            switch key {
            case 0: fields.deliveryID = value
            case 1: fields.event = value
            default: fields.tenantID = value
            }
        }
        return fields
    }
}

/// Reads the string-valued members of a top-level JSON object (nested values skipped).
/// Small and bounded, so the writer does not need Foundation's JSON for three fields.
enum MiniJSON {
    /// Calls `found` with the index in `keys` and the value of each top-level member whose
    /// name is one of `keys` and whose value is a string. Other members are skipped without
    /// building strings (this runs for every upstream answer).
    static func topLevelStrings(_ bytes: [UInt8], keys: [String], found: (Int, String) -> Void) {
        let wanted = keys.map { Array($0.utf8) }
        var p = Parser(bytes: bytes)
        p.ws()
        guard p.i < bytes.count, bytes[p.i] == UInt8(ascii: "{") else { return }
        p.i += 1
        while true {
            p.ws()
            guard p.i < bytes.count, bytes[p.i] == 0x22 else { return }
            // The key, as raw bytes (keys with escapes never match a wanted name).
            let start = p.i + 1
            var end = start
            while end < bytes.count, bytes[end] != 0x22, bytes[end] != 0x5C { end += 1 }
            guard end < bytes.count else { return }
            let match: Int?
            if bytes[end] == 0x22 {
                match = wanted.firstIndex { $0.elementsEqual(bytes[start..<end]) }
                p.i = end + 1
            } else {
                guard p.string() != nil else { return }
                match = nil
            }
            p.ws()
            guard p.i < bytes.count, bytes[p.i] == UInt8(ascii: ":") else { return }
            p.i += 1
            p.ws()
            guard p.i < bytes.count else { return }
            if let match, bytes[p.i] == 0x22 {
                guard let value = p.string() else { return }
                found(match, value)
            } else {
                guard p.skipValue() else { return }
            }
            p.ws()
            guard p.i < bytes.count else { return }
            if bytes[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
            return
        }
    }

    private struct Parser {
        let bytes: [UInt8]
        var i = 0
        var depth = 0

        mutating func ws() {
            while i < bytes.count {
                switch bytes[i] {
                case 9, 10, 13, 32: i += 1
                default: return
                }
            }
        }

        mutating func string() -> String? {
            guard i < bytes.count, bytes[i] == 0x22 else { return nil }
            i += 1
            // Fast path: no escape before the closing quote, so the bytes are the string.
            let start = i
            while i < bytes.count, bytes[i] != 0x22, bytes[i] != 0x5C { i += 1 }
            guard i < bytes.count else { return nil }
            if bytes[i] == 0x22 {
                defer { i += 1 }
                return String(validating: bytes[start..<i], as: UTF8.self)
            }
            var out = Array(bytes[start..<i])
            while i < bytes.count {
                let c = bytes[i]
                i += 1
                switch c {
                case 0x22:
                    return String(validating: out, as: UTF8.self)
                case 0x5C:
                    guard i < bytes.count else { return nil }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case 0x6E: out.append(10)  // n
                    case 0x74: out.append(9)   // t
                    case 0x72: out.append(13)  // r
                    case 0x62: out.append(8)   // b
                    case 0x66: out.append(12)  // f
                    case 0x75:                 // u
                        guard i + 4 <= bytes.count,
                              let code = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16) else { return nil }
                        i += 4
                        let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                        out.append(contentsOf: Array(String(Character(scalar)).utf8))
                    default: out.append(e)
                    }
                default:
                    out.append(c)
                }
            }
            return nil
        }

        /// Skips a number, literal, array or object (nesting bounded).
        mutating func skipValue() -> Bool {
            guard i < bytes.count else { return false }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") { return string() != nil }
            if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
                var stack = 0
                while i < bytes.count {
                    let d = bytes[i]
                    if d == UInt8(ascii: "\"") { guard string() != nil else { return false }; continue }
                    if d == UInt8(ascii: "{") || d == UInt8(ascii: "[") { stack += 1; if stack > 64 { return false } }
                    if d == UInt8(ascii: "}") || d == UInt8(ascii: "]") {
                        stack -= 1
                        if stack == 0 { i += 1; return true }
                    }
                    i += 1
                }
                return false
            }
            while i < bytes.count {
                switch bytes[i] {
                case UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 9, 10, 13, 32: return true
                default: i += 1
                }
            }
            return true
        }
    }
}
