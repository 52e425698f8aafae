enum ASCII {
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
