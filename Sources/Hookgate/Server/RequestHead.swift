// Threads: any (pure values); runs on the loop for every request.

// What the request parser produces: a request's head (received bytes plus ranges), the error
// for an unreadable request, and a whole request.

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
