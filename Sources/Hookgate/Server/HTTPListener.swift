import CLibevent
import COpenSSL
import Foundation

// Threads: the loop thread only (libevent listener and its connections).

public struct ServerError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// A listening socket on the loop (libevent's `evconnlistener`) and the connections it
/// accepted, each read by Hookgate's own HTTP/1.1 layer (`ClientConnection`): every byte a
/// client sends is parsed here, and every request — well-formed or not — reaches the handler,
/// which answers it. Plain HTTP, or TLS terminated with a `TLSServerContext`.
///
/// At `maxConnections` open connections the listener stops accepting (new connections wait in
/// the kernel's backlog) and resumes when one closes. An accept error (out of descriptors)
/// pauses accepting for 100 ms instead of spinning.
///
/// Ownership: owns its `evconnlistener` (freed in `stopAccepting()`/`close()`/`deinit`, which
/// closes the socket) and its connections (each owns its bufferevent). libevent callbacks get
/// an unretained pointer to the listener, valid because the evconnlistener dies first.
package final class HTTPListener {
    package typealias Handler = (ServerRequest) -> Void

    package struct Limits: Equatable {
        package var maxConnections = 1024
        package var connection = ConnectionStateMachine.Limits()
        package init(maxConnections: Int = 1024, connection: ConnectionStateMachine.Limits = ConnectionStateMachine.Limits()) {
            self.maxConnections = maxConnections
            self.connection = connection
        }
    }

    let loop: EventLoop
    private var listener: OpaquePointer?
    let handler: Handler
    private var tls: TLSServerContext?
    private(set) var limits: Limits
    package private(set) var boundPort = 0
    /// The address it listens on, as text (`127.0.0.1:8080`, `[::]:8080`, a Unix path).
    package private(set) var localAddress = ""
    /// The socket came from the service manager, which keeps a copy open.
    package private(set) var inherited = false
    private var connections: [ObjectIdentifier: ClientConnection] = [:]
    private(set) var acceptedConnections = 0
    /// Requests refused because they did not arrive whole in time.
    var timedOutRequests = 0
    private var paused = false
    private var acceptRetry: LoopTimer?
    private(set) var draining = false
    let dates = HTTPDate()

    /// Where the listening socket comes from.
    package enum Socket {
        /// Bound here; `reusePort`: with `SO_REUSEPORT`, beside other listeners on the port.
        case bind(address: String, port: Int, reusePort: Bool)
        /// Already bound and listening, passed by the service manager (socket activation).
        /// The listener takes the descriptor over and closes it when freed.
        case inherited(fd: Int32)
    }

    package convenience init(loop: EventLoop, address: String, port: Int, tls: TLSServerContext?, limits: Limits,
                             handler: @escaping Handler) throws {
        try self.init(loop: loop, socket: .bind(address: address, port: port, reusePort: false), tls: tls, limits: limits,
                      handler: handler)
    }

    package init(loop: EventLoop, socket: Socket, tls: TLSServerContext?, limits: Limits, handler: @escaping Handler) throws {
        self.loop = loop
        self.tls = tls
        self.limits = limits
        self.handler = handler
        let me = Unmanaged.passUnretained(self).toOpaque()
        let accept: evconnlistener_cb = { _, fd, sa, len, arg in
            guard let arg else { return }
            let listener = Unmanaged<HTTPListener>.fromOpaque(arg).takeUnretainedValue()
            withExtendedLifetime(listener) { listener.accepted(fd: fd, address: sa, length: len) }
        }
        switch socket {
        case .bind(let address, let port, let reusePort):
            let resolved = SocketAddress.resolve(host: address, port: port, passive: true)
            guard case .success(let addresses) = resolved, let address0 = addresses.first else {
                throw ServerError(description: "cannot listen on \(address):\(port): address not resolved")
            }
            let flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC | (reusePort ? LEV_OPT_REUSEABLE_PORT : 0)
            listener = address0.withSockAddr { sa, len in
                evconnlistener_new_bind(loop.base, accept, me, UInt32(flags), Int32(SOMAXCONN), sa, len)
            }
            guard listener != nil else {
                throw ServerError(description: "cannot listen on \(address):\(port): \(String(cString: strerror(errno)))")
            }
        case .inherited(let fd):
            inherited = true
            // Backlog 0: already listening (with the backlog its socket unit set).
            guard evutil_make_socket_nonblocking(fd) == 0,
                  let created = evconnlistener_new(loop.base, accept, me, UInt32(LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC), 0, fd) else {
                throw ServerError(description: "cannot serve on inherited socket \(fd): \(String(cString: strerror(errno)))")
            }
            listener = created
        }
        // The error callback gets the listener's user data: this listener.
        evconnlistener_set_error_cb(listener) { _, arg in
            guard let arg else { return }
            Unmanaged<HTTPListener>.fromOpaque(arg).takeUnretainedValue().acceptFailed()
        }
        boundPort = SocketAddress.localPort(of: evconnlistener_get_fd(listener))
        localAddress = SocketAddress.local(of: evconnlistener_get_fd(listener))
    }

    deinit { close() }

    var openConnections: Int { connections.count }

    private func accepted(fd: Int32, address: UnsafeMutablePointer<sockaddr>?, length: Int32) {
        let peer = address.map { SocketAddress($0, length: Int(length)).host } ?? ""
        TCPOptions.setNoDelay(fd)
        var ssl: OpaquePointer? = nil
        if let tls {
            ssl = tls.makeSSL()
            if ssl == nil {
                Foundation.close(fd)
                return
            }
        }
        guard let connection = try? ClientConnection(listener: self, fd: fd, peer: peer, ssl: ssl) else {
            Foundation.close(fd)  // the SSL, if any, was freed by the connection's init
            return
        }
        connections[ObjectIdentifier(connection)] = connection
        acceptedConnections += 1
        if connections.count >= limits.maxConnections { pause() }
        connection.start()
    }

    private func acceptFailed() {
        // Typically EMFILE/ENFILE: accept again a little later rather than spin on the event.
        guard !paused, let listener else { return }
        evconnlistener_disable(listener)
        acceptRetry = loop.timer(after: 100) { [unowned self] in
            self.acceptRetry = nil
            if !self.paused, let listener = self.listener { evconnlistener_enable(listener) }
        }
    }

    /// A connection closed; forget it.
    func closed(_ connection: ClientConnection) {
        connections.removeValue(forKey: ObjectIdentifier(connection))
        if paused && connections.count < limits.maxConnections { resume() }
        if draining && connections.isEmpty { whenDrained?() }
    }

    private func pause() {
        guard !paused, let listener else { return }
        paused = evconnlistener_disable(listener) == 0
    }

    private func resume() {
        guard paused else { return }
        paused = false
        if let listener { evconnlistener_enable(listener) }
    }

    /// New limits after a reload: for new connections, and the cap at once.
    func update(_ newLimits: Limits) {
        limits = newLimits
        if connections.count >= limits.maxConnections { pause() } else if paused { resume() }
    }

    /// Swaps the certificate for new connections (SIGHUP after a renewal).
    func replaceTLS(_ context: TLSServerContext) { tls = context }

    /// Closes the listening socket; open connections carry on.
    func stopAccepting() {
        acceptRetry = nil
        if let listener {
            self.listener = nil
            evconnlistener_free(listener)
        }
    }

    /// Stops accepting. Connections the kernel had already completed are accepted first, unless
    /// the socket stays open in the service manager (its next process takes them): closing a
    /// listening socket resets the connections still queued on it. Then idle keep-alive
    /// connections close now; the others after their answer (ConnectionStateMachine.drain).
    func drain() {
        draining = true
        if !inherited { acceptQueued() }
        stopAccepting()
        for connection in Array(connections.values) { connection.drain() }
        if connections.isEmpty { whenDrained?() }
    }

    /// Run once draining and the last connection has closed.
    var whenDrained: (() -> Void)?

    /// Accepts what is queued on the socket now, as the listener's read event would.
    private func acceptQueued() {
        guard let listener else { return }
        let fd = evconnlistener_get_fd(listener)
        while connections.count < limits.maxConnections {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Foundation.accept(fd, $0, &length)
                }
            }
            guard client >= 0 else { return }
            _ = evutil_make_socket_nonblocking(client)
            _ = evutil_make_socket_closeonexec(client)
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accepted(fd: client, address: $0, length: Int32(length)) }
            }
        }
    }

    /// Closes the socket and every connection at once.
    package func close() {
        stopAccepting()
        for connection in Array(connections.values) { connection.close() }
        connections.removeAll()
    }

}
