import Foundation

// Threads: any; that is its purpose.

/// A value shared between threads behind a pthread mutex (`NSLock`), used like the standard
/// library's `Mutex` (`withLock { inout value in ... }`). Not `Mutex` itself: on Linux that locks
/// with a bare futex, which ThreadSanitizer cannot see, so every access it orders is reported as a
/// race (the CI's TSan stage did, on the audit writer's queue). `NSLock` is a pthread mutex, which
/// ThreadSanitizer intercepts; uncontended it costs the same.
package final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    package init(_ value: Value) { self.value = value }

    package func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
