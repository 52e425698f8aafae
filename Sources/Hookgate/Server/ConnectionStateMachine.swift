// Threads: any (a value; its owner, a `ClientConnection` on the loop thread, drives it).

/// The life of one client connection as a pure state machine (hummingbird's
/// `HTTPConnectionStateHandler`): the socket adapter reports what happened — bytes, an answer
/// queued, the output drained, the peer gone, the clock — and executes the action it gets
/// back. No I/O and no clock of its own, so every path is unit-tested with a fake clock.
///
/// One request at a time: while a request is being handled, further (pipelined) bytes wait
/// in the socket's buffer and are parsed after the answer, so answers leave in order.
/// Times are monotonic nanoseconds.
package struct ConnectionStateMachine {
    package struct Limits: Equatable {
        package var parser = RequestParser.Limits()
        /// A request must arrive whole within this time of the connection's accept or of the
        /// previous answer (slowloris); nil: no deadline.
        package var requestDeadlineMs: Int? = 15_000
        /// After an answer that closes the connection: how long its bytes may take to leave,
        /// then how long input is read and dropped after the write side is shut (lingering
        /// close), so that the client reads the answer rather than a reset.
        package var lingerMs = 2000

        package init(parser: RequestParser.Limits = RequestParser.Limits(), requestDeadlineMs: Int? = 15_000, lingerMs: Int = 2000) {
            self.parser = parser
            self.requestDeadlineMs = requestDeadlineMs
            self.lingerMs = lingerMs
        }
    }

    enum Phase: Equatable {
        /// Waiting for, or reading, a request.
        case reading
        /// A request (or a refusal of one) is with the handler; its answer is awaited.
        case handling
        /// The last answer is queued; the connection closes once it has left.
        case closing
        /// The write side is shut; input is dropped until the peer closes or time is up.
        case lingering
        case closed
    }

    enum Action {
        /// Wait for the next event.
        case wait
        /// Hand a whole request to the handler, which answers it exactly once.
        case deliver(ParsedRequest)
        /// Hand an unreadable request to the handler, which answers it (the connection closes after).
        case reject(RequestError)
        /// Write `HTTP/1.1 100 Continue` (the client waits for it before sending the body).
        case sendContinue
        /// Shut the write side down (the answer has left) and drop input from now on.
        case shutdownWrite
        /// Close the connection now.
        case close
    }

    private(set) var phase: Phase = .reading
    private var parser: RequestParser
    private let limits: Limits
    /// When the pending timer should fire (nil: none); the adapter keeps one timer on it.
    private(set) var deadline: UInt64?
    /// The peer closed its side: the answer in progress is the last thing to do.
    private(set) var peerClosed = false
    /// No new request is to be read (the server is draining).
    private var draining = false
    /// Draining, but a request is still owed an answer: the first of a connection accepted
    /// before the drain, or one whose bytes had reached the socket when it began.
    private var awaitingOwedRequest = false
    private var closeAfterAnswer = false
    /// Answers given on this connection so far.
    private(set) var answeredRequests = 0

    init(limits: Limits, now: UInt64) {
        self.limits = limits
        self.parser = RequestParser(limits: limits.parser)
        deadline = Self.after(now, limits.requestDeadlineMs)
    }

    /// Input is read only while reading a request (and dropped while lingering).
    var wantsInput: Bool { phase == .reading }

    /// Bytes that arrived while reading; then ask `next`.
    mutating func received<Bytes: Collection>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        guard phase == .reading else { return }
        parser.append(bytes)
    }

    /// What to do now, from what has been received.
    mutating func next(now: UInt64) -> Action {
        guard phase == .reading else { return phase == .closed ? .close : .wait }
        switch parser.parse() {
        case .needMore:
            if peerClosed {
                // The peer half-closed without completing a request: nothing to answer.
                return closeNow()
            }
            if draining && !parser.started && !awaitingOwedRequest { return closeNow() }
            return .wait
        case .awaitingBody:
            return .sendContinue
        case .complete(let request):
            phase = .handling
            deadline = nil
            if !request.head.keepAlive { closeAfterAnswer = true }
            return .deliver(request)
        case .failed(let error):
            phase = .handling
            deadline = nil
            closeAfterAnswer = true
            return .reject(error)
        }
    }

    /// Whether an answer queued now may leave the connection open.
    var mayKeepAlive: Bool { !closeAfterAnswer && !draining && !peerClosed }

    /// The handler queued its answer. `keepAlive` false closes the connection after it;
    /// otherwise the next request is read (ask `next`).
    mutating func answered(keepAlive: Bool, now: UInt64) {
        guard phase == .handling else { return }
        answeredRequests += 1
        awaitingOwedRequest = false
        if !keepAlive || !mayKeepAlive {
            phase = .closing
            deadline = now + UInt64(limits.lingerMs) * 1_000_000
            return
        }
        phase = .reading
        parser.next()
        deadline = Self.after(now, limits.requestDeadlineMs)
    }

    /// Everything written so far has left the process.
    mutating func drained(now: UInt64) -> Action {
        guard phase == .closing else { return .wait }
        if peerClosed { return closeNow() }
        phase = .lingering
        deadline = now + UInt64(limits.lingerMs) * 1_000_000
        return .shutdownWrite
    }

    /// The peer closed its side (end of file) or the socket failed.
    mutating func peerGone(now: UInt64) -> Action {
        peerClosed = true
        switch phase {
        case .reading:
            return next(now: now)
        case .handling:
            return .wait  // the answer still comes (and is recorded); then the connection closes
        case .closing, .lingering, .closed:
            return closeNow()
        }
    }

    /// The deadline passed.
    mutating func timerFired(now: UInt64) -> Action {
        guard let deadline, now >= deadline else { return .wait }
        self.deadline = nil
        switch phase {
        case .reading:
            guard parser.started else { return closeNow() }  // an idle keep-alive connection
            let error = RequestError(kind: .timedOut,
                                     detail: "the request did not arrive whole within \(limits.requestDeadlineMs ?? 0) ms",
                                     head: parser.partialHead())
            phase = .handling
            closeAfterAnswer = true
            return .reject(error)
        case .handling:
            return .wait
        case .closing, .lingering, .closed:
            return closeNow()
        }
    }

    /// The server is draining: every connection closes after one more answer at most.
    /// An idle keep-alive connection (an answer given, nothing since) closes now. A request
    /// under way is answered — also one whose bytes are in the socket but not read yet
    /// (`inputPending`), and the first request of a connection accepted before the drain (its
    /// caller sent it, or is about to, to a listener that took the connection), both within the
    /// usual request deadline.
    mutating func drain(now: UInt64, inputPending: Bool) -> Action {
        draining = true
        guard phase == .reading, !parser.started else { return .wait }
        if answeredRequests > 0 && !inputPending { return closeNow() }
        awaitingOwedRequest = true
        return .wait
    }

    private mutating func closeNow() -> Action {
        phase = .closed
        deadline = nil
        return .close
    }

    private static func after(_ now: UInt64, _ ms: Int?) -> UInt64? {
        ms.map { now + UInt64($0) * 1_000_000 }
    }
}
