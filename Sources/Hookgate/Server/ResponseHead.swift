import Foundation

/// An answer as a listener writes it. The listener adds `Content-Length`, `Date` and
/// `Connection`; it drops any of those (and `Transfer-Encoding`) given here, and any field
/// whose name or value could break the head (CR, LF, NUL).
struct OutgoingResponse {
    var status: Int
    /// Nil, or not a valid reason phrase: the standard phrase for `status`.
    var reason: String?
    var headers: [(String, String)]
    var body: [UInt8]
    /// Interim (1xx) answers written before this one.
    var interim: [(Int, [(String, String)])] = []

    init(status: Int, reason: String? = nil, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
    }

    /// The bytes on the wire. `headOnly`: the answer to a HEAD request (length, no body).
    func serialized(date: String, keepAlive: Bool, version: HTTPVersion, headOnly: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + headers.count * 48 + (headOnly ? 0 : body.count))
        for (status, fields) in interim where (100...199).contains(status) {
            out.appendUTF8("HTTP/1.1 \(status) \(HTTPStatus.reason(status))\r\n")
            for (name, value) in fields where ResponseHead.mayPass(name: name, value: value) {
                out.appendUTF8("\(name): \(value)\r\n")
            }
            out.appendUTF8("\r\n")
        }
        out.appendUTF8("HTTP/1.1 ")
        out.appendUTF8(String(status))
        out.append(0x20)
        if let reason, ResponseHead.isValidReason(reason) {
            out.appendUTF8(reason)
        } else {
            out.appendUTF8(HTTPStatus.reason(status))
        }
        out.appendUTF8("\r\n")
        for (name, value) in headers where ResponseHead.mayPass(name: name, value: value) {
            out.appendUTF8(name)
            out.appendUTF8(": ")
            out.appendUTF8(value)
            out.appendUTF8("\r\n")
        }
        out.appendUTF8("Content-Length: ")
        out.appendUTF8(String(body.count))
        out.appendUTF8("\r\nDate: ")
        out.appendUTF8(date)
        if !keepAlive {
            out.appendUTF8("\r\nConnection: close")
        } else if version == .http10 {
            out.appendUTF8("\r\nConnection: keep-alive")
        }
        out.appendUTF8("\r\n\r\n")
        if !headOnly { out.append(contentsOf: body) }
        return out
    }
}

enum ResponseHead {
    /// The fields the listener writes itself.
    static func isReserved(_ name: String) -> Bool {
        switch name.utf8.count {
        case 4: return ASCII.equalsIgnoringCase(name, "Date")
        case 10: return ASCII.equalsIgnoringCase(name, "Connection") || ASCII.equalsIgnoringCase(name, "Keep-Alive")
        case 14: return ASCII.equalsIgnoringCase(name, "Content-Length")
        case 17: return ASCII.equalsIgnoringCase(name, "Transfer-Encoding")
        default: return false
        }
    }

    static func mayPass(name: String, value: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy(RequestParser.isTokenChar)
            && value.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
            && !isReserved(name)
    }

    /// RFC 9112 reason-phrase: HTAB, SP, VCHAR, obs-text (no CR, LF or other controls).
    static func isValidReason(_ reason: String) -> Bool {
        !reason.isEmpty && reason.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }

    static let continueBytes: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
}

/// The `Date` field value (IMF-fixdate), made at most once a second (loop thread only).
final class HTTPDate {
    private var second = -1
    private var text = ""

    func now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let s = ts.tv_sec
        if s != second {
            second = s
            text = Self.format(s)
        }
        return text
    }

    static func format(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(tm.tm_wday)]), \(two(tm.tm_mday)) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) "
            + "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) GMT"
    }
}

enum HTTPStatus {
    static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 103: return "Early Hints"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 413: return "Content Too Large"
        case 422: return "Unprocessable Content"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(status)"
        }
    }
}

enum TCPOptions {
    static func setNoDelay(_ fd: Int32) {
        guard fd >= 0 else { return }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }
}
