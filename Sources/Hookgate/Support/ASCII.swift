enum ASCII {
    /// Whether `bytes` spell `lowercase` (a lower-case ASCII literal) in any case.
    static func equalsLowercase(_ bytes: Slice<UnsafeBufferPointer<UInt8>>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let lit = lowercase.utf8Start
        var i = 0
        for b in bytes {
            let l = lit[i]
            if b != l && !(b | 0x20 == l && l >= 0x61 && l <= 0x7A) { return false }
            i += 1
        }
        return true
    }

    /// Case-insensitive equality of ASCII header names, on bytes (no Foundation, no Unicode).
    static func equalsIgnoringCase(_ a: String, _ b: String) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        var a = a, b = b
        return a.withUTF8 { x in
            b.withUTF8 { y in
                for i in 0..<x.count {
                    let p = x[i], q = y[i]
                    if p != q && !(p | 0x20 == q | 0x20 && (p | 0x20) >= 0x61 && (p | 0x20) <= 0x7A) { return false }
                }
                return true
            }
        }
    }
}

extension Array where Element == UInt8 {
    /// Appends the UTF-8 bytes of `s` with one copy (a native string's bytes are contiguous;
    /// appending `s.utf8` as a generic sequence goes byte by byte).
    mutating func appendUTF8(_ s: String) {
        let done: Void? = s.utf8.withContiguousStorageIfAvailable { append(contentsOf: $0) }
        if done == nil { append(contentsOf: s.utf8) }
    }
}
