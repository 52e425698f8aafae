import CLibevent
import Foundation

/// One libevent `event_base`, run by exactly one thread. Every event/bufferevent call
/// happens on that thread; other threads hop onto it with `execute`.
///
/// Ownership: the loop owns its `event_base` and frees it in `deinit`. Objects created on
/// the base (timers, servers, connections) must be freed before the loop is.
public final class EventLoop: @unchecked Sendable {
    let base: OpaquePointer
    /// The thread that runs the loop: the one that made it until `run()` starts, then the one
    /// running it.
    private let owner = Locked<pthread_t>(pthread_self())

    private static let threadingEnabled: Bool = {
        // Must run before the first event_base_new so that cross-thread wake-ups work.
        evthread_use_pthreads() == 0
    }()

    public init() {
        precondition(EventLoop.threadingEnabled, "evthread_use_pthreads failed")
        // The epoll change list folds the enable/disable calls a bufferevent makes within one
        // iteration into one epoll_ctl (fewer syscalls per request). Its documented caveat,
        // fds cloned with dup(), does not apply: the gateway never dups a socket.
        guard let config = event_config_new() else { fatalError("event_config_new failed") }
        defer { event_config_free(config) }
        _ = event_config_set_flag(config, Int32(EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST.rawValue))
        guard let base = event_base_new_with_config(config) else { fatalError("event_base_new_with_config failed") }
        self.base = base
    }

    deinit { event_base_free(base) }

    /// Runs the loop on the calling thread until `stop()` or no events remain.
    public func run() {
        owner.withLock { $0 = pthread_self() }
        _ = event_base_dispatch(base)
    }

    /// Whether the caller runs on this loop's thread.
    var inEventLoop: Bool {
        owner.withLock { pthread_equal($0, pthread_self()) != 0 }
    }

    /// Traps in debug builds when called off the loop's thread (no cost in release builds).
    func assertInLoop(_ what: @autoclosure () -> String = "called off the loop's thread",
                      file: StaticString = #fileID, line: UInt = #line) {
        assert(inEventLoop, what(), file: file, line: line)
    }

    /// Makes `run()` return after the current iteration; safe from any thread.
    public func stop() {
        _ = event_base_loopbreak(base)
    }

    /// Runs `work` on the loop thread as soon as possible; safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(WorkBox(work)).toOpaque()
        var now = timeval(tv_sec: 0, tv_usec: 0)
        let rc = event_base_once(base, -1, Int16(EV_TIMEOUT), { _, _, arg in
            guard let arg else { return }
            let box = Unmanaged<WorkBox>.fromOpaque(arg).takeRetainedValue()
            box.work()
        }, box, &now)
        if rc != 0 {
            // The base refused the event (out of memory): run nothing, but do not leak.
            Unmanaged<WorkBox>.fromOpaque(box).release()
        }
    }

    /// Runs `work` on the next loop iteration; for use on the loop thread only (no Sendable
    /// requirement, unlike `execute`).
    package func soon(_ work: @escaping () -> Void) {
        let box = Unmanaged.passRetained(WorkBox(work)).toOpaque()
        var now = timeval(tv_sec: 0, tv_usec: 0)
        let rc = event_base_once(base, -1, Int16(EV_TIMEOUT), { _, _, arg in
            guard let arg else { return }
            Unmanaged<WorkBox>.fromOpaque(arg).takeRetainedValue().work()
        }, box, &now)
        if rc != 0 { Unmanaged<WorkBox>.fromOpaque(box).release() }
    }

    /// A one-shot timer that calls `fire` on the loop after `milliseconds`.
    /// The returned timer cancels itself when released.
    package func timer(after milliseconds: Int, _ fire: @escaping () -> Void) -> LoopTimer {
        let t = LoopTimer(loop: self, fire)
        t.arm(milliseconds: milliseconds)
        return t
    }

    /// A timer that calls `action` each time it fires after being armed (`arm`), for an
    /// object that re-arms one timer over and over rather than making one per deadline.
    func timer(repeating action: @escaping () -> Void) -> LoopTimer {
        LoopTimer(loop: self, action, keepsAction: true)
    }

    /// Monotonic nanoseconds (CLOCK_MONOTONIC), for durations, deadlines and rate limits.
    public static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// A closure handed to libevent for one run (`execute` and `soon`): retained when queued,
/// released by the callback that runs it (or at once if libevent refuses it).
private final class WorkBox {
    let work: () -> Void
    init(_ work: @escaping () -> Void) { self.work = work }
}

/// Owns one libevent timer event. The event holds an unretained pointer back to the timer;
/// the timer frees the event in `deinit`, so the callback can never outlive its target.
/// A one-shot timer forgets its action when it fires or is cancelled; one made with
/// `keepsAction` runs the same action each time it is armed and fires (no closure per deadline).
package final class LoopTimer {
    private var event: OpaquePointer?
    private var fire: (() -> Void)?
    private let keepsAction: Bool

    init(loop: EventLoop, _ fire: @escaping () -> Void, keepsAction: Bool = false) {
        self.fire = fire
        self.keepsAction = keepsAction
        self.event = nil
        self.event = event_new(loop.base, -1, 0, { _, _, arg in
            guard let arg else { return }
            let timer = Unmanaged<LoopTimer>.fromOpaque(arg).takeUnretainedValue()
            let fire = timer.fire
            if !timer.keepsAction { timer.fire = nil }
            fire?()
        }, Unmanaged.passUnretained(self).toOpaque())
        precondition(event != nil, "event_new failed")
    }

    /// (Re)arms the timer: it fires once, `milliseconds` from now (a pending deadline is replaced).
    func arm(milliseconds: Int) {
        guard let event else { return }
        var tv = timeval(tv_sec: milliseconds / 1000, tv_usec: Int((milliseconds % 1000) * 1000))
        event_add(event, &tv)
    }

    /// Makes the timer fire in this turn of the loop, after the callbacks already due in it
    /// (`event_active`): work that many of those callbacks ask for is then done once. A timer
    /// already due fires once.
    func fireInThisTurn() {
        guard let event else { return }
        event_active(event, EV_TIMEOUT, 1)
    }

    package func cancel() {
        if !keepsAction { fire = nil }
        if let event { event_del(event) }
    }

    deinit {
        if let event { event_free(event) }
    }
}

/// One timer kept on a state machine's deadline (monotonic nanoseconds), for the socket
/// adapters (`ClientConnection`, `UpstreamConnection`, `UpstreamPool`): re-armed only when the
/// deadline changes. A fire that comes early (libevent's clock is coarser) is the machine's to
/// ignore; the adapter's next `follow` arms the timer again. Loop thread only.
final class DeadlineTimer {
    private let loop: EventLoop
    private let fire: () -> Void
    /// Made on the first deadline (many connections never need one).
    private var timer: LoopTimer?
    private var armed: UInt64?

    init(loop: EventLoop, _ fire: @escaping () -> Void) {
        self.loop = loop
        self.fire = fire
    }

    /// Fires once `deadline` passes; nil: not at all.
    func follow(_ deadline: UInt64?) {
        guard deadline != armed else { return }
        armed = deadline
        guard let deadline else {
            timer?.cancel()
            return
        }
        if timer == nil {
            timer = loop.timer(repeating: { [unowned self] in
                self.armed = nil
                self.fire()
            })
        }
        let now = EventLoop.monotonicNanos()
        timer?.arm(milliseconds: deadline > now ? Int((deadline - now + 999_999) / 1_000_000) : 0)
    }
}

/// A persistent signal watcher on the loop (SIGTERM, SIGINT, SIGHUP).
package final class SignalWatcher {
    private var event: OpaquePointer?
    private let handler: () -> Void

    package init(loop: EventLoop, signal: Int32, _ handler: @escaping () -> Void) {
        self.handler = handler
        self.event = event_new(loop.base, signal, Int16(EV_SIGNAL | EV_PERSIST), { _, _, arg in
            guard let arg else { return }
            Unmanaged<SignalWatcher>.fromOpaque(arg).takeUnretainedValue().handler()
        }, Unmanaged.passUnretained(self).toOpaque())
        precondition(event != nil, "event_new(signal) failed")
        event_add(event, nil)
    }

    package func cancel() { if let event { event_del(event) } }

    deinit { if let event { event_free(event) } }
}
