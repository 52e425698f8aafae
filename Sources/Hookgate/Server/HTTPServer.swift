import CLibevent
import COpenSSL
import Foundation

public struct ServerError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// An evhttp listener on the loop. Plain HTTP, or TLS terminated with a `TLSServerContext`.
///
/// Ownership: owns its `evhttp` (freed in `close()`/`deinit`, which also closes the bound
/// socket and every connection). evhttp callbacks get an unretained pointer to the server,
/// valid because the evhttp dies first.
final class HTTPServer {
    typealias Handler = (IncomingRequest) -> Void

    private var http: OpaquePointer?
    private let handler: Handler
    private var tls: TLSServerContext?
    private(set) var boundPort: Int = 0
    private var boundSocket: OpaquePointer?

    /// evhttp's own limits are a backstop only (it answers them itself, without our headers
    /// or audit): the configured limits are enforced by the handler, below these.
    init(loop: EventLoop, address: String, port: Int, tls: TLSServerContext?,
         backstopHeaderBytes: Int = 64 * 1024, backstopBodyBytes: Int = 1 << 20,
         idleTimeoutSeconds: Int = 60, handler: @escaping Handler) throws {
        self.handler = handler
        self.tls = tls
        guard let http = evhttp_new(loop.base) else { throw ServerError(description: "evhttp_new failed") }
        self.http = http
        let methods = [EVHTTP_REQ_GET, EVHTTP_REQ_POST, EVHTTP_REQ_HEAD, EVHTTP_REQ_PUT, EVHTTP_REQ_DELETE,
                       EVHTTP_REQ_OPTIONS, EVHTTP_REQ_TRACE, EVHTTP_REQ_CONNECT, EVHTTP_REQ_PATCH]
            .reduce(UInt32(0)) { $0 | $1.rawValue }
        evhttp_set_allowed_methods(http, UInt16(methods))
        evhttp_set_max_headers_size(http, backstopHeaderBytes)
        evhttp_set_max_body_size(http, backstopBodyBytes)
        evhttp_set_timeout(http, Int32(idleTimeoutSeconds))
        let me = Unmanaged.passUnretained(self).toOpaque()
        evhttp_set_gencb(http, { req, arg in
            guard let req, let arg else { return }
            let server = Unmanaged<HTTPServer>.fromOpaque(arg).takeUnretainedValue()
            // A TLS reply leaves as one record per buffer chunk (head, body): without
            // TCP_NODELAY, Nagle holds the second until the peer's delayed ACK (~40 ms).
            if let conn = evhttp_request_get_connection(req), let bev = evhttp_connection_get_bufferevent(conn) {
                TCPOptions.setNoDelay(bufferevent_getfd(bev))
            }
            server.handler(IncomingRequest(req))
        }, me)
        if tls != nil {
            evhttp_set_bevcb(http, { base, arg in
                let server = Unmanaged<HTTPServer>.fromOpaque(arg!).takeUnretainedValue()
                return server.makeTLSBufferevent(base)
            }, me)
        }
        guard let handle = evhttp_bind_socket_with_handle(http, address, UInt16(port)) else {
            throw ServerError(description: "cannot listen on \(address):\(port): \(String(cString: strerror(errno)))")
        }
        boundSocket = handle
        boundPort = HTTPServer.localPort(of: evhttp_bound_socket_get_fd(handle))
    }

    private func makeTLSBufferevent(_ base: OpaquePointer?) -> OpaquePointer? {
        guard let tls, let ssl = tls.makeSSL() else { return nil }
        // The bufferevent owns the SSL from here on (freed with the connection).
        return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                              Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
    }

    /// Swaps the certificate for new connections (SIGHUP after a renewal).
    func replaceTLS(_ context: TLSServerContext) { tls = context }

    /// Stops accepting new connections; open ones carry on.
    func stopAccepting() {
        if let http, let boundSocket {
            evhttp_del_accept_socket(http, boundSocket)
            self.boundSocket = nil
        }
    }

    func close() {
        if let http {
            self.http = nil
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

/// One request received by evhttp; valid on the loop thread until `respond` is called,
/// which must happen exactly once (evhttp frees the request after sending the reply, or
/// at once if the client has gone).
final class IncomingRequest {
    private let req: OpaquePointer
    private(set) var responded = false

    init(_ req: OpaquePointer) { self.req = req }

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

    /// Every header field as received, in order.
    var headers: [(name: String, value: String)] {
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
    }

    /// Values of header `name` (case-insensitive), in order.
    func headerValues(_ name: String) -> [String] {
        headers.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }.map(\.value)
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
