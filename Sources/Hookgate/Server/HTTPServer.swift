import CLibevent
import COpenSSL
import Foundation

public struct ServerError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// An evhttp listener on the loop. Plain HTTP, or TLS terminated with a `TLSServerContext`.
///
/// evhttp has no connection cap and only an idle timer, so the server tracks every
/// connection itself: it creates each connection's bufferevent (evhttp's `bevcb`, called on
/// accept), adopts the evhttp connection on the next loop turn (its close callback then
/// tells us when it goes), pauses accepting at `maxConnections` (new connections wait in
/// the kernel's backlog) and drops a client that has not sent a whole request within
/// `requestDeadlineMs` of connecting or of its previous answer (slowloris).
///
/// Ownership: owns its `evhttp` (freed in `close()`/`deinit`, which closes the bound socket
/// and every connection). evhttp callbacks get an unretained pointer to the server, valid
/// because the evhttp dies first.
final class HTTPServer {
    typealias Handler = (IncomingRequest) -> Void

    struct Limits {
        var maxConnections = Int.max
        var requestDeadlineMs: Int? = nil
        var backstopHeaderBytes = 64 * 1024
        var backstopBodyBytes = 1 << 20
        var idleTimeoutSeconds = 60
    }

    private let loop: EventLoop
    private var http: OpaquePointer?
    private let handler: Handler
    private var tls: TLSServerContext?
    private var limits: Limits
    private(set) var boundPort: Int = 0
    private var boundSocket: OpaquePointer?
    private var clients: [OpaquePointer: ClientConnection] = [:]
    private(set) var openConnections = 0
    private(set) var acceptedConnections = 0
    private(set) var droppedSlowClients = 0
    private var paused = false

    /// evhttp's own limits are a backstop only (it answers them itself, without our headers
    /// or audit): the configured limits are enforced by the handler, below these.
    init(loop: EventLoop, address: String, port: Int, tls: TLSServerContext?, limits: Limits = Limits(),
         handler: @escaping Handler) throws {
        self.loop = loop
        self.handler = handler
        self.tls = tls
        self.limits = limits
        guard let http = evhttp_new(loop.base) else { throw ServerError(description: "evhttp_new failed") }
        self.http = http
        let methods = [EVHTTP_REQ_GET, EVHTTP_REQ_POST, EVHTTP_REQ_HEAD, EVHTTP_REQ_PUT, EVHTTP_REQ_DELETE,
                       EVHTTP_REQ_OPTIONS, EVHTTP_REQ_TRACE, EVHTTP_REQ_CONNECT, EVHTTP_REQ_PATCH]
            .reduce(UInt32(0)) { $0 | $1.rawValue }
        evhttp_set_allowed_methods(http, UInt16(methods))
        evhttp_set_max_headers_size(http, limits.backstopHeaderBytes)
        evhttp_set_max_body_size(http, limits.backstopBodyBytes)
        evhttp_set_timeout(http, Int32(limits.idleTimeoutSeconds))
        let me = Unmanaged.passUnretained(self).toOpaque()
        evhttp_set_gencb(http, { req, arg in
            guard let req, let arg else { return }
            Unmanaged<HTTPServer>.fromOpaque(arg).takeUnretainedValue().received(req)
        }, me)
        evhttp_set_bevcb(http, { base, arg in
            Unmanaged<HTTPServer>.fromOpaque(arg!).takeUnretainedValue().accepted(base)
        }, me)
        guard let handle = evhttp_bind_socket_with_handle(http, address, UInt16(port)) else {
            throw ServerError(description: "cannot listen on \(address):\(port): \(String(cString: strerror(errno)))")
        }
        boundSocket = handle
        boundPort = HTTPServer.localPort(of: evhttp_bound_socket_get_fd(handle))
    }

    /// evhttp accepted a connection and asks for its bufferevent.
    private func accepted(_ base: OpaquePointer?) -> OpaquePointer? {
        let bev: OpaquePointer?
        if let tls {
            guard let ssl = tls.makeSSL() else { return nil }
            // The bufferevent owns the SSL from here on (freed with the connection).
            bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                 Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        } else {
            bev = bufferevent_socket_new(base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        }
        guard let bev else { return nil }
        openConnections += 1
        acceptedConnections += 1
        if openConnections >= limits.maxConnections { pauseAccepting() }
        // evhttp wires the connection to this bufferevent after we return; adopt it on the
        // next turn. Our reference keeps the bufferevent valid even if it closes first.
        bufferevent_incref(bev)
        loop.soon { [unowned self] in self.adopt(bev) }
        return bev
    }

    private func adopt(_ bev: OpaquePointer) {
        defer { bufferevent_decref(bev) }
        var arg: UnsafeMutableRawPointer?
        bufferevent_getcb(bev, nil, nil, nil, &arg)
        guard let arg, http != nil else {
            connectionGone()  // closed before we could adopt it
            return
        }
        let evcon = OpaquePointer(arg)
        let client = ClientConnection(evcon: evcon, server: self)
        clients[evcon] = client
        evhttp_connection_set_closecb(evcon, { evcon, arg in
            guard let evcon, let arg else { return }
            Unmanaged<HTTPServer>.fromOpaque(arg).takeUnretainedValue().closed(evcon)
        }, Unmanaged.passUnretained(self).toOpaque())
        client.armDeadline()
        // A TLS reply leaves as one record per buffer chunk (head, body): without
        // TCP_NODELAY, Nagle holds the second until the peer's delayed ACK (~40 ms).
        TCPOptions.setNoDelay(bufferevent_getfd(bev))
    }

    private func closed(_ evcon: OpaquePointer) {
        if let client = clients.removeValue(forKey: evcon) { client.cancelDeadline() }
        connectionGone()
    }

    private func connectionGone() {
        openConnections -= 1
        if paused && openConnections < limits.maxConnections { resumeAccepting() }
    }

    private func pauseAccepting() {
        guard !paused, let boundSocket, let listener = evhttp_bound_socket_get_listener(boundSocket) else { return }
        paused = evconnlistener_disable(listener) == 0
    }

    private func resumeAccepting() {
        guard paused else { return }
        paused = false
        if let boundSocket, let listener = evhttp_bound_socket_get_listener(boundSocket) { evconnlistener_enable(listener) }
    }

    private func received(_ req: OpaquePointer) {
        var client: ClientConnection?
        if let evcon = evhttp_request_get_connection(req) {
            client = clients[evcon]
            client?.cancelDeadline()
        }
        handler(IncomingRequest(req, client: client))
    }

    fileprivate func dropSlowClient(_ evcon: OpaquePointer) {
        droppedSlowClients += 1
        evhttp_connection_free(evcon)  // calls our close callback
    }

    var requestDeadlineMs: Int? { limits.requestDeadlineMs }

    /// New limits after a reload: they apply to the next accept and the next request.
    func update(_ newLimits: Limits) {
        limits = newLimits
        if let http {
            evhttp_set_max_headers_size(http, newLimits.backstopHeaderBytes)
            evhttp_set_max_body_size(http, newLimits.backstopBodyBytes)
            evhttp_set_timeout(http, Int32(newLimits.idleTimeoutSeconds))
        }
        if openConnections >= limits.maxConnections {
            pauseAccepting()
        } else if paused {
            resumeAccepting()
        }
    }
    var eventLoop: EventLoop { loop }

    /// Swaps the certificate for new connections (SIGHUP after a renewal).
    func replaceTLS(_ context: TLSServerContext) { tls = context }

    /// Stops accepting new connections; open ones carry on.
    func stopAccepting() {
        if let http, let boundSocket {
            evhttp_del_accept_socket(http, boundSocket)
            self.boundSocket = nil
            paused = false
        }
    }

    func close() {
        if let http {
            self.http = nil
            // evhttp_free closes every connection: detach our close callbacks first, so that
            // none calls back into a server that may be in its deinit.
            for (evcon, client) in clients {
                client.cancelDeadline()
                evhttp_connection_set_closecb(evcon, nil, nil)
            }
            clients.removeAll()
            evhttp_free(http)
        }
    }

    deinit { close() }

    private static func localPort(of fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return 0 }
        return withUnsafePointer(to: &storage) { p -> Int in
            if p.pointee.ss_family == sa_family_t(AF_INET6) {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }
}

/// One client connection of an `HTTPServer` (loop thread only): its request deadline.
/// It does not own the evhttp connection (evhttp does); the server forgets it in the
/// connection's close callback.
final class ClientConnection {
    private let evcon: OpaquePointer
    private unowned let server: HTTPServer
    private var deadline: LoopTimer?

    init(evcon: OpaquePointer, server: HTTPServer) {
        self.evcon = evcon
        self.server = server
    }

    /// From now, the client has `requestDeadlineMs` to deliver a whole request.
    func armDeadline() {
        guard let ms = server.requestDeadlineMs else { return }
        deadline?.cancel()
        deadline = server.eventLoop.timer(after: ms) { [unowned self] in
            self.deadline = nil
            self.server.dropSlowClient(self.evcon)
        }
    }

    func cancelDeadline() {
        deadline?.cancel()
        deadline = nil
    }
}

/// One request received by evhttp; valid on the loop thread until `respond` is called,
/// which must happen exactly once (evhttp frees the request after sending the reply, or
/// at once if the client has gone).
final class IncomingRequest {
    private let req: OpaquePointer
    private weak var client: ClientConnection?
    private(set) var responded = false

    init(_ req: OpaquePointer, client: ClientConnection? = nil) {
        self.req = req
        self.client = client
    }

    var method: String {
        switch evhttp_request_get_command(req) {
        case EVHTTP_REQ_GET: return "GET"
        case EVHTTP_REQ_POST: return "POST"
        case EVHTTP_REQ_HEAD: return "HEAD"
        case EVHTTP_REQ_PUT: return "PUT"
        case EVHTTP_REQ_DELETE: return "DELETE"
        case EVHTTP_REQ_OPTIONS: return "OPTIONS"
        case EVHTTP_REQ_TRACE: return "TRACE"
        case EVHTTP_REQ_CONNECT: return "CONNECT"
        case EVHTTP_REQ_PATCH: return "PATCH"
        default: return "UNKNOWN"
        }
    }

    /// The raw request-target of the request line.
    var target: String {
        guard let uri = evhttp_request_get_uri(req) else { return "" }
        return String(cString: uri)
    }

    /// Every header field as received, in order (read from evhttp once).
    private(set) lazy var headers: [(name: String, value: String)] = {
        var out: [(String, String)] = []
        guard let list = evhttp_request_get_input_headers(req) else { return out }
        var node = list.pointee.tqh_first
        while let kv = node {
            if let k = kv.pointee.key, let v = kv.pointee.value {
                out.append((String(cString: k), String(cString: v)))
            }
            node = kv.pointee.next.tqe_next
        }
        return out
    }()

    /// Values of header `name` (case-insensitive), in order.
    func headerValues(_ name: String) -> [String] {
        headers.compactMap { ASCII.equalsIgnoringCase($0.name, name) ? $0.value : nil }
    }

    /// Bytes of the head as received (approximation: request line + fields + CRLFs).
    var headBytes: Int {
        headers.reduce(method.utf8.count + target.utf8.count + 12) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 } + 2
    }

    var bodyLength: Int {
        guard let buf = evhttp_request_get_input_buffer(req) else { return 0 }
        return evbuffer_get_length(buf)
    }

    var body: [UInt8] {
        guard let buf = evhttp_request_get_input_buffer(req) else { return [] }
        let n = evbuffer_get_length(buf)
        var out = [UInt8](repeating: 0, count: n)
        _ = out.withUnsafeMutableBytes { evbuffer_copyout(buf, $0.baseAddress, n) }
        return out
    }

    /// The peer's IP address, without port.
    var peerAddress: String {
        guard let conn = evhttp_request_get_connection(req) else { return "" }
        var host: UnsafeMutablePointer<CChar>? = nil
        var port: UInt16 = 0
        evhttp_connection_get_peer(conn, &host, &port)
        guard let host else { return "" }
        return String(cString: host)
    }

    /// Drops the client's connection without an answer (the simulator's "close" mode).
    func abortConnection() {
        precondition(!responded, "a request must be answered exactly once")
        responded = true
        if let conn = evhttp_request_get_connection(req) {
            evhttp_connection_free(conn)  // frees the request too
        } else {
            evhttp_request_free(req)
        }
    }

    /// Sends the reply and hands the request back to evhttp. Safe if the client has gone.
    /// `written`, if given, runs on the loop once the reply has been written out (used while
    /// draining, so that the process does not exit with a reply still in a buffer). It may
    /// never run if the client vanishes mid-write: callers bound their wait.
    func respond(status: Int, reason: String? = nil, headers: [(String, String)], body: [UInt8],
                 written: (() -> Void)? = nil) {
        precondition(!responded, "a request must be answered exactly once")
        responded = true
        if let out = evhttp_request_get_output_headers(req) {
            for (name, value) in headers { evhttp_add_header(out, name, value) }
        }
        guard let buffer = evbuffer_new() else {
            evhttp_send_error(req, 500, nil)
            return
        }
        defer { evbuffer_free(buffer) }
        if !body.isEmpty {
            _ = body.withUnsafeBytes { evbuffer_add(buffer, $0.baseAddress, $0.count) }
        }
        if let written {
            // Retained here, released by the callback (libevent calls it at most once).
            let box = Unmanaged.passRetained(WrittenBox(written)).toOpaque()
            evhttp_request_set_on_complete_cb(req, { _, arg in
                guard let arg else { return }
                Unmanaged<WrittenBox>.fromOpaque(arg).takeRetainedValue().run()
            }, box)
        }
        evhttp_send_reply(req, Int32(status), reason ?? HTTPStatus.reason(status), buffer)
        // The next request on this connection has its own deadline (the client may be gone:
        // the weak reference is then nil).
        client?.armDeadline()
    }
}

private final class WrittenBox {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

enum HTTPStatus {
    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        default: return "Status \(status)"
        }
    }
}

enum TCPOptions {
    static func setNoDelay(_ fd: Int32) {
        guard fd >= 0 else { return }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }
}
