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
        let reasonText = reason.flatMap { ResponseHead.isValidReason($0) ? $0 : nil } ?? HTTPStatus.reason(status)
        let fields = headers.filter { ResponseHead.mayPass(name: $0.0, value: $0.1) }
        // An upper bound of what is written below.
        var bound = 128 + reasonText.utf8.count + date.utf8.count + (headOnly ? 0 : body.count)
        for (name, value) in fields { bound += name.utf8.count + value.utf8.count + 4 }
        for (_, extra) in interim {
            bound += 64
            for (name, value) in extra { bound += name.utf8.count + value.utf8.count + 4 }
        }
        return [UInt8](writingAtMost: bound) { out in
            for (status, extra) in interim where (100...199).contains(status) {
                out.write("HTTP/1.1 ")
                out.write(decimal: status)
                out.write(byte: 0x20)
                out.write(HTTPStatus.reason(status))
                out.write("\r\n")
                for (name, value) in extra where ResponseHead.mayPass(name: name, value: value) {
                    out.write(name)
                    out.write(": ")
                    out.write(value)
                    out.write("\r\n")
                }
                out.write("\r\n")
            }
            out.write("HTTP/1.1 ")
            out.write(decimal: min(max(status, 100), 999))
            out.write(byte: 0x20)
            out.write(reasonText)
            out.write("\r\n")
            for (name, value) in fields {
                out.write(name)
                out.write(": ")
                out.write(value)
                out.write("\r\n")
            }
            out.write("Content-Length: ")
            out.write(decimal: body.count)
            out.write("\r\nDate: ")
            out.write(date)
            if !keepAlive {
                out.write("\r\nConnection: close")
            } else if version == .http10 {
                out.write("\r\nConnection: keep-alive")
            }
            out.write("\r\n\r\n")
            if !headOnly { body.withUnsafeBytes { out.write($0) } }
        }
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
