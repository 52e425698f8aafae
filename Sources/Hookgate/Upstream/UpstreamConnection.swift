// Threads: the loop thread only.

import CLibevent
import COpenSSL
import Foundation

/// One persistent TLS connection to the upstream and the call it carries: the socket adapter
/// of an `UpstreamConnectionStateMachine`, which makes every decision (which address next,
/// when the call goes out, what ends it, what each deadline means). This class only does the
/// I/O the machine asks for and reports what the socket did. Loop thread only.
///
/// The socket I/O is done here, on two libevent events, rather than by a `bufferevent_openssl`:
/// one persistent read event for the connection's whole life (an idle connection that the
/// server closes, or that receives bytes nobody asked for, is retired at once), and a one-shot
/// write event armed only while the TCP connect or the TLS handshake waits, or when the socket
/// buffer is full. A call is written with one `SSL_write` straight away, and an answer is read
/// with OpenSSL's read-ahead (one `read` for a whole answer instead of two per TLS record),
/// reading until OpenSSL holds nothing more; so a call costs no `epoll_ctl` and about two
/// system calls (bench/README.md, "The loop's system calls").
///
/// Ownership: the pool holds the connection strongly until `closed`. The connection owns the
/// socket, the `SSL` (whose socket BIO does not close the socket) and both events, and frees
/// them in `close`, or `deinit` at the latest; the `SSL` holds its own reference to the
/// `SSL_CTX`. libevent callbacks get an unretained pointer to the connection, valid because
/// the events are freed before it goes away.
final class UpstreamConnection {
    private unowned let pool: UpstreamPool
    private var machine: UpstreamConnectionStateMachine
    private var ssl: OpaquePointer?
    private var fd: Int32 = -1
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    private var writeArmed = false
    /// The address being connected to (for messages).
    private var address: SocketAddress?
    /// Told how the call ended, once.
    private var completion: UpstreamCompletion?
    /// The part of a call `SSL_write` has not taken yet (retried as the socket drains).
    private var unsent: ArraySlice<UInt8> = []
    /// The connection's one timer, on the machine's deadline.
    private lazy var timer = DeadlineTimer(loop: pool.loop) { [unowned self] in self.timerFired() }

    /// Takes ownership of `ssl`.
    init(pool: UpstreamPool, ssl: OpaquePointer) {
        self.pool = pool
        self.ssl = ssl
        machine = UpstreamConnectionStateMachine(timeouts: .init(pool.options), maxResponseBytes: pool.options.maxResponseBytes)
    }

    deinit { release() }

    /// Frees whatever C objects are still held (safe to call twice).
    private func release() {
        dropSocket()
        if let ssl {
            self.ssl = nil
            SSL_free(ssl)  // frees the socket BIO, which leaves the socket open (BIO_NOCLOSE)
        }
    }

    /// Frees both events and closes the socket.
    private func dropSocket() {
        if let readEvent {
            self.readEvent = nil
            event_free(readEvent)
        }
        if let writeEvent {
            self.writeEvent = nil
            event_free(writeEvent)
        }
        writeArmed = false
        if fd >= 0 {
            Foundation.close(fd)
            fd = -1
        }
    }

    /// The connection behind a callback's argument (always the one it was registered with).
    private static func from(_ arg: UnsafeMutableRawPointer?) -> UpstreamConnection? {
        arg.map { Unmanaged<UpstreamConnection>.fromOpaque($0).takeUnretainedValue() }
    }

    // MARK: - The machine's actions

    /// Carries out `action` (and whatever it leads to), then keeps the timer on the deadline.
    private func perform(_ action: UpstreamConnectionStateMachine.Action) {
        switch action {
        case .wait:
            break
        case .connect(let address):
            open(address)
        case .startTLS:
            startTLS()
        case .send(let call):
            unsent = call.head[...]
            flush()
        case .succeed(let response, let keepAlive):
            let done = completion
            completion = nil
            if keepAlive {
                pool.release(self)
            } else {
                shut()
            }
            done?(.success(response))
        case .fail(let failure):
            let done = completion
            completion = nil
            shut()
            done?(.failure(failure))
        case .close:
            completion = nil
            shut()
        }
        timer.follow(machine.deadline)
    }

    private func timerFired() {
        perform(machine.timerFired(now: EventLoop.monotonicNanos()))
    }

    // MARK: - Connecting

    /// Connects to the first of `candidates` to carry `call`; the machine moves on to the next
    /// when one refuses the TCP connect (nothing was sent); `upstream.connect_timeout_ms`
    /// bounds all the attempts together.
    func connect(to candidates: [SocketAddress], call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        self.completion = completion
        perform(machine.connect(to: candidates, carrying: call, now: EventLoop.monotonicNanos()))
    }

    /// Opens a non-blocking TCP connection to `address` with the connection's two events.
    private func open(_ address: SocketAddress) {
        dropSocket()
        self.address = address
        let family = address.withSockAddr { sa, _ in Int32(sa.pointee.sa_family) }
        fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            perform(machine.connectFailed("cannot create a socket: \(String(cString: strerror(errno)))"))
            return
        }
        TCPOptions.setNoDelay(fd)
        let me = Unmanaged.passUnretained(self).toOpaque()
        readEvent = event_new(pool.loop.base, fd, Int16(EV_READ | EV_PERSIST), { _, _, arg in
            guard let c = UpstreamConnection.from(arg) else { return }
            withExtendedLifetime(c) { c.readable() }
        }, me)
        writeEvent = event_new(pool.loop.base, fd, Int16(EV_WRITE), { _, _, arg in
            guard let c = UpstreamConnection.from(arg) else { return }
            withExtendedLifetime(c) { c.writable() }
        }, me)
        guard readEvent != nil, writeEvent != nil else {
            perform(machine.connectFailed("cannot create the connection's events"))
            return
        }
        let rc = address.withSockAddr { sa, len in Glibc.connect(fd, sa, socklen_t(len)) }
        if rc == 0 {
            perform(machine.connected())
        } else if errno == EINPROGRESS {
            armWrite()
        } else {
            perform(machine.connectFailed("\(address): \(String(cString: strerror(errno)))"))
        }
    }

    /// The TCP connect finished (the socket became writable), or failed with `SO_ERROR`.
    private func tcpConnected() {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 { error = errno }
        guard error == 0 else {
            perform(machine.connectFailed("\(address.map { "\($0)" } ?? "upstream"): \(String(cString: strerror(error)))"))
            return
        }
        perform(machine.connected())
    }

    private func startTLS() {
        guard let ssl, let readEvent else { return }
        guard SSL_set_fd(ssl, fd) == 1 else {
            perform(machine.handshakeFailed(.tls("cannot attach the socket: \(TLSError.drainQueue())")))
            return
        }
        SSL_set_read_ahead(ssl, 1)
        _ = SSL_ctrl(ssl, SSL_CTRL_MODE, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), nil)
        event_add(readEvent, nil)
        handshake()
    }

    private func handshake() {
        guard let ssl else { return }
        ERR_clear_error()
        let r = SSL_connect(ssl)
        if r == 1 {
            perform(machine.handshakeFinished(now: EventLoop.monotonicNanos()))
            return
        }
        switch SSL_get_error(ssl, r) {
        case SSL_ERROR_WANT_READ:
            break  // the read event is always armed
        case SSL_ERROR_WANT_WRITE:
            armWrite()
        default:
            perform(machine.handshakeFailed(handshakeFailure()))
        }
    }

    /// Why the TLS handshake failed (the TCP connect had succeeded).
    private func handshakeFailure() -> UpstreamFailure {
        if let ssl, let why = TLSClientContext.verifyFailure(ssl) { return .tls(why) }
        let code = ERR_peek_error()
        if code != 0 { return .tls("handshake failed: \(TLSError.drainQueue())") }
        let err = errno
        return .tls(err != 0 && err != EAGAIN ? "handshake failed: \(String(cString: strerror(err)))"
                                              : "connection closed during the TLS handshake")
    }

    // MARK: - Calls

    /// Sends `call` on this (idle) connection.
    func start(_ call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        self.completion = completion
        perform(machine.start(call, now: EventLoop.monotonicNanos()))
    }

    /// The pool put the connection on its idle list (after `succeed` with keep-alive).
    func becomeIdle() {
        completion = nil
    }

    /// Writes what is left of the call; arms the write event if the socket cannot take it all.
    private func flush() {
        guard let ssl else { return }
        while !unsent.isEmpty {
            ERR_clear_error()
            let n = unsent.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32($0.count)) }
            if n > 0 {
                unsent = unsent.dropFirst(Int(n))
                continue
            }
            switch SSL_get_error(ssl, n) {
            case SSL_ERROR_WANT_WRITE:
                armWrite()
            case SSL_ERROR_WANT_READ:
                break  // retried from the read event
            default:
                unsent = []
                perform(machine.writeFailed(sslError(n)))
            }
            return
        }
        unsent = []
    }

    private func armWrite() {
        guard !writeArmed, let writeEvent else { return }
        writeArmed = event_add(writeEvent, nil) == 0
    }

    private func writable() {
        writeArmed = false
        switch machine.state {
        case .connecting: tcpConnected()
        case .handshaking: handshake()
        case .busy: flush()
        case .fresh, .idle, .closed: break
        }
    }

    private func readable() {
        switch machine.state {
        case .handshaking:
            handshake()
        case .busy:
            if !unsent.isEmpty { flush() }  // a write that waited for a read
            guard machine.state == .busy else { return }
            read()
        case .idle:
            read()  // a close, or bytes nobody asked for: the machine closes
        case .fresh, .connecting, .closed:
            break
        }
    }

    /// Reads while OpenSSL holds data (read-ahead may bring several records in one `read`);
    /// when it holds none, the next read waits for the socket, which epoll reports.
    private func read() {
        guard let ssl else { return }
        let scratch = pool.scratch
        while true {
            ERR_clear_error()
            let n = SSL_read(ssl, scratch.base, Int32(scratch.count))
            if n > 0 {
                let action = machine.received(UnsafeBufferPointer(start: scratch.base, count: Int(n)),
                                              now: EventLoop.monotonicNanos())
                if case .wait = action {
                    if SSL_pending(ssl) == 0 && SSL_has_pending(ssl) == 0 { return }
                    continue
                }
                perform(action)
                return
            }
            let error = SSL_get_error(ssl, n)
            // The server closed, with close_notify or without (a dirty shutdown is common).
            let closedByPeer = error == SSL_ERROR_ZERO_RETURN
                || (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && (n == 0 || errno == 0))
            switch error {
            case SSL_ERROR_WANT_READ:
                return
            case SSL_ERROR_WANT_WRITE:
                armWrite()
                return
            case _ where closedByPeer:
                perform(machine.peerClosed(now: EventLoop.monotonicNanos()))
                return
            default:
                perform(machine.readFailed(sslError(n)))
                return
            }
        }
    }

    /// OpenSSL's error queue, or the socket's errno, in words.
    private func sslError(_ result: Int32) -> String {
        if ERR_peek_error() != 0 { return TLSError.drainQueue() }
        let err = errno
        return err != 0 ? String(cString: strerror(err)) : "connection reset"
    }

    // MARK: - Closing

    /// The pool closes this connection (shutdown of an idle one).
    func close() {
        perform(machine.close())
    }

    /// Frees the events, the `SSL` and the socket (no more callbacks), then tells the pool.
    private func shut() {
        guard ssl != nil || fd >= 0 else { return }
        timer.follow(nil)
        release()
        pool.closed(self)
    }
}
