import CLibevent
import COpenSSL
import Foundation

/// One accepted client connection: a bufferevent (plain, or OpenSSL for a TLS listener)
/// driven by a `ConnectionStateMachine`. The adapter only moves bytes and runs the actions
/// the machine returns; all decisions are the machine's. Loop thread only.
///
/// Ownership: the listener holds the connection until `close()`; a `ServerRequest` being
/// handled holds it too, so a late answer finds it (closed: the answer is dropped). The
/// connection owns its bufferevent (freed in `close()`, or `deinit` at the latest), which owns
/// the socket and, for TLS, the `SSL` (BEV_OPT_CLOSE_ON_FREE). libevent callbacks get an
/// unretained pointer to the connection, valid because the bufferevent is freed first.
final class ClientConnection {
    private unowned let listener: HTTPListener
    private var bev: OpaquePointer?
    private var machine: ConnectionStateMachine
    /// The one timer, on the machine's deadline.
    private lazy var timer = DeadlineTimer(loop: listener.loop) { [unowned self] in self.timerFired() }
    let peerAddress: String
    private var pumping = false
    private var pumpAgain = false
    /// Run once the answers written so far have left the process (or the connection closed).
    private var whenWritten: [() -> Void] = []
    /// The request being handled; an answer for any other is ignored.
    private var current: ServerRequest?
    private let isTLS: Bool

    /// Takes ownership of `fd` and `ssl` (both freed with the bufferevent, or here on failure).
    init(listener: HTTPListener, fd: Int32, peer: String, ssl: OpaquePointer?) throws {
        self.listener = listener
        self.peerAddress = peer
        self.isTLS = ssl != nil
        let now = EventLoop.monotonicNanos()
        machine = ConnectionStateMachine(limits: listener.limits.connection, now: now)
        let created: OpaquePointer?
        if let ssl {
            created = bufferevent_openssl_socket_new(listener.loop.base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                     Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue))
            if created == nil { SSL_free(ssl) }
        } else {
            created = bufferevent_socket_new(listener.loop.base, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        }
        guard let created else { throw ServerError(description: "cannot create a bufferevent") }
        bev = created
    }

    deinit {
        if let bev { bufferevent_free(bev) }
    }

    /// The connection behind a callback's argument (always the one it was registered with).
    private static func from(_ arg: UnsafeMutableRawPointer?) -> ClientConnection? {
        arg.map { Unmanaged<ClientConnection>.fromOpaque($0).takeUnretainedValue() }
    }

    func start() {
        guard let bev else { return }
        bufferevent_setcb(bev, { _, arg in
            guard let c = ClientConnection.from(arg) else { return }
            withExtendedLifetime(c) { c.pump() }
        }, { _, arg in
            guard let c = ClientConnection.from(arg) else { return }
            withExtendedLifetime(c) { c.writable() }
        }, { _, what, arg in
            guard let c = ClientConnection.from(arg) else { return }
            withExtendedLifetime(c) { c.event(what) }
        }, Unmanaged.passUnretained(self).toOpaque())
        // While a request is handled, pipelined bytes wait in the input buffer: reading
        // pauses once it holds this much (the kernel's buffers then push back on the client).
        bufferevent_setwatermark(bev, Int16(EV_READ), 0, max(64 * 1024, listener.limits.connection.parser.maxHeadBytes + 1024))
        bufferevent_enable(bev, Int16(EV_READ | EV_WRITE))
        syncTimer()
    }

    // MARK: - Events

    private func writable() {
        guard let bev, let output = bufferevent_get_output(bev), evbuffer_get_length(output) == 0 else { return }
        runWritten()
        perform(machine.drained(now: EventLoop.monotonicNanos()))
        pump()
    }

    private func event(_ what: Int16) {
        let flags = Int32(what)
        guard flags & Int32(BEV_EVENT_EOF | BEV_EVENT_ERROR) != 0 else { return }
        if flags & Int32(BEV_EVENT_ERROR) != 0 {
            // A failed socket (reset) or TLS handshake: nothing more can be read or written.
            current = nil
            close()
            return
        }
        perform(machine.peerGone(now: EventLoop.monotonicNanos()))
        pump()
    }

    private func timerFired() {
        perform(machine.timerFired(now: EventLoop.monotonicNanos()))
        pump()
    }

    /// The server drains: close if idle, else after one more answer (ConnectionStateMachine.drain).
    func drain() {
        perform(machine.drain(now: EventLoop.monotonicNanos(), inputPending: inputPending))
        pump()
    }

    /// Bytes from the client are waiting: in the input buffer, or in the socket unread.
    private var inputPending: Bool {
        guard let bev else { return false }
        if let input = bufferevent_get_input(bev), evbuffer_get_length(input) > 0 { return true }
        var byte: UInt8 = 0
        return recv(bufferevent_getfd(bev), &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0
    }

    /// Moves input into the machine and runs its actions until it waits. Re-entrant calls
    /// (an answer given synchronously by the handler) only ask the running pump for another turn.
    private func pump() {
        if pumping {
            pumpAgain = true
            return
        }
        pumping = true
        defer { pumping = false }
        repeat {
            pumpAgain = false
            while bev != nil {
                moveInput()
                if !perform(machine.next(now: EventLoop.monotonicNanos())) { break }
            }
        } while pumpAgain && bev != nil
        syncTimer()
    }

    private func moveInput() {
        guard let bev, let input = bufferevent_get_input(bev) else { return }
        let length = evbuffer_get_length(input)
        guard length > 0 else { return }
        if machine.wantsInput {
            // evbuffer_iovec is struct iovec; a few on the stack cover what one read brings.
            let taken = withUnsafeTemporaryAllocation(of: iovec.self, capacity: 8) { vecs -> Int in
                let n = Int(evbuffer_peek(input, length, nil, vecs.baseAddress, 8))
                var taken = 0
                for v in vecs.prefix(min(n, 8)) {
                    guard let base = v.iov_base else { continue }
                    let count = min(v.iov_len, length - taken)
                    machine.received(UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: count))
                    taken += count
                }
                return taken
            }
            evbuffer_drain(input, taken)
        } else if machine.phase == .lingering {
            evbuffer_drain(input, length)
        }
    }

    /// Runs one action; false when the machine waits for the next event.
    @discardableResult
    private func perform(_ action: ConnectionStateMachine.Action) -> Bool {
        switch action {
        case .wait:
            return false
        case .deliver(let request):
            let r = ServerRequest(connection: self, head: request.head, bodyLength: request.bodyLength,
                                  body: request.body, error: nil, firstOnConnection: machine.answeredRequests == 0)
            current = r
            listener.handler(r)
            return true
        case .reject(let error):
            if error.kind == .timedOut { listener.timedOutRequests += 1 }
            let r = ServerRequest(connection: self, head: error.head, bodyLength: 0, body: [], error: error,
                                  firstOnConnection: machine.answeredRequests == 0)
            current = r
            listener.handler(r)
            return true
        case .sendContinue:
            write(ResponseHead.continueBytes)
            return true
        case .shutdownWrite:
            if let bev {
                _ = shutdown(bufferevent_getfd(bev), Int32(SHUT_WR))
                // Drop whatever comes now, without a bound on the buffer (it is emptied at once).
                bufferevent_setwatermark(bev, Int16(EV_READ), 0, 0)
                bufferevent_enable(bev, Int16(EV_READ))
            }
            return true
        case .close:
            close()
            return false
        }
    }

    private func write(_ bytes: [UInt8]) {
        guard let bev else { return }
        _ = bytes.withUnsafeBytes { bufferevent_write(bev, $0.baseAddress, $0.count) }
    }

    /// Keeps the one timer on the machine's deadline (none once closed).
    private func syncTimer() {
        timer.follow(bev != nil ? machine.deadline : nil)
    }

    // MARK: - Answers

    /// The answer to `request`: written once, if `request` is the one being handled and the
    /// connection is open. `written` runs once the bytes have left (or the connection closed).
    func answer(_ request: ServerRequest, _ response: OutgoingResponse, keepAlive: Bool, written: (() -> Void)?) {
        guard current === request, let bev else {
            written?()
            return
        }
        current = nil
        let keep = keepAlive && request.head.keepAlive && machine.mayKeepAlive
        let bytes = response.serialized(date: listener.dates.now(), keepAlive: keep, version: request.head.version,
                                        headOnly: request.head.method == "HEAD")
        if let written { whenWritten.append(written) }
        let allSent = send(bytes, on: bev)
        let now = EventLoop.monotonicNanos()
        machine.answered(keepAlive: keep, now: now)
        if allSent {
            // Nothing left for libevent to write, so no write callback will say so: we do.
            runWritten()
            perform(machine.drained(now: now))
        }
        pump()
    }

    /// Queues `bytes` for the client. On a plain socket with nothing queued, they are first
    /// written directly (one `send`, no write event to arm and disarm: two `epoll_ctl` fewer
    /// per answer); what the socket does not take goes to the bufferevent. True when every
    /// byte has left the process.
    private func send(_ bytes: [UInt8], on bev: OpaquePointer) -> Bool {
        var sent = 0
        if !isTLS, let output = bufferevent_get_output(bev), evbuffer_get_length(output) == 0 {
            let fd = bufferevent_getfd(bev)
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n == bytes.count { return true }
            if n > 0 { sent = n }
            // EAGAIN (full socket buffer), or an error libevent will meet and report.
        }
        _ = bytes.withUnsafeBytes { raw in
            bufferevent_write(bev, raw.baseAddress! + sent, raw.count - sent)
        }
        return false
    }

    /// Drops the connection without an answer (the simulator's "close" mode).
    func abort(_ request: ServerRequest) {
        guard current === request else { return }
        current = nil
        close()
    }

    private func runWritten() {
        guard !whenWritten.isEmpty else { return }
        let done = whenWritten
        whenWritten = []
        for w in done { w() }
    }

    /// Frees the bufferevent (closing the socket) and leaves the listener.
    func close() {
        guard let bev else { return }
        self.bev = nil
        current = nil  // the request and its connection hold each other until here
        timer.follow(nil)
        bufferevent_free(bev)
        runWritten()
        listener.closed(self)
    }
}

/// One request received on a listener (or, with `error`, one that could not be read),
/// answered exactly once with `respond`. Loop thread only.
package final class ServerRequest {
    private let connection: ClientConnection
    package let head: RequestHead
    package let bodyLength: Int
    /// Empty unless the listener retains bodies.
    package let body: [UInt8]
    /// Why the request could not be read; the answer then closes the connection.
    package let error: RequestError?
    /// No answer was given on its connection before (not a keep-alive connection's next request).
    package let firstOnConnection: Bool
    private(set) var responded = false

    init(connection: ClientConnection, head: RequestHead, bodyLength: Int, body: [UInt8], error: RequestError?,
         firstOnConnection: Bool) {
        self.connection = connection
        self.head = head
        self.bodyLength = bodyLength
        self.body = body
        self.error = error
        self.firstOnConnection = firstOnConnection
    }

    package var method: String { head.method }
    /// The request-target in origin-form (path and query).
    package var target: String { head.target }
    package var peerAddress: String { connection.peerAddress }

    package func headerValues(_ name: String) -> [String] { head.values(name) }

    /// Sends the answer. `keepAlive` false closes the connection after it (it closes anyway
    /// after a request error or when the client asked to). `written`, if given, runs once the
    /// answer has left the process or the connection has closed.
    /// `interim`: 1xx answers sent first (the simulator's; the gateway sends none).
    package func respond(status: Int, reason: String? = nil, headers: [(String, String)], body: [UInt8],
                 keepAlive: Bool = true, interim: [(Int, [(String, String)])] = [], written: (() -> Void)? = nil) {
        precondition(!responded, "a request must be answered exactly once")
        responded = true
        var response = OutgoingResponse(status: status, reason: reason, headers: headers, body: body)
        response.interim = interim
        connection.answer(self, response, keepAlive: keepAlive && error == nil, written: written)
    }

    /// Drops the connection without an answer.
    package func abortConnection() {
        precondition(!responded, "a request must be answered exactly once")
        responded = true
        connection.abort(self)
    }
}
