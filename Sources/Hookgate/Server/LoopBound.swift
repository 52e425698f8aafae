import Foundation

/// A value only its event loop's thread may touch, carried through closures that must be
/// `Sendable` (a hop onto the loop with `EventLoop.execute`, a thread's closure) on that
/// promise. The promise is checked, as swift-nio's `NIOLoopBound` does: making one or reading
/// `value` anywhere but on `loop`'s thread traps in debug builds (the check costs nothing in
/// release builds). Use it only for values that are not `Sendable`.
struct LoopBound<T>: @unchecked Sendable {
    private let wrapped: T
    let loop: EventLoop

    init(_ value: T, on loop: EventLoop) {
        loop.assertInLoop("LoopBound made off its loop's thread")
        self.wrapped = value
        self.loop = loop
    }

    var value: T {
        loop.assertInLoop("LoopBound read off its loop's thread")
        return wrapped
    }
}
