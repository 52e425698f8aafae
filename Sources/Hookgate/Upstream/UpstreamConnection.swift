import CLibevent
import COpenSSL
import Foundation

/// One persistent TLS connection to the upstream: an OpenSSL bufferevent and the call it
/// carries. Used on the loop thread only.
///
/// The TCP connect is made here (a non-blocking socket and a one-shot write event), and the
/// OpenSSL bufferevent is created on the connected socket: a refused or unreachable address
/// is then reported with the socket's own error, apart from a failed TLS handshake.
///
/// Ownership: the pool holds the connection strongly until `closed`. Before the TLS
/// bufferevent exists the connection owns the socket, the `SSL` and the connect event; from
/// then on the bufferevent owns the socket and the `SSL` (BEV_OPT_CLOSE_ON_FREE), and the
/// `SSL` holds its own reference to the `SSL_CTX`. Everything is freed in `close`, or `deinit`
/// at the latest. libevent callbacks get an unretained pointer to the connection, valid
/// because the bufferevent and the connect event (and with them every callback) are freed first.
final class UpstreamConnection {
    private enum State { case connecting, busy, idle, closed }

    private unowned let pool: UpstreamPool
    private var bev: OpaquePointer?
    /// Ours until handed to the bufferevent.
    private var ssl: OpaquePointer?
    private var fd: Int32 = -1
    private var connectEvent: OpaquePointer?
    private var address: SocketAddress?
    private var state: State = .connecting
    private var completion: UpstreamCompletion?
    private var pendingCall: UpstreamCall?
    private var parser: ResponseParser
    private var timer: LoopTimer?
    private var scratch = [UInt8](repeating: 0, count: 16 * 1024)

    /// Takes ownership of `ssl`.
    init(pool: UpstreamPool, ssl: OpaquePointer) {
        self.pool = pool
        self.ssl = ssl
        self.parser = ResponseParser(maxBodyBytes: pool.options.maxResponseBytes)
    }

    deinit { release() }

    /// Frees whatever C objects are still held (safe to call twice).
    private func release() {
        if let connectEvent {
            self.connectEvent = nil
            event_free(connectEvent)
        }
        if let bev {
            self.bev = nil
            bufferevent_free(bev)  // closes the socket, frees the SSL
        } else {
            if fd >= 0 { Foundation.close(fd) }
            if let ssl { SSL_free(ssl) }
        }
        fd = -1
        ssl = nil
    }

    private static func from(_ arg: UnsafeMutableRawPointer?) -> UpstreamConnection {
        Unmanaged<UpstreamConnection>.fromOpaque(arg!).takeUnretainedValue()
    }

    func connect(to address: SocketAddress, call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        self.completion = completion
        self.pendingCall = call
        self.address = address
        let connectTimeout = pool.options.connectTimeoutMs
        timer = pool.loop.timer(after: connectTimeout) { [unowned self] in
            self.fail(.connectTimeout(connectTimeout))
        }
        let family = address.withSockAddr { sa, _ in Int32(sa.pointee.sa_family) }
        fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            fail(.connect("cannot create a socket: \(String(cString: strerror(errno)))"))
            return
        }
        TCPOptions.setNoDelay(fd)
        let rc = address.withSockAddr { sa, len in Glibc.connect(fd, sa, socklen_t(len)) }
        if rc == 0 {
            startTLS()
            return
        }
        guard errno == EINPROGRESS else {
            fail(.connect("\(address): \(String(cString: strerror(errno)))"))
            return
        }
        connectEvent = event_new(pool.loop.base, fd, Int16(EV_WRITE), { _, _, arg in
            let c = UpstreamConnection.from(arg)
            withExtendedLifetime(c) { c.tcpConnected() }
        }, Unmanaged.passUnretained(self).toOpaque())
        guard let connectEvent, event_add(connectEvent, nil) == 0 else {
            fail(.connect("cannot watch the connecting socket"))
            return
        }
    }

    /// The socket became writable: the TCP connect finished, or failed with `SO_ERROR`.
    private func tcpConnected() {
        if let connectEvent {
            self.connectEvent = nil
            event_free(connectEvent)
        }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 { error = errno }
        guard error == 0 else {
            fail(.connect("\(address.map { "\($0)" } ?? "upstream"): \(String(cString: strerror(error)))"))
            return
        }
        startTLS()
    }

    /// Hands the connected socket and the `SSL` to an OpenSSL bufferevent: the handshake.
    private func startTLS() {
        guard let ssl else { return }
        let options = Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue)
        guard let bev = bufferevent_openssl_socket_new(pool.loop.base, fd, ssl, BUFFEREVENT_SSL_CONNECTING, options) else {
            fail(.connect("cannot create a TLS connection"))
            return
        }
        // The bufferevent owns both from here on.
        self.bev = bev
        self.ssl = nil
        fd = -1
        // Servers often close without close_notify; a body delimited by that close is fine.
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1)
        bufferevent_setcb(bev, { _, arg in
            let c = UpstreamConnection.from(arg)
            withExtendedLifetime(c) { c.readable() }
        }, nil, { _, what, arg in
            let c = UpstreamConnection.from(arg)
            withExtendedLifetime(c) { c.event(what) }
        }, Unmanaged.passUnretained(self).toOpaque())
        bufferevent_enable(bev, Int16(EV_READ | EV_WRITE))
    }

    /// Sends `call` on this (connected) connection.
    func start(_ call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        self.completion = completion
        send(call)
    }

    private func send(_ call: UpstreamCall) {
        guard let bev else { return }
        state = .busy
        parser = ResponseParser(maxBodyBytes: pool.options.maxResponseBytes)
        let timeout = pool.options.timeoutMs
        timer = pool.loop.timer(after: timeout) { [unowned self] in
            self.fail(.timeout(timeout))
        }
        let rc = call.head.withUnsafeBytes { bufferevent_write(bev, $0.baseAddress, $0.count) }
        guard rc == 0 else {
            fail(.closed("write failed"))
            return
        }
        bufferevent_enable(bev, Int16(EV_READ | EV_WRITE))
    }

    func becomeIdle() {
        state = .idle
        completion = nil
        // Watch an idle connection: data or a close from the server retires it.
        if let bev { bufferevent_enable(bev, Int16(EV_READ)) }
        let idleTimeout = pool.options.idleTimeoutMs
        timer = pool.loop.timer(after: idleTimeout) { [unowned self] in self.close() }
    }

    private func readable() {
        guard let bev, let input = bufferevent_get_input(bev) else { return }
        switch state {
        case .busy:
            while evbuffer_get_length(input) > 0 {
                let n = scratch.withUnsafeMutableBytes { evbuffer_remove(input, $0.baseAddress, $0.count) }
                guard n > 0 else { break }
                do {
                    if case .complete(let response) = try parser.feed(scratch[0..<Int(n)]) {
                        finish(response)
                        return
                    }
                } catch {
                    fail(.invalid(error.description))
                    return
                }
            }
        case .idle, .connecting:
            // Bytes nobody asked for: the connection can no longer be trusted.
            close()
        case .closed:
            break
        }
    }

    private func event(_ what: Int16) {
        let flags = Int32(what)
        if flags & Int32(BEV_EVENT_CONNECTED) != 0 {
            guard state == .connecting, let call = pendingCall else { return }
            pendingCall = nil
            timer?.cancel()
            send(call)
            return
        }
        guard flags & Int32(BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT) != 0 else { return }
        switch state {
        case .connecting:
            fail(connectFailure(flags))
        case .busy:
            if flags & Int32(BEV_EVENT_EOF) != 0 {
                // Read what is left, then let the parser judge a close-delimited body.
                readable()
                guard state == .busy else { return }
                do {
                    finish(try parser.finish())
                } catch {
                    fail(.closed(error.description))
                }
            } else {
                fail(.closed(sslOrSocketError() ?? "connection reset"))
            }
        case .idle:
            close()
        case .closed:
            break
        }
    }

    /// Why the TLS handshake failed (the TCP connect had succeeded).
    private func connectFailure(_ flags: Int32) -> UpstreamFailure {
        if let bev, let ssl = bufferevent_openssl_get_ssl(bev), let why = TLSClientContext.verifyFailure(ssl) {
            return .tls(why)
        }
        if let why = sslOrSocketError() { return .tls("handshake failed: \(why)") }
        return .tls(flags & Int32(BEV_EVENT_EOF) != 0 ? "connection closed during the TLS handshake" : "TLS handshake failed")
    }

    /// OpenSSL's error for this bufferevent if it has a real one. libevent also stores
    /// `SSL_get_error` codes there (library 0, e.g. 5 = SSL_ERROR_SYSCALL), which say nothing
    /// to a reader: those are skipped.
    private func sslOrSocketError() -> String? {
        guard let bev else { return nil }
        while true {
            let sslError = bufferevent_get_openssl_error(bev)
            if sslError == 0 { return nil }
            if sslError < (1 << 23) { continue }  // ERR_GET_LIB == 0: a stashed SSL_ERROR_* code
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(sslError, &buf, buf.count)
            return String(decoding: buf.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)
        }
    }

    private func finish(_ response: UpstreamResponse) {
        timer?.cancel()
        let done = completion
        completion = nil
        if response.keepAlive {
            if let bev { bufferevent_disable(bev, Int16(EV_WRITE)) }
            pool.release(self)
        } else {
            close()
        }
        done?(.success(response))
    }

    private func fail(_ failure: UpstreamFailure) {
        let done = completion
        completion = nil
        pendingCall = nil
        close()
        done?(.failure(failure))
    }

    /// Frees the bufferevent or the connecting socket (no more callbacks), then tells the pool.
    func close() {
        guard state != .closed else { return }
        state = .closed
        timer?.cancel()
        timer = nil
        release()
        pool.closed(self)
    }
}
