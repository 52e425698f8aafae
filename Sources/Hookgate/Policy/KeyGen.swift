// Threads: any (the `keygen` command).

/// `hookgate keygen`: a new random team key and the hash that goes into the config.
public enum KeyGen {
    /// 32 random bytes (OpenSSL's DRBG), base64url without padding: 43 characters, a valid
    /// token68. `sha256` is the lower-case hex SHA-256 to list under the team's `key_sha256`.
    public static func make() -> (key: String, sha256: String) {
        let key = base64URL(SecureRandom.bytes(32))
        return (key, KeyDigest.sha256(key))
    }

    /// RFC 4648 section 5 encoding, no padding.
    static func base64URL(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i])
            let b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            let b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let n = b0 << 16 | b1 << 8 | b2
            let chars = min(4, (bytes.count - i) + 1)
            for k in 0..<chars { out.append(alphabet[Int((n >> UInt32(18 - 6 * k)) & 0x3f)]) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The text `hookgate keygen` prints: the key and its hash on separate, labelled lines.
    public static func report(key: String, sha256: String) -> String {
        "key:        \(key)\nkey_sha256: \(sha256)\n"
    }
}
