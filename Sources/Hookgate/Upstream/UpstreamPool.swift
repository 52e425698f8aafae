// Threads: the loop thread only (the pool, its connections and their events).

import CLibevent
import COpenSSL
import Foundation

public typealias UpstreamCompletion = (Result<UpstreamResponse, UpstreamFailure>) -> Void

/// A bounded pool of persistent TLS connections to one upstream. Who gets a connection —
/// the cap, the idle list, the bounded queue and its timeout — is decided by an
/// `UpstreamPoolStateMachine`; this class carries out its answers: it makes connections,
/// hands calls to them, and keeps one timer on the queue's oldest deadline.
///
/// A call is handed to exactly one connection and never re-sent: if that connection fails
/// after the call was given to it, the call fails (at most once upstream).
///
/// Ownership: the pool holds every open connection strongly (`connections`) until the
/// connection reports itself closed.
final class UpstreamPool {
    let loop: EventLoop
    let options: UpstreamOptions
    private let tls: TLSClientContext
    /// Resolved addresses (set off-loop by the resolver, applied on the loop).
    private(set) var addresses: [SocketAddress] = []
    var resolveError: String = "not resolved yet"
    private var nextAddress = 0

    private struct Waiting {
        let call: UpstreamCall
        let completion: UpstreamCompletion
    }

    private var machine: UpstreamPoolStateMachine<UpstreamConnection, Waiting>
    private var connections: [ObjectIdentifier: UpstreamConnection] = [:]
    /// One timer, on the oldest waiting call's deadline.
    private lazy var queueTimer = DeadlineTimer(loop: loop) { [unowned self] in self.queueDeadlinePassed() }

    private(set) var connectionsOpened = 0
    /// Where connections decrypt answers into before parsing (one per pool: loop thread only).
    let scratch = ScratchBuffer(count: 16 * 1024)

    init(loop: EventLoop, tls: TLSClientContext, options: UpstreamOptions) {
        self.loop = loop
        self.tls = tls
        self.options = options
        machine = UpstreamPoolStateMachine(limits: .init(options))
    }

    var openConnections: Int { connections.count }
    var idleConnections: Int { machine.idleCount }
    var queuedCalls: Int { machine.queuedCount }

    func setAddresses(_ list: [SocketAddress], error: String?) {
        if !list.isEmpty { addresses = list }
        if let error { resolveError = error }
    }

    func send(_ call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        guard !addresses.isEmpty else {
            completion(.failure(.unresolved(resolveError)))
            return
        }
        let waiting = Waiting(call: call, completion: completion)
        switch machine.submit(waiting, now: EventLoop.monotonicNanos()) {
        case .reuse(let connection):
            connection.start(call, completion: completion)
        case .open:
            open(for: waiting)
        case .queued:
            syncTimer()
        case .refused(let failure):
            completion(.failure(failure))
        }
    }

    /// Opens a connection for `waiting` (its place already counted), starting with the next
    /// address in turn. A TCP connect failure (nothing sent yet) moves on to the following
    /// address within the same connection (its pool slot held throughout), each tried once;
    /// nothing else is ever retried.
    private func open(for waiting: Waiting) {
        let start = nextAddress % addresses.count
        nextAddress &+= 1
        let candidates = Array(addresses[start...] + addresses[..<start])
        let ssl: OpaquePointer
        do {
            ssl = try tls.makeSSL(host: options.host)
        } catch {
            let next = machine.openFailed()
            waiting.completion(.failure(.tls("\(error)")))
            if let next { open(for: next) }
            return
        }
        let connection = UpstreamConnection(pool: self, ssl: ssl)
        connections[ObjectIdentifier(connection)] = connection
        connectionsOpened += 1
        connection.connect(to: candidates, call: waiting.call, completion: waiting.completion)
    }

    /// A connection finished its call and may be reused: it goes straight to the oldest
    /// waiting call, if any, else to the idle list.
    func release(_ connection: UpstreamConnection) {
        switch machine.released(connection) {
        case .carry(let next):
            syncTimer()
            connection.start(next.call, completion: next.completion)
        case .idle:
            connection.becomeIdle()
        }
    }

    /// A connection closed (for whatever reason); forget it and let a waiting call open a new one.
    func closed(_ connection: UpstreamConnection) {
        connections.removeValue(forKey: ObjectIdentifier(connection))
        if let next = machine.closed(connection) {
            syncTimer()
            open(for: next)
        }
    }

    private func queueDeadlinePassed() {
        let expired = machine.timerFired(now: EventLoop.monotonicNanos())
        syncTimer()
        for waiting in expired {
            waiting.completion(.failure(.noConnection(options.queueTimeoutMs)))
        }
    }

    private func syncTimer() { queueTimer.follow(machine.deadline) }

    /// Closes every idle connection (shutdown); busy ones finish their call first.
    func closeIdle() {
        for connection in machine.takeIdle() { connection.close() }
    }
}
