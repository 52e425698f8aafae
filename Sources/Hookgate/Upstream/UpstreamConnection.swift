import CLibevent
import COpenSSL
import Foundation

/// One persistent TLS connection to the upstream: an OpenSSL bufferevent and the call it
/// carries. Used on the loop thread only.
///
/// Ownership: the pool holds the connection strongly until `closed`. The connection owns its
/// bufferevent (freed in `close`, or `deinit` at the latest); the bufferevent owns the `SSL`
/// (BEV_OPT_CLOSE_ON_FREE), and the `SSL` holds its own reference to the `SSL_CTX`. libevent
/// callbacks get an unretained pointer to the connection, valid because the bufferevent
/// (and with it every callback) is freed before the connection goes away.
final class UpstreamConnection {
    private enum State { case connecting, busy, idle, closed }

    private unowned let pool: UpstreamPool
    private var bev: OpaquePointer?
    private var state: State = .connecting
    private var completion: UpstreamCompletion?
    private var pendingCall: UpstreamCall?
    private var parser: ResponseParser
    private var timer: LoopTimer?
    private var scratch = [UInt8](repeating: 0, count: 16 * 1024)

    init(pool: UpstreamPool, ssl: OpaquePointer) {
        self.pool = pool
        self.parser = ResponseParser(maxBodyBytes: pool.options.maxResponseBytes)
        let options = Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue)
        bev = bufferevent_openssl_socket_new(pool.loop.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, options)
        if let bev {
            // Servers often close without close_notify; a body delimited by that close is fine.
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1)
            bufferevent_setcb(bev, { _, arg in
                UpstreamConnection.from(arg).readable()
            }, nil, { _, what, arg in
                UpstreamConnection.from(arg).event(what)
            }, Unmanaged.passUnretained(self).toOpaque())
        } else {
            SSL_free(ssl)  // not handed over: still ours
        }
    }

    deinit {
        if let bev { bufferevent_free(bev) }
    }

    private static func from(_ arg: UnsafeMutableRawPointer?) -> UpstreamConnection {
        Unmanaged<UpstreamConnection>.fromOpaque(arg!).takeUnretainedValue()
    }

    func connect(to address: SocketAddress, call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        self.completion = completion
        self.pendingCall = call
        guard let bev else {
            fail(.connect("cannot create a TLS connection"))
            return
        }
        let connectTimeout = pool.options.connectTimeoutMs
        timer = pool.loop.timer(after: connectTimeout) { [unowned self] in
            self.fail(.connectTimeout(connectTimeout))
        }
        let rc = address.withSockAddr { sa, len in bufferevent_socket_connect(bev, sa, len) }
        if rc != 0 {
            fail(.connect("\(address): \(String(cString: strerror(errno)))"))
            return
        }
        TCPOptions.setNoDelay(bufferevent_getfd(bev))
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

    private func connectFailure(_ flags: Int32) -> UpstreamFailure {
        if let bev, let ssl = bufferevent_openssl_get_ssl(bev), let why = TLSClientContext.verifyFailure(ssl) {
            return .tls(why)
        }
        if let why = sslOrSocketError() { return .connect(why) }
        return .connect(flags & Int32(BEV_EVENT_EOF) != 0 ? "connection closed during the TLS handshake" : "connection failed")
    }

    /// OpenSSL's error for this bufferevent if it has one, else the socket's errno.
    private func sslOrSocketError() -> String? {
        guard let bev else { return nil }
        let sslError = bufferevent_get_openssl_error(bev)
        if sslError != 0 {
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(sslError, &buf, buf.count)
            return String(decoding: buf.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)
        }
        let code = errno
        return code != 0 ? String(cString: strerror(code)) : nil
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

    /// Frees the bufferevent (no more callbacks), then tells the pool.
    func close() {
        guard state != .closed else { return }
        state = .closed
        timer?.cancel()
        timer = nil
        if let bev {
            self.bev = nil
            bufferevent_free(bev)
        }
        pool.closed(self)
    }
}
