// Threads: any; a `ByteBuffer` belongs to one thread.

extension Array where Element == UInt8 {
    /// Appends the UTF-8 bytes of `s` with one copy (a native string's bytes are contiguous;
    /// appending `s.utf8` as a generic sequence goes byte by byte).
    mutating func appendUTF8(_ s: String) {
        let done: Void? = s.utf8.withContiguousStorageIfAvailable { append(contentsOf: $0) }
        if done == nil { append(contentsOf: s.utf8) }
    }
}

/// Writes bytes into a buffer whose size bound is known up front (an answer's head, a log
/// line): a `memcpy` per piece, without an `Array`'s per-append bookkeeping. Writing past the
/// bound is a programming error and traps.
struct ByteWriter {
    private let base: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    private(set) var count = 0

    fileprivate init(base: UnsafeMutablePointer<UInt8>, capacity: Int) {
        self.base = base
        self.capacity = capacity
    }

    mutating func write(_ s: String) {
        var s = s
        s.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    mutating func write(_ s: StaticString) {
        write(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        precondition(count + bytes.count <= capacity, "ByteWriter: past the bound it was given")
        (base + count).initialize(from: src.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        count += bytes.count
    }

    mutating func write(byte: UInt8) {
        precondition(count < capacity, "ByteWriter: past the bound it was given")
        base[count] = byte
        count += 1
    }

    /// A non-negative integer in decimal.
    mutating func write(decimal value: Int) {
        precondition(value >= 0)
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { buf in
            var v = value, i = buf.count
            repeat {
                i -= 1
                buf[i] = UInt8(48 + v % 10)
                v /= 10
            } while v > 0
            write(UnsafeRawBufferPointer(rebasing: buf[i...]))
        }
    }
}

extension Array where Element == UInt8 {
    /// An array of at most `capacity` bytes written by `body`.
    init(writingAtMost capacity: Int, _ body: (inout ByteWriter) -> Void) {
        self.init(unsafeUninitializedCapacity: capacity) { buffer, initialized in
            var writer = ByteWriter(base: buffer.baseAddress!, capacity: capacity)
            body(&writer)
            initialized = writer.count
        }
    }
}

/// A growable byte buffer meant to be reused (one per loop for its log lines): appending is a
/// bounds check and a `memcpy`. Owns its allocation, freed in deinit. One thread only.
final class ByteBuffer {
    private var base: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    private(set) var count = 0

    init(capacity: Int = 1024) {
        self.capacity = max(capacity, 16)
        base = .allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    func reset() { count = 0 }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    private func reserve(_ n: Int) {
        guard count + n > capacity else { return }
        var grown = capacity * 2
        while grown < count + n { grown *= 2 }
        let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
        bigger.initialize(from: base, count: count)
        base.deallocate()
        base = bigger
        capacity = grown
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count)
        (base + count).initialize(from: src.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        count += bytes.count
    }

    func append(_ s: String) {
        var s = s
        s.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    func append(_ s: StaticString) {
        append(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    func append(byte: UInt8) {
        reserve(1)
        base[count] = byte
        count += 1
    }
}
