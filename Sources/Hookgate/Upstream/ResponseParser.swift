// Threads: any (a value); each upstream connection drives its own on the loop.

/// An HTTP/1.1 response as the gateway relays it. Its fields are kept as the head's bytes
/// and ranges into them: the gateway reads one or two of them, so the rest never become strings.
public struct UpstreamResponse: Sendable, Equatable {
    public var status: Int
    public var reason: String
    private var head: [UInt8]
    private var fields: [(name: Range<Int>, value: Range<Int>)]
    public var body: [UInt8]
    /// The server allows the connection to be reused (HTTP/1.1 without `Connection: close`,
    /// and a body delimited by length or chunks, not by closing).
    public var keepAlive: Bool

    init(status: Int, reason: String, head: [UInt8], fields: [(name: Range<Int>, value: Range<Int>)], body: [UInt8],
         keepAlive: Bool) {
        self.status = status
        self.reason = reason
        self.head = head
        self.fields = fields
        self.body = body
        self.keepAlive = keepAlive
    }

    /// Header fields in order, names as received.
    public var headers: [(name: String, value: String)] {
        fields.map { (String(decoding: head[$0.name], as: UTF8.self), String(decoding: head[$0.value], as: UTF8.self)) }
    }

    /// The first value of field `name` (ASCII case-insensitive).
    public func header(_ name: String) -> String? {
        var name = name
        return name.withUTF8 { wanted -> String? in
            for f in fields where f.name.count == wanted.count {
                var same = true
                var i = 0
                for b in head[f.name] {
                    let w = wanted[i]
                    if b != w && !(b | 0x20 == w | 0x20 && (w | 0x20) >= 0x61 && (w | 0x20) <= 0x7A) { same = false; break }
                    i += 1
                }
                if same { return String(decoding: head[f.value], as: UTF8.self) }
            }
            return nil
        }
    }

    public static func == (a: UpstreamResponse, b: UpstreamResponse) -> Bool {
        a.status == b.status && a.reason == b.reason && a.body == b.body && a.keepAlive == b.keepAlive
            && a.headers.map { "\($0.name):\($0.value)" } == b.headers.map { "\($0.name):\($0.value)" }
    }
}

/// Incremental, bounded HTTP/1.1 response parser: feed it bytes as they arrive; it never
/// buffers more than `maxHeaderBytes` of head or `maxBodyBytes` of body. Pure value type,
/// no I/O, so it is unit-tested and fuzzed on its own.
public struct ResponseParser: Sendable {
    public enum ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        case malformed(String)
        case headTooLarge(Int)
        case bodyTooLarge(Int)
        public var description: String {
            switch self {
            case .malformed(let why): return "invalid HTTP response from upstream: \(why)"
            case .headTooLarge(let n): return "upstream response head exceeds \(n) bytes"
            case .bodyTooLarge(let n): return "upstream response body exceeds \(n) bytes"
            }
        }
    }

    public enum Progress: Equatable, Sendable {
        case needMore
        case complete(UpstreamResponse)
    }

    private enum Framing: Equatable, Sendable { case length(Int), chunked, untilClose, none }
    private enum State: Equatable, Sendable {
        case head
        case body(Framing)
        case chunkSize, chunkData(Int), chunkDataEnd, trailers
        case done
    }

    public let maxHeaderBytes: Int
    public let maxBodyBytes: Int
    /// True for a response to HEAD (no body whatever the headers say). Unused for POST.
    public let bodyless: Bool
    private var state: State = .head
    private var buffer: [UInt8] = []
    private var status = 0
    private var reason = ""
    private var head: [UInt8] = []
    private var fields: [(name: Range<Int>, value: Range<Int>)] = []
    private var body: [UInt8] = []
    private var keepAlive = true
    private var interimCount = 0
    static let maxInterim = 8

    public init(maxHeaderBytes: Int = 64 * 1024, maxBodyBytes: Int = 1 << 20, bodyless: Bool = false) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.bodyless = bodyless
    }

    /// True once any byte of a response has been seen.
    public var started: Bool { state != .head || !buffer.isEmpty }

    public mutating func feed<Bytes: Collection>(_ bytes: Bytes) throws(ParseError) -> Progress where Bytes.Element == UInt8 {
        buffer.append(contentsOf: bytes)
        return try advance()
    }

    /// The peer closed the connection: completes a close-delimited body, else an error.
    public mutating func finish() throws(ParseError) -> UpstreamResponse {
        if case .body(.untilClose) = state {
            try appendBody(buffer[...])
            buffer.removeAll()
            state = .done
            keepAlive = false
            return response()
        }
        throw .malformed(started ? "connection closed before the response was complete" : "connection closed without a response")
    }

    private func response() -> UpstreamResponse {
        UpstreamResponse(status: status, reason: reason, head: head, fields: fields, body: body, keepAlive: keepAlive)
    }

    private mutating func appendBody(_ bytes: ArraySlice<UInt8>) throws(ParseError) {
        guard body.count + bytes.count <= maxBodyBytes else { throw .bodyTooLarge(maxBodyBytes) }
        body.append(contentsOf: bytes)
    }

    /// Index just past the next CRLF (or bare LF) in `buffer`, and the line without it.
    private func nextLine(from start: Int) -> (line: ArraySlice<UInt8>, next: Int)? {
        var i = start
        while i < buffer.count {
            if buffer[i] == 10 {
                let end = (i > start && buffer[i - 1] == 13) ? i - 1 : i
                return (buffer[start..<end], i + 1)
            }
            i += 1
        }
        return nil
    }

    private mutating func advance() throws(ParseError) -> Progress {
        while true {
            switch state {
            case .done:
                return .complete(response())
            case .head:
                guard let headEnd = findHeadEnd() else {
                    if buffer.count > maxHeaderBytes { throw .headTooLarge(maxHeaderBytes) }
                    return .needMore
                }
                if headEnd > maxHeaderBytes { throw .headTooLarge(maxHeaderBytes) }
                let interim = try parseHead(upTo: headEnd)
                buffer.removeFirst(headEnd)
                if interim {
                    // RFC 9110 §15.2: a 1xx answer precedes the final one; skip it (bounded).
                    interimCount += 1
                    guard interimCount <= ResponseParser.maxInterim else {
                        throw .malformed("more than \(ResponseParser.maxInterim) interim (1xx) responses")
                    }
                    fields = []
                    state = .head
                }
            case .body(let framing):
                switch framing {
                case .none:
                    state = .done
                case .length(let n):
                    if n > maxBodyBytes { throw .bodyTooLarge(maxBodyBytes) }
                    guard buffer.count >= n else { return .needMore }
                    try appendBody(buffer[0..<n])
                    buffer.removeFirst(n)
                    if !buffer.isEmpty { keepAlive = false }  // pipelined garbage: do not reuse
                    state = .done
                case .untilClose:
                    if body.count + buffer.count > maxBodyBytes { throw .bodyTooLarge(maxBodyBytes) }
                    return .needMore
                case .chunked:
                    state = .chunkSize
                }
            case .chunkSize:
                guard let (line, next) = nextLine(from: 0) else {
                    if buffer.count > 1024 { throw .malformed("chunk size line too long") }
                    return .needMore
                }
                let sizeText = line.prefix { $0 != UInt8(ascii: ";") }
                guard !sizeText.isEmpty, sizeText.count <= 8,
                      let size = Int(String(decoding: sizeText, as: UTF8.self).trimmingSpaces, radix: 16), size >= 0
                else { throw .malformed("bad chunk size") }
                buffer.removeFirst(next)
                if size > maxBodyBytes - body.count { throw .bodyTooLarge(maxBodyBytes) }
                state = size == 0 ? .trailers : .chunkData(size)
            case .chunkData(let size):
                guard buffer.count >= size else { return .needMore }
                try appendBody(buffer[0..<size])
                buffer.removeFirst(size)
                state = .chunkDataEnd
            case .chunkDataEnd:
                guard let (line, next) = nextLine(from: 0) else {
                    if buffer.count > 2 { throw .malformed("chunk not followed by CRLF") }
                    return .needMore
                }
                guard line.isEmpty else { throw .malformed("chunk not followed by CRLF") }
                buffer.removeFirst(next)
                state = .chunkSize
            case .trailers:
                guard let (line, next) = nextLine(from: 0) else {
                    if buffer.count > maxHeaderBytes { throw .headTooLarge(maxHeaderBytes) }
                    return .needMore
                }
                buffer.removeFirst(next)
                if line.isEmpty {
                    if !buffer.isEmpty { keepAlive = false }
                    state = .done
                }
            }
        }
    }

    private func findHeadEnd() -> Int? {
        // End of head: an empty line (CRLFCRLF or LFLF).
        var i = 0
        let n = buffer.count
        while i < n {
            if buffer[i] == 10 {
                if i + 1 < n, buffer[i + 1] == 10 { return i + 2 }
                if i + 2 < n, buffer[i + 1] == 13, buffer[i + 2] == 10 { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    /// Parses a head; true for an interim (1xx) one, which has no body and is not the answer.
    private mutating func parseHead(upTo end: Int) throws(ParseError) -> Bool {
        let head = Array(buffer[0..<end])
        guard let (statusLine, afterStatus) = ResponseParser.line(in: head, from: 0) else { throw .malformed("no status line") }
        // "HTTP/1.1 200 OK": version, status code, optional reason.
        let s = statusLine.startIndex
        guard statusLine.count >= 12, head[s + 8] == 0x20, head[s + 12 ..< min(s + 13, statusLine.endIndex)].allSatisfy({ $0 == 0x20 })
        else { throw .malformed("bad status line") }
        let version = head[s..<(s + 8)]
        let isHTTP11 = ASCII.equals(version, "HTTP/1.1")
        guard isHTTP11 || ASCII.equals(version, "HTTP/1.0") else { throw .malformed("unsupported version") }
        let digits = head[(s + 9)..<(s + 12)]
        guard digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { throw .malformed("bad status code") }
        let code = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
        guard (100...599).contains(code) else { throw .malformed("bad status code") }
        if code < 200 {
            // 101 would switch protocols, which the gateway never asks for.
            guard code != 101 else { throw .malformed("unexpected 101 Switching Protocols") }
            return true
        }
        status = code
        reason = statusLine.count > 13 ? String(decoding: head[(s + 13)..<statusLine.endIndex], as: UTF8.self) : ""
        keepAlive = isHTTP11

        var contentLength: Int? = nil
        var chunked = false
        var found: [(name: Range<Int>, value: Range<Int>)] = []
        found.reserveCapacity(8)
        var pos = afterStatus
        while pos < end {
            guard let (range, next) = ResponseParser.line(in: head, from: pos) else { break }
            pos = next
            if range.isEmpty { break }
            let line = head[range]
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else {
                throw .malformed("bad header line")
            }
            let nameBytes = line[line.startIndex..<colon]
            guard nameBytes.allSatisfy(ResponseParser.isTokenChar) else { throw .malformed("bad header name") }
            // Trim optional white space on bytes; no string is made here.
            var valueStart = colon + 1, valueEnd = line.endIndex
            while valueStart < valueEnd, head[valueStart] == 0x20 || head[valueStart] == 0x09 { valueStart += 1 }
            while valueEnd > valueStart, head[valueEnd - 1] == 0x20 || head[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            let valueBytes = head[valueStart..<valueEnd]
            found.append((line.startIndex..<colon, valueStart..<valueEnd))
            switch ResponseParser.framingHeader(nameBytes) {
            case .contentLength:
                guard !valueBytes.isEmpty, valueBytes.count <= 15, valueBytes.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                    throw .malformed("bad Content-Length")
                }
                let n = valueBytes.reduce(0) { $0 * 10 + Int($1 - 48) }
                if let previous = contentLength, previous != n { throw .malformed("conflicting Content-Length") }
                contentLength = n
            case .transferEncoding:
                guard HTTPTokens.last(valueBytes, is: "chunked") else { throw .malformed("unsupported Transfer-Encoding") }
                chunked = true
            case .connection:
                if HTTPTokens.list(valueBytes, contains: "close") { keepAlive = false }
                if !isHTTP11 && HTTPTokens.list(valueBytes, contains: "keep-alive") { keepAlive = true }
            case nil:
                break
            }
        }
        self.head = head
        self.fields = found
        if chunked && contentLength != nil { throw .malformed("both Content-Length and chunked") }
        if bodyless || status == 204 || status == 304 {
            state = .body(.none)
        } else if chunked {
            state = .body(.chunked)
        } else if let contentLength {
            state = .body(.length(contentLength))
        } else {
            keepAlive = false
            state = .body(.untilClose)
        }
        return false
    }

    /// The line starting at `start` in `bytes`, without its CRLF (or bare LF), and the index after it.
    private static func line(in bytes: [UInt8], from start: Int) -> (line: Range<Int>, next: Int)? {
        var i = start
        while i < bytes.count {
            if bytes[i] == 10 {
                let end = (i > start && bytes[i - 1] == 13) ? i - 1 : i
                return (start..<end, i + 1)
            }
            i += 1
        }
        return nil
    }

    private enum FramingHeader { case contentLength, transferEncoding, connection }

    /// The headers that decide framing and reuse, matched case-insensitively on bytes.
    private static func framingHeader(_ name: ArraySlice<UInt8>) -> FramingHeader? {
        func equals(_ literal: StaticString) -> Bool {
            ASCII.equalsIgnoringCase(name, lowercase: literal)
        }
        switch name.count {
        case 14: return equals("content-length") ? .contentLength : nil
        case 17: return equals("transfer-encoding") ? .transferEncoding : nil
        case 10: return equals("connection") ? .connection : nil
        default: return nil
        }
    }

    private static func isTokenChar(_ c: UInt8) -> Bool { ASCII.isTokenChar(c) }
}

extension StringProtocol {
    /// Trims spaces and horizontal tabs (HTTP optional whitespace).
    var trimmingSpaces: String {
        let s = self.drop { $0 == " " || $0 == "\t" }
        var end = s.endIndex
        while end > s.startIndex {
            let before = s.index(before: end)
            if s[before] == " " || s[before] == "\t" { end = before } else { break }
        }
        return String(s[s.startIndex..<end])
    }
    func trimmingCharacters() -> String { trimmingSpaces }
}

/// Comma-separated token lists in field values (RFC 9110 §5.6.1), matched case-insensitively
/// on bytes, without making strings.
enum HTTPTokens {
    /// Whether the list holds `token` (lower-case ASCII).
    static func list<Bytes: Collection>(_ value: Bytes, contains token: StaticString) -> Bool where Bytes.Element == UInt8 {
        var found = false
        forEach(value) { if equals($0, token) { found = true } }
        return found
    }

    /// Whether the list's last element is `token` (lower-case ASCII).
    static func last<Bytes: Collection>(_ value: Bytes, is token: StaticString) -> Bool where Bytes.Element == UInt8 {
        var last: Bytes.SubSequence?
        forEach(value) { last = $0 }
        return last.map { equals($0, token) } ?? false
    }

    private static func forEach<Bytes: Collection>(_ value: Bytes, _ body: (Bytes.SubSequence) -> Void) where Bytes.Element == UInt8 {
        var start = value.startIndex
        while true {
            let end = value[start...].firstIndex(of: UInt8(ascii: ",")) ?? value.endIndex
            var lo = start, hi = end
            while lo < hi, value[lo] == 0x20 || value[lo] == 0x09 { lo = value.index(after: lo) }
            while hi > lo {
                let before = value.index(hi, offsetBy: -1)
                guard value[before] == 0x20 || value[before] == 0x09 else { break }
                hi = before
            }
            if lo < hi { body(value[lo..<hi]) }
            guard end < value.endIndex else { return }
            start = value.index(after: end)
        }
    }

    private static func equals<Bytes: Collection>(_ bytes: Bytes, _ token: StaticString) -> Bool where Bytes.Element == UInt8 {
        ASCII.equalsIgnoringCase(bytes, lowercase: token)
    }
}
