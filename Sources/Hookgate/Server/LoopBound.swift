import Foundation

/// A value handed between threads on the promise that only the loop thread touches it
/// (the checker cannot see that promise; keep every use on the loop).
struct LoopBound<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
