import COpenSSL

/// SHA-256 through OpenSSL's one-shot EVP_Digest (no object to own or free).
public enum SHA256 {
    /// Fetched once: OpenSSL 3 looks the algorithm up on every call of `EVP_sha256()`-based
    /// digests otherwise (an implicit fetch), which costs more than hashing a short key.
    /// Never freed: it lives as long as the process. Immutable after creation.
    private nonisolated(unsafe) static let algorithm: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)
    static var md: OpaquePointer? { algorithm ?? EVP_sha256() }

    public static func digest<Bytes: Sequence>(_ bytes: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        let input = Array(bytes)
        var out = [UInt8](repeating: 0, count: 32)
        var outLength: UInt32 = 0
        let ok = input.withUnsafeBytes { inBuf in
            out.withUnsafeMutableBufferPointer { outBuf in
                EVP_Digest(inBuf.baseAddress, inBuf.count, outBuf.baseAddress, &outLength, algorithm ?? EVP_sha256(), nil)
            }
        }
        precondition(ok == 1 && outLength == 32, "EVP_Digest(SHA-256) failed")
        return out
    }

    /// Lower-case hex SHA-256 of the UTF-8 bytes of `text` (on the stack but for the result).
    public static func hex(_ text: String) -> String {
        var text = text
        return text.withUTF8 { input in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { out in
                var outLength: UInt32 = 0
                let ok = EVP_Digest(input.baseAddress, input.count, out.baseAddress, &outLength, md, nil)
                precondition(ok == 1 && outLength == 32, "EVP_Digest(SHA-256) failed")
                return Hex.encode(UnsafeBufferPointer(out))
            }
        }
    }
    public static func hex<Bytes: Sequence>(bytes: Bytes) -> String where Bytes.Element == UInt8 { Hex.encode(digest(bytes)) }
}

/// A reusable SHA-256 context for one thread's repeated hashing (the audit writer): saves the
/// allocation and set-up of a context per hash. Owns its `EVP_MD_CTX`, freed in `deinit`.
package final class SHA256Context {
    private let ctx: OpaquePointer

    package init() {
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed") }
        self.ctx = ctx
    }

    deinit { EVP_MD_CTX_free(ctx) }

    /// The digest of `bytes` as 64 lowercase hex digits written into `out` (resized to 64).
    func hex(_ bytes: [UInt8], into out: inout [UInt8]) {
        if out.count != 64 { out = [UInt8](repeating: 0, count: 64) }
        bytes.withUnsafeBytes { input in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { digest in
                var length: UInt32 = 0
                let ok = EVP_DigestInit_ex2(ctx, SHA256.md, nil) == 1
                    && EVP_DigestUpdate(ctx, input.baseAddress, input.count) == 1
                    && EVP_DigestFinal_ex(ctx, digest.baseAddress, &length) == 1
                precondition(ok && length == 32, "SHA-256 failed")
                _ = out.withUnsafeMutableBufferPointer { Hex.encode(UnsafeBufferPointer(digest), into: $0) }
            }
        }
    }

    func hex(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { input in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { output in
                var length: UInt32 = 0
                let ok = EVP_DigestInit_ex2(ctx, SHA256.md, nil) == 1
                    && EVP_DigestUpdate(ctx, input.baseAddress, input.count) == 1
                    && EVP_DigestFinal_ex(ctx, output.baseAddress, &length) == 1
                precondition(ok && length == 32, "SHA-256 failed")
                return Hex.encode(UnsafeBufferPointer(output))
            }
        }
    }
}

public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)
    public static func encode<Bytes: Collection>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        // Written straight into the string's storage (one allocation).
        String(unsafeUninitializedCapacity: bytes.count * 2) { encode(bytes, into: $0) }
    }

    /// The bytes of `text` (hex digits of either case, two per byte); nil if it is not that.
    static func decode(_ text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x61...0x66: c - 0x61 + 10
            case 0x41...0x46: c - 0x41 + 10
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(utf8.count / 2)
        var i = 0
        while i < utf8.count {
            guard let high = nibble(utf8[i]), let low = nibble(utf8[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }

    /// Writes two lowercase hex digits per byte into `out` (room for them assumed); returns the count.
    @discardableResult
    static func encode<Bytes: Collection>(_ bytes: Bytes, into out: UnsafeMutableBufferPointer<UInt8>) -> Int
    where Bytes.Element == UInt8 {
        var o = 0
        for b in bytes {
            out[o] = digits[Int(b >> 4)]
            out[o + 1] = digits[Int(b & 0x0f)]
            o += 2
        }
        return o
    }
}

/// Cryptographically secure random bytes (OpenSSL's DRBG).
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        precondition(ok == 1, "RAND_bytes failed")
        return out
    }
}

/// Constant-time comparison of two equal-length byte strings (no early exit).
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in 0..<a.count { diff |= a[i] ^ b[i] }
    return diff == 0
}
