// Threads: any (pure values); runs on the loop for every request.

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
}
