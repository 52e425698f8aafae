// Threads: any (pure byte helpers).

enum ASCII {
    /// Whether `bytes` are exactly `literal` (case-sensitive).
    static func equals<C: Collection>(_ bytes: C, _ literal: StaticString) -> Bool where C.Element == UInt8 {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        let lit = literal.utf8Start
        var i = 0
        for b in bytes {
            if b != lit[i] { return false }
            i += 1
        }
        return true
    }

    /// Whether `bytes` spell `lowercase` (a lower-case ASCII literal) in any case.
    static func equalsIgnoringCase<C: Collection>(_ bytes: C, lowercase: StaticString) -> Bool where C.Element == UInt8 {
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

    /// RFC 9110 tchar, by table.
    @inline(__always)
    static func isTokenChar(_ c: UInt8) -> Bool {
        tokenTable.withUnsafeBufferPointer { $0[Int(c)] }
    }

    private static let tokenTable: [Bool] = (0..<256).map { c in
        switch UInt8(c) {
        case 0x61...0x7A, 0x41...0x5A, 0x30...0x39: return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(UInt8(c))
        }
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
