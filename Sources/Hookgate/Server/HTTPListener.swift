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
    private var connections: [ObjectIdentifier: ClientConnection] = [:]
    private(set) var acceptedConnections = 0
    /// Requests refused because they did not arrive whole in time.
    var timedOutRequests = 0
    private var paused = false
    private var acceptRetry: LoopTimer?
    private(set) var draining = false
    let dates = HTTPDate()

    package init(loop: EventLoop, address: String, port: Int, tls: TLSServerContext?, limits: Limits,
         handler: @escaping Handler) throws {
        self.loop = loop
        self.tls = tls
        self.limits = limits
        self.handler = handler
        let resolved = SocketAddress.resolve(host: address, port: port, passive: true)
        guard case .success(let addresses) = resolved, let address0 = addresses.first else {
            throw ServerError(description: "cannot listen on \(address):\(port): address not resolved")
        }
        let flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC
        let me = Unmanaged.passUnretained(self).toOpaque()
        listener = address0.withSockAddr { sa, len in
            evconnlistener_new_bind(loop.base, { _, fd, sa, len, arg in
                guard let arg else { return }
                let listener = Unmanaged<HTTPListener>.fromOpaque(arg).takeUnretainedValue()
                withExtendedLifetime(listener) { listener.accepted(fd: fd, address: sa, length: len) }
            }, me, UInt32(flags), Int32(SOMAXCONN), sa, len)
        }
        guard let listener else {
            throw ServerError(description: "cannot listen on \(address):\(port): \(String(cString: strerror(errno)))")
        }
        // The error callback gets the listener's user data: this listener.
        evconnlistener_set_error_cb(listener) { _, arg in
            guard let arg else { return }
            Unmanaged<HTTPListener>.fromOpaque(arg).takeUnretainedValue().acceptFailed()
        }
        boundPort = SocketAddress.localPort(of: evconnlistener_get_fd(listener))
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

    /// Stops accepting; idle connections close now, busy ones after their answer.
    func drain() {
        draining = true
        stopAccepting()
        for connection in Array(connections.values) { connection.drain() }
    }

    /// Closes the socket and every connection at once.
    package func close() {
        stopAccepting()
        for connection in Array(connections.values) { connection.close() }
        connections.removeAll()
    }

}
