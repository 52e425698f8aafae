// Threads: any (pure); runs on the loop for every call.

/// What a request presented in its `Authorization` header(s).
public enum Credentials: Sendable, Equatable {
    /// No `Authorization` header: 401.
    case absent
    /// Anything but one header holding `Bearer <token68>`: 400.
    case malformed
    /// A well-formed bearer token (the team key, if it matches one).
    case bearer(String)

    /// Parses every `Authorization` field value of a request, in order.
    ///
    /// Accepted: exactly one field whose value is the scheme `Bearer` (any case, RFC 7235),
    /// one or more spaces, and one RFC 6750 token68 (`[A-Za-z0-9-._~+/]+=*`); white space
    /// around the whole value is ignored. Everything else is `.malformed`.
    public static func parse(_ values: [String]) -> Credentials {
        guard var raw = values.first else { return .absent }
        guard values.count == 1 else { return .malformed }
        return raw.withUTF8 { bytes -> Credentials in
            let value = trimmingOWS(bytes)
            guard let space = value.firstIndex(of: UInt8(ascii: " ")) else { return .malformed }
            let scheme = value[..<space]
            guard scheme.count == 6, ASCII.equalsIgnoringCase(scheme, lowercase: "bearer") else { return .malformed }
            let token = value[space...].drop(while: { $0 == UInt8(ascii: " ") })
            guard isToken68(token) else { return .malformed }
            return .bearer(String(decoding: token, as: UTF8.self))
        }
    }

    /// Without leading and trailing spaces and horizontal tabs (HTTP's OWS).
    private static func trimmingOWS(_ bytes: UnsafeBufferPointer<UInt8>) -> Slice<UnsafeBufferPointer<UInt8>> {
        let isOWS = { (c: UInt8) in c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") }
        var lower = bytes.startIndex
        var upper = bytes.endIndex
        while lower < upper, isOWS(bytes[lower]) { lower += 1 }
        while upper > lower, isOWS(bytes[upper - 1]) { upper -= 1 }
        return bytes[lower..<upper]
    }

    /// RFC 7235 token68: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
    static func isToken68<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        var seenBody = false
        var inPadding = false
        for c in bytes {
            if c == UInt8(ascii: "=") {
                guard seenBody else { return false }
                inPadding = true
                continue
            }
            guard !inPadding else { return false }
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"),
                 UInt8(ascii: "+"), UInt8(ascii: "/"):
                seenBody = true
            default:
                return false
            }
        }
        return seenBody
    }
}

/// A team key as it is stored and recorded: never the key itself.
public enum KeyDigest {
    /// Lower-case hex SHA-256 of the key's bytes: what `key_sha256` lists.
    public static func sha256(_ key: String) -> String { SHA256.hex(key) }

    /// The first 16 hex characters of the key's SHA-256: what the audit log and logs show.
    public static func fingerprint(_ key: String) -> String { fingerprint(sha256: sha256(key)) }

    static func fingerprint(sha256 hex: String) -> String { String(hex.prefix(16)) }
}
