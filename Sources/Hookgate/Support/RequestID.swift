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
        // 48 bits of time, version 7, 12 random bits, the variant, 62 random bits.
        let high = ms << 16 | 0x7000 | (a & 0x0fff)
        let low = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000
        return UUIDText.format(high: high, low: low)
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

    package static func format(_ bytes: [UInt8]) -> String {
        precondition(bytes.count == 16)
        var high: UInt64 = 0, low: UInt64 = 0
        for i in 0..<8 {
            high = high << 8 | UInt64(bytes[i])
            low = low << 8 | UInt64(bytes[8 + i])
        }
        return format(high: high, low: low)
    }

    /// The 128 bits as text, written straight into the string's storage (one allocation).
    package static func format(high: UInt64, low: UInt64) -> String {
        String(unsafeUninitializedCapacity: 36) { out in
            var o = 0
            for nibble in 0..<32 {
                if nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20 {
                    out[o] = UInt8(ascii: "-")
                    o += 1
                }
                let word = nibble < 16 ? high : low
                let shift = UInt64(60 - 4 * (nibble % 16))
                out[o] = hex[Int((word >> shift) & 0xf)]
                o += 1
            }
            return 36
        }
    }

    /// The 128 bits of an 8-4-4-4-12 hex UUID (either case), the inverse of `format(high:low:)`,
    /// without making a String (the audit's derived tables key ids by them).
    package static func bits(_ id: String) -> (UInt64, UInt64)? {
        var id = id
        id.makeContiguousUTF8()  // a no-op for native strings
        return id.utf8.withContiguousStorageIfAvailable { bits(UnsafeRawBufferPointer($0)) } ?? nil
    }

    /// The same from raw bytes (a stored SQLite column).
    package static func bits(_ u: UnsafeRawBufferPointer) -> (UInt64, UInt64)? {
        guard u.count == 36 else { return nil }
        var high: UInt64 = 0, low: UInt64 = 0, n = 0
        for i in 0..<36 {
            let c = u[i]
            if i == 8 || i == 13 || i == 18 || i == 23 {
                guard c == UInt8(ascii: "-") else { return nil }
                continue
            }
            let nibble: UInt8
            switch c {
            case 0x30...0x39: nibble = c - 0x30
            case 0x61...0x66: nibble = c - 0x61 + 10
            case 0x41...0x46: nibble = c - 0x41 + 10
            default: return nil
            }
            if n < 16 { high = high << 4 | UInt64(nibble) } else { low = low << 4 | UInt64(nibble) }
            n += 1
        }
        return (high, low)
    }

    /// The canonical (lower-case) form of `text` if it is an 8-4-4-4-12 hex UUID, else nil.
    public static func canonical<S: StringProtocol>(_ text: S) -> String? {
        canonical(bytes: Array(text.utf8))
    }

    static func canonical<Bytes: Collection>(bytes utf8: Bytes) -> String? where Bytes.Element == UInt8 {
        guard utf8.count == 36 else { return nil }
        if let done = utf8.withContiguousStorageIfAvailable({ canonical($0) }) { return done }
        return Array(utf8).withUnsafeBufferPointer { canonical($0) }
    }

    /// Part of a buffer (the route's pieces): no copy.
    static func canonical(bytes slice: Slice<UnsafeBufferPointer<UInt8>>) -> String? {
        canonical(UnsafeBufferPointer(rebasing: slice))
    }

    /// 36 bytes checked and lower-cased straight into the string's storage (one allocation).
    private static func canonical(_ input: UnsafeBufferPointer<UInt8>) -> String? {
        guard input.count == 36 else { return nil }
        var valid = true
        let text = String(unsafeUninitializedCapacity: 36) { out in
            for i in 0..<36 {
                let c = input[i]
                if i == 8 || i == 13 || i == 18 || i == 23 {
                    guard c == UInt8(ascii: "-") else { valid = false; return 0 }
                    out[i] = c
                } else if (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) {
                    out[i] = c
                } else if c >= 0x41 && c <= 0x46 {
                    out[i] = c + 32
                } else {
                    valid = false
                    return 0
                }
            }
            return 36
        }
        return valid ? text : nil
    }
}
