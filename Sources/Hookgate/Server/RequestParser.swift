/// HTTP/1.1 requests (RFC 9112) as the gateway's listeners read them: a pure, incremental,
/// bounded parser, no I/O, unit-tested and fuzzed on its own.
///
/// Strict where leniency lets two parsers disagree about where a request ends (request
/// smuggling): CRLF line ends only, no white space before a field's colon, no obs-fold, one
/// `Content-Length` of digits only, `Transfer-Encoding` only as exactly `chunked` (HTTP/1.1),
/// never both. Every such case is an error that closes the connection (RFC 9112 §6.3). The
/// head is bounded by `maxHeadBytes`; the body is counted, bounded by `maxBodyBytes` (the
/// limit is crossed as soon as a declared length or the bytes received say so) and, unless
/// `retainBody`, dropped as it arrives.

/// HTTP/1.0 or HTTP/1.1: the versions the listeners speak.
public enum HTTPVersion: Sendable, Equatable { case http10, http11 }

/// How a request's body is delimited.
enum BodyFraming: Sendable, Equatable {
    case none
    case length(Int)
    case chunked
}

/// A request's head: request line and header fields, kept as the received bytes plus ranges,
/// so that the fields nobody asks for never become strings.
public struct RequestHead: Sendable {
    private let bytes: [UInt8]
    private let fields: [Field]
    /// The method token as received (case-sensitive, RFC 9110 §9.1).
    public let method: String
    /// The request-target as received.
    public let rawTarget: String
    /// The target in origin-form: an absolute-form target (`http://host/path?q`) without its
    /// scheme and authority (RFC 9112 §3.2.2); other forms as received.
    public let target: String
    public let version: HTTPVersion
    /// False for a head cut short by an error (its fields are those read before it).
    public let complete: Bool
    /// The connection may carry another request after this one's answer.
    public internal(set) var keepAlive: Bool
    /// `Expect: 100-continue` (HTTP/1.1 only).
    public internal(set) var expectsContinue: Bool
    var framing: BodyFraming
    /// Bytes of the head, request line to the empty line included.
    public let size: Int

    struct Field: Sendable {
        var name: Range<Int>
        var value: Range<Int>
    }

    init(bytes: [UInt8], fields: [Field], method: String, rawTarget: String, target: String, version: HTTPVersion,
         complete: Bool, keepAlive: Bool, expectsContinue: Bool, framing: BodyFraming, size: Int) {
        self.bytes = bytes
        self.fields = fields
        self.method = method
        self.rawTarget = rawTarget
        self.target = target
        self.version = version
        self.complete = complete
        self.keepAlive = keepAlive
        self.expectsContinue = expectsContinue
        self.framing = framing
        self.size = size
    }

    /// Values of the fields named `name` (ASCII case-insensitive), in order.
    public func values(_ name: String) -> [String] {
        var out: [String] = []
        for f in fields where nameEquals(f.name, name) {
            out.append(String(decoding: bytes[f.value], as: UTF8.self))
        }
        return out
    }

    /// The first value of `name`, if any.
    public func first(_ name: String) -> String? {
        for f in fields where nameEquals(f.name, name) {
            return String(decoding: bytes[f.value], as: UTF8.self)
        }
        return nil
    }

    /// Every field, names as received, in order.
    public var headers: [(name: String, value: String)] {
        fields.map { (String(decoding: bytes[$0.name], as: UTF8.self), String(decoding: bytes[$0.value], as: UTF8.self)) }
    }

    private func nameEquals(_ range: Range<Int>, _ name: String) -> Bool {
        let utf8 = name.utf8
        guard range.count == utf8.count else { return false }
        var i = range.lowerBound
        for c in utf8 {
            let b = bytes[i]
            if b != c && !(b | 0x20 == c | 0x20 && (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7A) { return false }
            i += 1
        }
        return true
    }
}

/// Why a request could not be read. Every kind ends the connection after its answer.
public struct RequestError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Not HTTP/1.x syntax (400).
        case malformed
        /// Conflicting or invalid message framing (400, RFC 9112 §6.3).
        case badFraming
        /// A well-formed version other than 1.0 and 1.1 (505).
        case unsupportedVersion
        /// Request line and fields over the head limit (431).
        case headTooLarge
        /// Body over the body limit (413).
        case bodyTooLarge
        /// The request did not arrive whole in time (408).
        case timedOut
    }

    public var kind: Kind
    public var detail: String
    /// What could be read of the head before the error (method and target may be empty).
    public var head: RequestHead

    public var status: Int {
        switch kind {
        case .malformed, .badFraming: return 400
        case .unsupportedVersion: return 505
        case .headTooLarge: return 431
        case .bodyTooLarge: return 413
        case .timedOut: return 408
        }
    }

    public var description: String { detail }
}

/// A whole request: head and the length of its body (and the body when retained).
public struct ParsedRequest: Sendable {
    public var head: RequestHead
    public var bodyLength: Int
    /// Empty unless the parser retains bodies.
    public var body: [UInt8]
}

public struct RequestParser: Sendable {
    public struct Limits: Sendable, Equatable {
        public var maxHeadBytes: Int
        public var maxBodyBytes: Int
        /// Keep the body (the simulator's token endpoint reads form fields); the gateway drops it.
        public var retainBody: Bool
        public init(maxHeadBytes: Int = 8192, maxBodyBytes: Int = 16384, retainBody: Bool = false) {
            self.maxHeadBytes = maxHeadBytes
            self.maxBodyBytes = maxBodyBytes
            self.retainBody = retainBody
        }
    }

    public enum Progress: Sendable {
        /// Nothing complete yet: feed more bytes.
        case needMore
        /// The head is complete and a body follows that the client may wait to send
        /// (`Expect: 100-continue`); reported once, then parsing goes on.
        case awaitingBody(RequestHead)
        case complete(ParsedRequest)
        case failed(RequestError)
    }

    private enum State: Sendable {
        case head
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkEnd
        case trailers
        case done
        case failed
    }

    public var limits: Limits
    private var buffer: [UInt8] = []
    /// Start of the unconsumed bytes in `buffer`.
    private var start = 0
    /// Where the search for the head's end resumes.
    private var scanned = 0
    private var state: State = .head
    private var head: RequestHead?
    private var bodyLength = 0
    private var body: [UInt8] = []
    private var announcedBody = false

    public init(limits: Limits) {
        self.limits = limits
        buffer.reserveCapacity(1024)
    }

    /// True once a byte of the current request has arrived (leading empty lines aside).
    public var started: Bool {
        if case .head = state {
            var i = start
            while i + 1 < buffer.count, buffer[i] == 13, buffer[i + 1] == 10 { i += 2 }
            return i < buffer.count
        }
        return true
    }

    /// Bytes received and not yet parsed (pipelined requests wait here).
    public var buffered: Int { buffer.count - start }

    public mutating func append<Bytes: Collection>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        if case .failed = state { return }
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            scanned = 0
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// Starts on the next request after a complete one (keeps what is buffered).
    public mutating func next() {
        guard case .done = state else { return }
        if start > 0 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
        scanned = 0
        state = .head
        head = nil
        bodyLength = 0
        body = []
        announcedBody = false
    }

    /// What was read of the current request's head (for an error raised outside the parser,
    /// such as a deadline): complete fields only, never an error.
    public func partialHead() -> RequestHead {
        if let head { return head }
        let end = min(buffer.count, start + limits.maxHeadBytes)
        return Self.lenientHead(Array(buffer[start..<end]))
    }

    public mutating func parse() -> Progress {
        while true {
            switch state {
            case .failed:
                return .needMore
            case .done:
                return .needMore
            case .head:
                // RFC 9112 §2.2: empty lines before the request line are ignored.
                while buffer.count - start >= 2, buffer[start] == 13, buffer[start + 1] == 10 {
                    start += 2
                    scanned = max(scanned, start)
                }
                guard let end = findHeadEnd() else {
                    if buffer.count - start > limits.maxHeadBytes { return fail(.headTooLarge, headLimitDetail) }
                    return .needMore
                }
                if end - start > limits.maxHeadBytes { return fail(.headTooLarge, headLimitDetail) }
                let headBytes = Array(buffer[start..<end])
                start = end
                switch Self.parseHead(headBytes) {
                case .failure(let error):
                    state = .failed
                    return .failed(error)
                case .success(let parsed):
                    head = parsed
                    switch parsed.framing {
                    case .none:
                        state = .done
                        return .complete(ParsedRequest(head: parsed, bodyLength: 0, body: []))
                    case .length(let n):
                        if n > limits.maxBodyBytes {
                            return fail(.bodyTooLarge, "request body of \(n) bytes exceeds \(limits.maxBodyBytes) bytes")
                        }
                        state = .body(remaining: n)
                    case .chunked:
                        state = .chunkSize
                    }
                    if parsed.expectsContinue && !announcedBody && buffer.count == start {
                        announcedBody = true
                        return .awaitingBody(parsed)
                    }
                }
            case .body(let remaining):
                let n = min(remaining, buffer.count - start)
                takeBody(n)
                if remaining - n > 0 {
                    state = .body(remaining: remaining - n)
                    return .needMore
                }
                return finishBody()
            case .chunkSize:
                guard let (line, next) = line(maxLength: 4096) else {
                    if buffer.count - start > 4096 { return fail(.badFraming, "chunk size line too long") }
                    return .needMore
                }
                guard let size = Self.chunkSize(line) else { return fail(.badFraming, "invalid chunk size") }
                start = next
                if size > limits.maxBodyBytes - bodyLength {
                    return fail(.bodyTooLarge, "request body exceeds \(limits.maxBodyBytes) bytes")
                }
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                let n = min(remaining, buffer.count - start)
                takeBody(n)
                if remaining - n > 0 {
                    state = .chunkData(remaining: remaining - n)
                    return .needMore
                }
                state = .chunkEnd
            case .chunkEnd:
                guard buffer.count - start >= 2 else { return .needMore }
                guard buffer[start] == 13, buffer[start + 1] == 10 else {
                    return fail(.badFraming, "chunk data not followed by CRLF")
                }
                start += 2
                state = .chunkSize
            case .trailers:
                // Trailer fields are read (bounded like a head) and ignored.
                guard let (line, next) = line(maxLength: limits.maxHeadBytes) else {
                    if buffer.count - start > limits.maxHeadBytes { return fail(.headTooLarge, "trailer section too large") }
                    return .needMore
                }
                start = next
                if line.isEmpty { return finishBody() }
                guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex,
                      line[line.startIndex..<colon].allSatisfy(Self.isTokenChar)
                else { return fail(.badFraming, "invalid trailer field") }
            }
        }
    }

    private var headLimitDetail: String { "request line and headers exceed \(limits.maxHeadBytes) bytes" }

    private mutating func takeBody(_ n: Int) {
        guard n > 0 else { return }
        if limits.retainBody { body.append(contentsOf: buffer[start..<(start + n)]) }
        bodyLength += n
        start += n
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
            scanned = 0
        }
    }

    private mutating func finishBody() -> Progress {
        state = .done
        guard let head else { return fail(.malformed, "no head") }
        return .complete(ParsedRequest(head: head, bodyLength: bodyLength, body: body))
    }

    private mutating func fail(_ kind: RequestError.Kind, _ detail: String) -> Progress {
        let partial = partialHead()
        state = .failed
        return .failed(RequestError(kind: kind, detail: detail, head: partial))
    }

    /// The next CRLF-terminated line from `start`, and the index after it.
    private func line(maxLength: Int) -> (ArraySlice<UInt8>, Int)? {
        var i = start
        let end = min(buffer.count, start + maxLength + 2)
        while i + 1 < end {
            if buffer[i] == 13 && buffer[i + 1] == 10 { return (buffer[start..<i], i + 2) }
            i += 1
        }
        return nil
    }

    /// Index just past the head's CRLFCRLF, resuming the search where the last one stopped.
    private mutating func findHeadEnd() -> Int? {
        var i = max(scanned, start)
        let n = buffer.count
        while i + 3 < n {
            if buffer[i + 3] != 10 {
                // No window starting at i+1...i+3 can match unless byte i+3 is a CR.
                i += buffer[i + 3] == 13 ? 1 : 4
                continue
            }
            if buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 { return i + 4 }
            i += 1
        }
        scanned = max(start, n - 3)
        return nil
    }

    static func chunkSize(_ line: ArraySlice<UInt8>) -> Int? {
        // chunk-size [ chunk-ext ]: 1*HEXDIG, then optional ";ext" (BWS allowed before ';').
        var size = 0
        var digits = 0
        var i = line.startIndex
        while i < line.endIndex, let v = hexValue(line[i]) {
            guard digits < 15 else { return nil }
            size = size * 16 + v
            digits += 1
            i += 1
        }
        guard digits > 0 else { return nil }
        while i < line.endIndex, line[i] == 0x20 || line[i] == 0x09 { i += 1 }
        if i == line.endIndex { return size }
        guard line[i] == UInt8(ascii: ";") else { return nil }
        // Extensions are ignored, but must not hide control bytes.
        guard line[i...].allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else { return nil }
        return size
    }

    private static func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case 0x30...0x39: return Int(c - 0x30)
        case 0x41...0x46: return Int(c - 0x41 + 10)
        case 0x61...0x66: return Int(c - 0x61 + 10)
        default: return nil
        }
    }

    // MARK: - The head

    /// Parses a complete head (`bytes` ends with CRLFCRLF).
    static func parseHead(_ bytes: [UInt8]) -> Result<RequestHead, RequestError> {
        let size = bytes.count
        var lineEnd = 0
        while lineEnd + 1 < bytes.count, !(bytes[lineEnd] == 13 && bytes[lineEnd + 1] == 10) { lineEnd += 1 }
        func failure(_ kind: RequestError.Kind, _ detail: String) -> Result<RequestHead, RequestError> {
            .failure(RequestError(kind: kind, detail: detail, head: lenientHead(bytes)))
        }
        // request-line = method SP request-target SP HTTP-version
        let line = bytes[0..<lineEnd]
        if line.contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
            return failure(.malformed, "invalid byte in the request line")
        }
        guard let sp1 = line.firstIndex(of: 0x20), sp1 > 0 else {
            return failure(.malformed, "malformed request line")
        }
        let methodBytes = line[0..<sp1]
        guard methodBytes.allSatisfy(isTokenChar) else { return failure(.malformed, "invalid method") }
        let rest = line[(sp1 + 1)...]
        guard let sp2 = rest.firstIndex(of: 0x20), sp2 > rest.startIndex else {
            return failure(.malformed, "malformed request line")
        }
        let targetBytes = line[(sp1 + 1)..<sp2]
        let versionBytes = line[(sp2 + 1)...]
        guard targetBytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return failure(.malformed, "invalid request-target")
        }
        let version: HTTPVersion
        switch parseVersion(versionBytes) {
        case .some(.some(let v)): version = v
        case .some(.none): return failure(.unsupportedVersion, "HTTP version \(String(decoding: versionBytes, as: UTF8.self)) is not supported; use HTTP/1.1")
        case .none: return failure(.malformed, "malformed HTTP version")
        }
        let method = String(decoding: methodBytes, as: UTF8.self)
        let rawTarget = String(decoding: targetBytes, as: UTF8.self)
        guard let target = originForm(targetBytes) else { return failure(.malformed, "invalid absolute-form request-target") }

        var fields: [RequestHead.Field] = []
        fields.reserveCapacity(8)
        var contentLength: Int?
        var transferCodings: [String] = []
        var keepAlive = version == .http11
        var expectsContinue = false
        var hosts = 0
        var pos = lineEnd + 2
        while pos < size {
            var end = pos
            while end + 1 < size, !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
            if end == pos { break }  // the empty line
            let first = bytes[pos]
            if first == 0x20 || first == 0x09 { return failure(.malformed, "obsolete line folding in a header field") }
            guard let colon = bytes[pos..<end].firstIndex(of: UInt8(ascii: ":")), colon > pos else {
                return failure(.malformed, "malformed header field")
            }
            guard bytes[pos..<colon].allSatisfy(isTokenChar) else {
                return failure(.malformed, "invalid header field name (white space before ':' is not allowed)")
            }
            var vs = colon + 1, ve = end
            while vs < ve, bytes[vs] == 0x20 || bytes[vs] == 0x09 { vs += 1 }
            while ve > vs, bytes[ve - 1] == 0x20 || bytes[ve - 1] == 0x09 { ve -= 1 }
            guard bytes[vs..<ve].allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                return failure(.malformed, "invalid byte in a header field value")
            }
            fields.append(RequestHead.Field(name: pos..<colon, value: vs..<ve))
            let value = bytes[vs..<ve]
            switch framingField(bytes[pos..<colon]) {
            case .contentLength:
                guard contentLength == nil else { return failure(.badFraming, "more than one Content-Length") }
                guard !value.isEmpty, value.count <= 15, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                    return failure(.badFraming, "invalid Content-Length")
                }
                contentLength = value.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            case .transferEncoding:
                for coding in value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                    transferCodings.append(String(decoding: coding, as: UTF8.self).trimmingSpaces.lowercased())
                }
            case .connection:
                if HTTPTokens.list(value, contains: "close") { keepAlive = false }
                if version == .http10 && HTTPTokens.list(value, contains: "keep-alive") { keepAlive = true }
            case .expect:
                if version == .http11, ASCII.equalsIgnoringCase(String(decoding: value, as: UTF8.self), "100-continue") {
                    expectsContinue = true
                }
            case .host:
                hosts += 1
                if hosts > 1 { return failure(.malformed, "more than one Host header") }
            case nil:
                break
            }
            pos = end + 2
        }
        var framing = BodyFraming.none
        if !transferCodings.isEmpty {
            guard version == .http11 else { return failure(.badFraming, "Transfer-Encoding in an HTTP/1.0 request") }
            guard contentLength == nil else { return failure(.badFraming, "both Content-Length and Transfer-Encoding") }
            guard transferCodings == ["chunked"] else {
                return failure(.badFraming, "unsupported Transfer-Encoding (only chunked is accepted)")
            }
            framing = .chunked
        } else if let contentLength, contentLength > 0 {
            framing = .length(contentLength)
        }
        if framing == .none { expectsContinue = false }
        return .success(RequestHead(bytes: bytes, fields: fields, method: method, rawTarget: rawTarget, target: target,
                                    version: version, complete: true, keepAlive: keepAlive,
                                    expectsContinue: expectsContinue, framing: framing, size: size))
    }

    /// `HTTP/1.1` or `HTTP/1.0`: `.some(v)`; another `HTTP/d.d`: `.some(nil)`; anything else: nil.
    private static func parseVersion(_ v: ArraySlice<UInt8>) -> HTTPVersion?? {
        guard v.count == 8, v.starts(with: "HTTP/".utf8) else { return nil }
        let major = v[v.startIndex + 5], dot = v[v.startIndex + 6], minor = v[v.startIndex + 7]
        guard (0x30...0x39).contains(major), dot == UInt8(ascii: "."), (0x30...0x39).contains(minor) else { return nil }
        if major == UInt8(ascii: "1") && minor == UInt8(ascii: "1") { return .some(.http11) }
        if major == UInt8(ascii: "1") && minor == UInt8(ascii: "0") { return .some(.http10) }
        return .some(nil)
    }

    /// An absolute-form target without scheme and authority; other forms unchanged. Nil for
    /// an absolute-form target that is not http(s)://authority[path].
    static func originForm(_ target: ArraySlice<UInt8>) -> String? {
        guard let first = target.first, first != UInt8(ascii: "/"), first != UInt8(ascii: "*") else {
            return String(decoding: target, as: UTF8.self)
        }
        let lower = target.prefix(8).map { $0 | 0x20 }
        let schemeLength: Int
        if lower.starts(with: "http://".utf8) {
            schemeLength = 7
        } else if lower.starts(with: "https://".utf8) {
            schemeLength = 8
        } else {
            // authority-form (CONNECT) or something else: routed as received (no route matches).
            return target.contains(UInt8(ascii: "/")) ? nil : String(decoding: target, as: UTF8.self)
        }
        let afterScheme = target.index(target.startIndex, offsetBy: schemeLength)
        let authorityEnd = target[afterScheme...].firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }
            ?? target.endIndex
        guard authorityEnd > afterScheme else { return nil }
        let rest = target[authorityEnd...]
        if rest.first == UInt8(ascii: "?") { return "/" + String(decoding: rest, as: UTF8.self) }
        return rest.isEmpty ? "/" : String(decoding: rest, as: UTF8.self)
    }

    /// Best effort for the record of a request that failed: the request line's first two
    /// words (capped), and every complete, well-formed field line.
    static func lenientHead(_ bytes: [UInt8]) -> RequestHead {
        var lineEnd = 0
        while lineEnd + 1 < bytes.count, !(bytes[lineEnd] == 13 && bytes[lineEnd + 1] == 10) { lineEnd += 1 }
        let hasLine = lineEnd + 1 < bytes.count
        let line = bytes[0..<(hasLine ? lineEnd : min(bytes.count, 2048))]
        let words = line.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: false)
        let method = words.first.map { String(decoding: $0.prefix(32).filter(isTokenChar), as: UTF8.self) } ?? ""
        let targetBytes = words.count > 1 ? words[1].prefix(2048).filter { $0 > 0x20 && $0 < 0x7F } : []
        let rawTarget = String(decoding: targetBytes, as: UTF8.self)
        let target = originForm(targetBytes[...]) ?? rawTarget
        var version = HTTPVersion.http11
        if words.count > 2, words[2].elementsEqual("HTTP/1.0".utf8) { version = .http10 }
        var fields: [RequestHead.Field] = []
        var pos = hasLine ? lineEnd + 2 : bytes.count
        while pos < bytes.count {
            var end = pos
            while end + 1 < bytes.count, !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
            guard end + 1 < bytes.count, end > pos else { break }
            if let colon = bytes[pos..<end].firstIndex(of: UInt8(ascii: ":")), colon > pos,
               bytes[pos..<colon].allSatisfy(isTokenChar) {
                var vs = colon + 1, ve = end
                while vs < ve, bytes[vs] == 0x20 || bytes[vs] == 0x09 { vs += 1 }
                while ve > vs, bytes[ve - 1] == 0x20 || bytes[ve - 1] == 0x09 { ve -= 1 }
                fields.append(RequestHead.Field(name: pos..<colon, value: vs..<ve))
            }
            pos = end + 2
        }
        return RequestHead(bytes: bytes, fields: fields, method: method, rawTarget: rawTarget, target: target,
                           version: version, complete: false, keepAlive: false, expectsContinue: false,
                           framing: .none, size: bytes.count)
    }

    private enum FramingField { case contentLength, transferEncoding, connection, expect, host }

    private static func framingField(_ name: ArraySlice<UInt8>) -> FramingField? {
        func equals(_ literal: StaticString) -> Bool { ASCII.equalsIgnoringCase(name, lowercase: literal) }
        switch name.count {
        case 4: return equals("host") ? .host : nil
        case 6: return equals("expect") ? .expect : nil
        case 10: return equals("connection") ? .connection : nil
        case 14: return equals("content-length") ? .contentLength : nil
        case 17: return equals("transfer-encoding") ? .transferEncoding : nil
        default: return nil
        }
    }

    /// RFC 9110 tchar.
    static func isTokenChar(_ c: UInt8) -> Bool { ASCII.isTokenChar(c) }

}
