// Threads: any (a value; its owner, an `UpstreamConnection` on the loop thread, drives it).

/// The life of one upstream connection and the call it carries, as a pure state machine
/// (hummingbird's `HTTPConnectionStateHandler`): the socket adapter (`UpstreamConnection`)
/// reports what happened — a TCP connect done or refused, the TLS handshake done, bytes of the
/// answer, the peer gone, the clock — and executes the action it gets back. No I/O and no
/// clock of its own, so every path is unit-tested on a fake clock.
///
/// At most once: a call is handed out with `.send` exactly once, and from then on every
/// event ends it with `.succeed` or `.fail` — never another `.send`. Only a TCP connect
/// refused (nothing written yet) moves on to the next address, within the same connection.
/// Every call given to the machine gets exactly one `.succeed` or `.fail`.
/// Times are monotonic nanoseconds.
package struct UpstreamConnectionStateMachine {
    package struct Timeouts: Equatable {
        /// TCP connect and TLS handshake together, over every address tried.
        package var connectMs: Int
        /// From the call written to its answer read whole.
        package var answerMs: Int
        /// An idle connection is closed after this long.
        package var idleMs: Int

        package init(connectMs: Int, answerMs: Int, idleMs: Int) {
            self.connectMs = connectMs
            self.answerMs = answerMs
            self.idleMs = idleMs
        }

        init(_ options: UpstreamOptions) {
            self.init(connectMs: options.connectTimeoutMs, answerMs: options.timeoutMs, idleMs: options.idleTimeoutMs)
        }
    }

    package enum State: Equatable {
        /// Made, not yet told where to connect.
        case fresh
        /// A TCP connect is under way.
        case connecting
        /// The TLS handshake is under way.
        case handshaking
        /// A call was sent; its answer is awaited.
        case busy
        /// Connected, no call: reusable until the idle deadline.
        case idle
        case closed
    }

    package enum Action {
        /// Wait for the next event.
        case wait
        /// Open a TCP connection to this address (dropping the socket of a refused one).
        case connect(SocketAddress)
        /// Start the TLS handshake on the connected socket.
        case startTLS
        /// Write the call. Given once per call: it is never re-sent.
        case send(UpstreamCall)
        /// The call's answer. With `keepAlive` the connection is idle now and may carry the
        /// next call; without, it is closed.
        case succeed(UpstreamResponse, keepAlive: Bool)
        /// The call failed; the connection is closed.
        case fail(UpstreamFailure)
        /// No call is pending; close the connection.
        case close
    }

    private(set) package var state: State = .fresh
    /// When the pending timer should fire (nil: none); the adapter keeps one timer on it.
    private(set) package var deadline: UInt64?
    private let timeouts: Timeouts
    private let maxResponseBytes: Int
    /// The call waiting for the connect and handshake to finish.
    private var waiting: UpstreamCall?
    /// Addresses still to try if the current one refuses the TCP connect.
    private var fallbacks: ArraySlice<SocketAddress> = []
    private var parser: ResponseParser

    package init(timeouts: Timeouts, maxResponseBytes: Int) {
        self.timeouts = timeouts
        self.maxResponseBytes = maxResponseBytes
        parser = ResponseParser(maxBodyBytes: maxResponseBytes)
    }

    /// Whether a call is with the connection and not yet ended (waiting or sent).
    package var hasCall: Bool { waiting != nil || state == .busy }

    // MARK: - Connecting

    /// Connects to the first of `candidates` to carry `call`.
    package mutating func connect(to candidates: [SocketAddress], carrying call: UpstreamCall, now: UInt64) -> Action {
        guard state == .fresh else { return refuse(call) }
        waiting = call
        state = .connecting
        deadline = Self.after(now, timeouts.connectMs)
        fallbacks = candidates[...]
        return nextAddress(after: nil)
    }

    /// The TCP connect to the current address failed (refused, unreachable, no socket):
    /// nothing was written, so the next address is tried.
    package mutating func connectFailed(_ why: String) -> Action {
        guard state == .connecting else { return .wait }
        return nextAddress(after: .connect(why))
    }

    /// The TCP connect finished.
    package mutating func connected() -> Action {
        guard state == .connecting else { return .wait }
        state = .handshaking
        return .startTLS
    }

    /// The TLS handshake finished: the waiting call goes out.
    package mutating func handshakeFinished(now: UInt64) -> Action {
        guard state == .handshaking, let call = waiting else { return .wait }
        waiting = nil
        return send(call, now: now)
    }

    /// The TLS handshake failed (or the peer closed during it).
    package mutating func handshakeFailed(_ failure: UpstreamFailure) -> Action {
        guard state == .connecting || state == .handshaking else { return .wait }
        return end(failure)
    }

    private mutating func nextAddress(after failure: UpstreamFailure?) -> Action {
        guard let address = fallbacks.popFirst() else {
            return end(failure ?? .unresolved("no address to connect to"))
        }
        return .connect(address)
    }

    // MARK: - Calls

    /// Sends `call` on this idle connection.
    package mutating func start(_ call: UpstreamCall, now: UInt64) -> Action {
        guard state == .idle else { return refuse(call) }
        return send(call, now: now)
    }

    private mutating func send(_ call: UpstreamCall, now: UInt64) -> Action {
        state = .busy
        parser = ResponseParser(maxBodyBytes: maxResponseBytes)
        deadline = Self.after(now, timeouts.answerMs)
        return .send(call)
    }

    /// A call given to a connection that cannot take it: failed at once, the connection kept
    /// as it was (a pool bug, but the call is still answered exactly once and sent nowhere).
    private func refuse(_ call: UpstreamCall) -> Action {
        assertionFailure("a call was given to an upstream connection that is \(state)")
        return .fail(.closed("internal error: the connection was not ready for a call"))
    }

    /// Writing the call failed: some of it may have reached the upstream.
    package mutating func writeFailed(_ why: String) -> Action {
        guard state == .busy else { return .wait }
        return end(.closed("write failed: \(why)"))
    }

    /// Bytes arrived from the upstream.
    package mutating func received<Bytes: Collection>(_ bytes: Bytes, now: UInt64) -> Action where Bytes.Element == UInt8 {
        switch state {
        case .busy:
            do {
                switch try parser.feed(bytes) {
                case .complete(let response): return answered(response, now: now)
                case .needMore: return .wait
                }
            } catch {
                return end(.invalid(error.description))
            }
        case .idle:
            // Bytes nobody asked for: the connection can no longer be trusted.
            return end(nil)
        case .fresh, .connecting, .handshaking, .closed:
            return .wait
        }
    }

    /// The upstream closed the connection (cleanly or not). A close-delimited answer ends here.
    package mutating func peerClosed(now: UInt64) -> Action {
        switch state {
        case .busy:
            do {
                return answered(try parser.finish(), now: now)
            } catch {
                return end(.closed(error.description))
            }
        case .idle:
            return end(nil)
        case .connecting, .handshaking:
            return end(.tls("connection closed during the TLS handshake"))
        case .fresh, .closed:
            return .wait
        }
    }

    /// Reading failed (a reset, a TLS error).
    package mutating func readFailed(_ why: String) -> Action {
        switch state {
        case .busy: return end(.closed(why))
        case .idle: return end(nil)
        case .fresh, .connecting, .handshaking, .closed: return .wait
        }
    }

    private mutating func answered(_ response: UpstreamResponse, now: UInt64) -> Action {
        if response.keepAlive {
            state = .idle
            deadline = Self.after(now, timeouts.idleMs)
        } else {
            state = .closed
            deadline = nil
        }
        return .succeed(response, keepAlive: response.keepAlive)
    }

    // MARK: - Time and closing

    /// The deadline passed.
    package mutating func timerFired(now: UInt64) -> Action {
        guard let deadline, now >= deadline else { return .wait }
        switch state {
        case .connecting, .handshaking: return end(.connectTimeout(timeouts.connectMs))
        case .busy: return end(.timeout(timeouts.answerMs))
        case .idle: return end(nil)
        case .fresh, .closed: return .wait
        }
    }

    /// The pool closes the connection (shutdown of an idle one). A call still with it fails.
    package mutating func close() -> Action {
        switch state {
        case .closed: return .wait
        case .fresh, .idle: return end(nil)
        case .connecting, .handshaking: return end(.connect("the connection was closed before it was ready"))
        case .busy: return end(.closed("the connection was closed before the answer"))
        }
    }

    /// Closed: the call (if any) fails with `failure`, else the connection just closes.
    private mutating func end(_ failure: UpstreamFailure?) -> Action {
        let hadCall = hasCall
        state = .closed
        deadline = nil
        waiting = nil
        fallbacks = []
        guard hadCall, let failure else { return .close }
        return .fail(failure)
    }

    private static func after(_ now: UInt64, _ ms: Int) -> UInt64 {
        now + UInt64(max(0, ms)) * 1_000_000
    }
}
