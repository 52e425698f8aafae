import Foundation

/// Gateway request ids: time-ordered version 7 UUIDs (RFC 9562), lower case 8-4-4-4-12.
/// The first 48 bits are the Unix time in milliseconds and the other 74 are random: ids sort
/// by time, and the audit log's request-id indexes grow at their end instead of being written
/// all over (a random v4 id dirties a random index page per record).
public enum RequestID {
    public static func make() -> String {
        var g = SystemRandomNumberGenerator()
        return make(random: g.next(), g.next())
    }

    /// The id for the current time with 74 of these 128 random bits.
    static func make(random a: UInt64, _ b: UInt64) -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let ms = UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: ms >> (8 * (5 - UInt64(i)))) }
        var a = a, b = b
        for i in 6..<8 { bytes[i] = UInt8(truncatingIfNeeded: a); a >>= 8 }
        for i in 8..<16 { bytes[i] = UInt8(truncatingIfNeeded: b); b >>= 8 }
        bytes[6] = (bytes[6] & 0x0f) | 0x70  // version 7
        bytes[8] = (bytes[8] & 0x3f) | 0x80  // RFC 9562 variant
        return UUIDText.format(bytes)
    }
}

/// Request ids for one thread (the gateway's loop): the random bits are drawn from OpenSSL's
/// DRBG 4 KiB at a time, instead of two getrandom(2) calls per id.
final class RequestIDSource {
    private var pool: [UInt8] = []
    private var next = 0

    func make() -> String {
        if next + 16 > pool.count {
            pool = SecureRandom.bytes(4096)
            next = 0
        }
        var a: UInt64 = 0, b: UInt64 = 0
        for i in 0..<8 {
            a = a << 8 | UInt64(pool[next + i])
            b = b << 8 | UInt64(pool[next + 8 + i])
        }
        next += 16
        return RequestID.make(random: a, b)
    }
}

/// Parsing and formatting of 8-4-4-4-12 hex UUIDs, either case in, lower case out.
public enum UUIDText {
    private static let hex = Array("0123456789abcdef".utf8)

    static func format(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(36)
        for (i, b) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The canonical (lower-case) form of `text` if it is an 8-4-4-4-12 hex UUID, else nil.
    public static func canonical<S: StringProtocol>(_ text: S) -> String? {
        canonical(bytes: Array(text.utf8))
    }

    static func canonical<Bytes: Collection>(bytes utf8: Bytes) -> String? where Bytes.Element == UInt8 {
        guard utf8.count == 36 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(36)
        for (i, c) in utf8.enumerated() {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                guard c == UInt8(ascii: "-") else { return nil }
                out.append(c)
                continue
            }
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"): out.append(c)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): out.append(c + 32)
            default: return nil
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
