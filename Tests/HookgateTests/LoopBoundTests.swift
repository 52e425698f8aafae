import Foundation
import Testing
@testable import Hookgate

/// `LoopBound` keeps its promise: only the loop's thread makes or reads one (debug builds trap).
@Suite struct LoopBoundTests {
    @Test func readsOnItsLoopThread() {
        let loop = EventLoop()
        let bound = LoopBound([1, 2, 3], on: loop)  // the thread that made the loop, not yet running it
        #expect(bound.value == [1, 2, 3])
        #expect(loop.inEventLoop)
    }

    @Test func aReadOffTheLoopTraps() async {
        await #expect(processExitsWith: .failure) {
            let loop = EventLoop()
            let bound = LoopBound("loop only", on: loop)
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                _ = bound.value  // another thread: the debug build traps here
                done.signal()
            }
            done.wait()
        }
    }

    @Test func aLoopRunningOnAnotherThreadOwnsItsValues() async {
        await #expect(processExitsWith: .failure) {
            let loop = EventLoop()
            let made = DispatchSemaphore(value: 0)
            let keep = LockedValue<LoopBound<Int>?>(nil)
            loop.execute {
                keep.set(LoopBound(7, on: loop))  // made on the loop's thread
                made.signal()
            }
            Thread.detachNewThread { loop.run() }
            made.wait()
            _ = keep.get()?.value  // read here, on the test's thread: traps
        }
    }
}

/// A value behind a lock (tests only).
final class LockedValue<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
}
