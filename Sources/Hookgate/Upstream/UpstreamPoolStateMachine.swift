// Threads: any (a value; its owner, the `UpstreamPool` on the loop thread, drives it).

/// Who gets an upstream connection, as a pure state machine: the idle connections, the count
/// of open ones against `upstream.max_connections`, and the bounded queue of calls waiting
/// for one (`upstream.max_queue`, each for at most `upstream.queue_timeout_ms`). The pool
/// (`UpstreamPool`) reports calls, connections freed and closed, and the clock, and carries
/// out the answer. No I/O and no clock of its own, so the cap, the queue's order and its
/// timeouts are unit-tested on a fake clock.
///
/// The cap holds at every step: a connection is counted from the moment the machine says
/// `.open` until the pool reports it closed (or never made), so at most `maxConnections` are
/// ever open or opening. A waiting call is handed out once — to a connection, or to its
/// timeout — never both. Times are monotonic nanoseconds.
package struct UpstreamPoolStateMachine<Connection: AnyObject, Waiter> {
    package struct Limits: Equatable {
        package var maxConnections: Int
        package var maxQueued: Int
        package var queueTimeoutMs: Int

        package init(maxConnections: Int, maxQueued: Int, queueTimeoutMs: Int) {
            self.maxConnections = maxConnections
            self.maxQueued = maxQueued
            self.queueTimeoutMs = queueTimeoutMs
        }

        init(_ options: UpstreamOptions) {
            self.init(maxConnections: options.maxConnections, maxQueued: options.maxQueued,
                      queueTimeoutMs: options.queueTimeoutMs)
        }
    }

    /// Where a new call goes.
    package enum Admission {
        /// Send it on this idle connection.
        case reuse(Connection)
        /// Open a new connection for it (already counted against the cap).
        case open
        /// It waits in the queue for a connection.
        case queued
        /// Refused at once: every connection is busy and the queue is full.
        case refused(UpstreamFailure)
    }

    /// What a connection that finished its call does next.
    package enum Handoff {
        /// Carry this waiting call.
        case carry(Waiter)
        /// Stay idle.
        case idle
    }

    private let limits: Limits
    /// Connections open or opening (idle ones included): never more than `maxConnections`.
    private(set) package var open = 0
    /// Idle connections, the most recently used last (reused first: warm, and the others
    /// reach their idle timeout).
    private var idle: [Connection] = []
    private var queue = FIFO<(waiter: Waiter, deadline: UInt64)>()
    /// When the oldest waiting call times out (nil: none waits). The pool keeps one timer on it.
    private(set) package var deadline: UInt64?

    package init(limits: Limits) {
        self.limits = limits
    }

    package var idleCount: Int { idle.count }
    package var queuedCount: Int { queue.count }

    /// A new call.
    package mutating func submit(_ waiter: Waiter, now: UInt64) -> Admission {
        if let connection = idle.popLast() { return .reuse(connection) }
        if open < limits.maxConnections {
            open += 1
            return .open
        }
        guard queue.count < limits.maxQueued else { return .refused(.queueFull(limits.maxQueued)) }
        let due = now + UInt64(max(0, limits.queueTimeoutMs)) * 1_000_000
        queue.append((waiter, due))
        if deadline == nil { deadline = due }
        return .queued
    }

    /// A connection the machine said to `.open` could not be made: its place is free again,
    /// and a waiting call may take it (returned: open a connection for it).
    package mutating func openFailed() -> Waiter? {
        open -= 1
        return waiterForNewConnection()
    }

    /// A connection finished its call and may be reused: the oldest waiting call takes it,
    /// else it goes idle.
    package mutating func released(_ connection: Connection) -> Handoff {
        if let next = takeWaiter() { return .carry(next) }
        idle.append(connection)
        return .idle
    }

    /// A connection closed (for whatever reason). Returned: a waiting call to open a new
    /// connection for (already counted).
    package mutating func closed(_ connection: Connection) -> Waiter? {
        if let i = idle.firstIndex(where: { $0 === connection }) { idle.remove(at: i) }
        open -= 1
        return waiterForNewConnection()
    }

    /// The deadline passed: the calls that waited too long, oldest first.
    package mutating func timerFired(now: UInt64) -> [Waiter] {
        var expired: [Waiter] = []
        while let first = queue.first, first.deadline <= now {
            _ = queue.popFirst()
            expired.append(first.waiter)
        }
        deadline = queue.first?.deadline
        return expired
    }

    /// Shutdown: the idle connections, to close (busy ones finish their call first).
    package mutating func takeIdle() -> [Connection] {
        defer { idle.removeAll() }
        return idle
    }

    private mutating func waiterForNewConnection() -> Waiter? {
        guard open < limits.maxConnections, let next = takeWaiter() else { return nil }
        open += 1
        return next
    }

    private mutating func takeWaiter() -> Waiter? {
        guard let next = queue.popFirst() else { return nil }
        deadline = queue.first?.deadline
        return next.waiter
    }
}
