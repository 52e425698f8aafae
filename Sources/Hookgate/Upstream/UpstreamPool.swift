import CLibevent
import COpenSSL
import Foundation

/// Why an upstream call did not produce a response. Every case maps to the contract's
/// 502 (`upstream_error`) or 504 (`upstream_timeout`).
public enum UpstreamFailure: Error, Equatable, Sendable, CustomStringConvertible {
    case unresolved(String)
    case connect(String)
    case tls(String)
    case connectTimeout(Int)
    case timeout(Int)
    case closed(String)
    case invalid(String)
    case noConnection(Int)
    case queueFull(Int)

    public var description: String {
        switch self {
        case .unresolved(let why): return "upstream address unknown: \(why)"
        case .connect(let why): return "upstream unreachable: \(why)"
        case .tls(let why): return "upstream TLS verification failed: \(why)"
        case .connectTimeout(let ms): return "upstream unreachable: no connection (TCP and TLS handshake) within \(ms) ms"
        case .timeout(let ms): return "upstream did not answer within \(ms) ms"
        case .closed(let why): return "upstream closed the connection: \(why)"
        case .invalid(let why): return why
        case .noConnection(let ms): return "no upstream connection became free within \(ms) ms"
        case .queueFull(let n): return "every upstream connection is busy and \(n) calls already wait for one (upstream.max_queue)"
        }
    }

    /// Whether any byte of the call may have reached Hookshot. When not (no address, no
    /// connection, a failed or stalled connect or TLS handshake), nothing was sent: 502, and
    /// the audit's `upstream_ms` stays null.
    public var reachedUpstream: Bool {
        switch self {
        case .timeout, .closed, .invalid: return true
        case .unresolved, .connect, .tls, .connectTimeout, .noConnection, .queueFull: return false
        }
    }

    /// 504 when Hookshot had the call and did not answer in time; 502 for everything else.
    public var refusal: Refusal {
        switch self {
        case .timeout: return .upstreamTimeout(description)
        default: return .upstreamError(description)
        }
    }
}

/// What the pool needs to know; built from `upstream.*` of the config.
public struct UpstreamOptions: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var connectTimeoutMs: Int
    public var timeoutMs: Int
    public var maxConnections: Int
    public var idleTimeoutMs: Int
    public var maxResponseBytes: Int
    public var queueTimeoutMs: Int
    public var maxQueued: Int

    public init(host: String, port: Int, connectTimeoutMs: Int = UpstreamDefaults.connectTimeoutMs,
                timeoutMs: Int = UpstreamDefaults.timeoutMs, maxConnections: Int = UpstreamDefaults.maxConnections,
                idleTimeoutMs: Int = UpstreamDefaults.idleTimeoutMs, maxResponseBytes: Int = UpstreamDefaults.maxResponseBytes,
                queueTimeoutMs: Int = UpstreamDefaults.queueTimeoutMs, maxQueued: Int = UpstreamDefaults.maxQueue) {
        self.host = host
        self.port = port
        self.connectTimeoutMs = connectTimeoutMs
        self.timeoutMs = timeoutMs
        self.maxConnections = maxConnections
        self.idleTimeoutMs = idleTimeoutMs
        self.maxResponseBytes = maxResponseBytes
        self.queueTimeoutMs = queueTimeoutMs
        self.maxQueued = maxQueued
    }

    /// The pool of `upstream.*` as configured.
    init(config up: UpstreamConfig) {
        self.init(host: up.host, port: up.port, connectTimeoutMs: up.connectTimeoutMs, timeoutMs: up.timeoutMs,
                  maxConnections: up.maxConnections, idleTimeoutMs: up.idleTimeoutMs,
                  maxResponseBytes: up.maxResponseBytes, queueTimeoutMs: up.queueTimeoutMs, maxQueued: up.maxQueue)
    }

    /// `Host` header value: the port only when it is not 443.
    var hostHeader: String { UpstreamOptions.hostHeader(host: host, port: port) }

    static func hostHeader(host: String, port: Int) -> String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == 443 ? h : "\(h):\(port)"
    }
}

/// One redeliver call to send: the bytes are built once, here, so that what goes upstream
/// is exactly the contract's request and nothing of the caller's.
public struct UpstreamCall {
    let head: [UInt8]

    /// A request exactly as given (the token request, built by `TokenProvider`).
    init(head: String) { self.head = Array(head.utf8) }

    public init(path: String, serviceToken: String, requestID: String, options: UpstreamOptions) {
        self.init(path: path, serviceToken: serviceToken, requestID: requestID, hostHeader: options.hostHeader)
    }

    init(path: String, serviceToken: String, requestID: String, hostHeader: String) {
        // Built as bytes (every forwarded call).
        var bytes = [UInt8]()
        bytes.reserveCapacity(320 + serviceToken.utf8.count)
        func add(_ s: String) { bytes.appendUTF8(s) }
        add("POST "); add(path); add(" HTTP/1.1\r\nHost: "); add(hostHeader)
        add("\r\nAuthorization: Bearer "); add(serviceToken)
        add("\r\nX-Request-Id: "); add(requestID)
        add("\r\nUser-Agent: hookgate/"); add(BuildInfo.version)
        add("\r\nAccept: application/json\r\nContent-Length: 0\r\n\r\n")
        head = bytes
    }
}

public typealias UpstreamCompletion = (Result<UpstreamResponse, UpstreamFailure>) -> Void

/// A bounded pool of persistent TLS connections to one upstream, used on the loop thread
/// only. A call is handed to exactly one connection and never re-sent: if that connection
/// fails after the call was given to it, the call fails (at most once upstream).
final class UpstreamPool {
    let loop: EventLoop
    let options: UpstreamOptions
    private let tls: TLSClientContext
    /// Resolved addresses (set off-loop by the resolver, applied on the loop).
    private(set) var addresses: [SocketAddress] = []
    var resolveError: String = "not resolved yet"
    private var nextAddress = 0

    private var connections: [ObjectIdentifier: UpstreamConnection] = [:]
    private var idle: [UpstreamConnection] = []
    private var queue = FIFO<QueuedCall>()

    private(set) var connectionsOpened = 0
    /// Where connections decrypt answers into before parsing (one per pool: loop thread only).
    let scratch = ScratchBuffer(count: 16 * 1024)

    init(loop: EventLoop, tls: TLSClientContext, options: UpstreamOptions) {
        self.loop = loop
        self.tls = tls
        self.options = options
    }

    var openConnections: Int { connections.count }
    var idleConnections: Int { idle.count }
    var queuedCalls: Int { queue.count }

    func setAddresses(_ list: [SocketAddress], error: String?) {
        if !list.isEmpty { addresses = list }
        if let error { resolveError = error }
    }

    func send(_ call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        guard !addresses.isEmpty else {
            completion(.failure(.unresolved(resolveError)))
            return
        }
        if let connection = idle.popLast() {
            connection.start(call, completion: completion)
            return
        }
        if connections.count < options.maxConnections {
            openConnection(for: call, completion: completion)
            return
        }
        guard queuedCalls < options.maxQueued else {
            completion(.failure(.queueFull(options.maxQueued)))
            return
        }
        let queued = QueuedCall(call: call, completion: completion)
        queued.timer = loop.timer(after: options.queueTimeoutMs) { [weak self, weak queued] in
            guard let self, let queued, !queued.taken else { return }
            queued.taken = true
            queued.completion(.failure(.noConnection(self.options.queueTimeoutMs)))
        }
        queue.append(queued)
    }

    /// Opens a connection for `call`, starting with the next address in turn. A TCP connect
    /// failure (nothing sent yet) moves on to the following address within the same connection
    /// (its pool slot held throughout), each tried once; nothing else is ever retried.
    private func openConnection(for call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        let start = nextAddress % addresses.count
        nextAddress &+= 1
        let candidates = Array(addresses[start...] + addresses[..<start])
        let ssl: OpaquePointer
        do {
            ssl = try tls.makeSSL(host: options.host)
        } catch {
            completion(.failure(.tls("\(error)")))
            return
        }
        let connection = UpstreamConnection(pool: self, ssl: ssl)
        connections[ObjectIdentifier(connection)] = connection
        connectionsOpened += 1
        connection.connect(to: candidates, call: call, completion: completion)
    }

    /// A connection finished its call and may be reused: it goes straight to the oldest
    /// queued call, if one still waits, else to the idle list.
    func release(_ connection: UpstreamConnection) {
        if let next = takeQueued() {
            connection.start(next.call, completion: next.completion)
            return
        }
        idle.append(connection)
        connection.becomeIdle()
    }

    /// A connection closed (for whatever reason); forget it and let a queued call open a new one.
    func closed(_ connection: UpstreamConnection) {
        connections.removeValue(forKey: ObjectIdentifier(connection))
        idle.removeAll { $0 === connection }
        if connections.count < options.maxConnections, let next = takeQueued() {
            openConnection(for: next.call, completion: next.completion)
        }
    }

    /// The oldest queued call that still waits (its queue timer cancelled), if any.
    private func takeQueued() -> QueuedCall? {
        while let next = queue.popFirst() {
            if next.taken { continue }
            next.taken = true
            next.timer?.cancel()
            return next
        }
        return nil
    }

    /// Closes every idle connection (shutdown); busy ones finish their call first.
    func closeIdle() {
        for connection in idle { connection.close() }
        idle.removeAll()
    }
}

private final class QueuedCall {
    let call: UpstreamCall
    let completion: UpstreamCompletion
    var timer: LoopTimer?
    var taken = false
    init(call: UpstreamCall, completion: @escaping UpstreamCompletion) {
        self.call = call
        self.completion = completion
    }
}

/// A resolved socket address (IPv4 or IPv6), stored as bytes so it is Sendable.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    /// A `sockaddr_storage` (aligned for any address family) and the length in use.
    private let storage: sockaddr_storage
    private let length: Int

    init(_ pointer: UnsafePointer<sockaddr>, length: Int) {
        var storage = sockaddr_storage()
        let length = min(length, MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutableBytes(of: &storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: length))
        }
        self.storage = storage
        self.length = length
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, Int32) -> R) -> R {
        withUnsafePointer(to: storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, Int32(length)) }
        }
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.length == b.length && withUnsafeBytes(of: a.storage) { x in
            withUnsafeBytes(of: b.storage) { y in x.prefix(a.length).elementsEqual(y.prefix(b.length)) }
        }
    }

    public var description: String {
        withSockAddr { sa, len in
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            var serv = [CChar](repeating: 0, count: Int(NI_MAXSERV))
            guard getnameinfo(sa, socklen_t(len), &host, socklen_t(host.count), &serv, socklen_t(serv.count),
                              NI_NUMERICHOST | NI_NUMERICSERV) == 0 else { return "?" }
            let h = String(decoding: host.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)
            let s = String(decoding: serv.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)
            return h.contains(":") ? "[\(h)]:\(s)" : "\(h):\(s)"
        }
    }

    /// The IP address alone (no port); an IPv4-mapped IPv6 address as plain IPv4.
    var host: String {
        withSockAddr { sa, len -> String in
            var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            switch Int32(sa.pointee.sa_family) {
            case AF_INET:
                sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                    var a = p.pointee.sin_addr
                    _ = inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
                }
            case AF_INET6:
                sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var a = p.pointee.sin6_addr
                    _ = inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
                }
            default:
                return ""
            }
            let text = String(decoding: buf.prefix { $0 != 0 }.map(UInt8.init(bitPattern:)), as: UTF8.self)
            if text.hasPrefix("::ffff:"), text.contains(".") { return String(text.dropFirst(7)) }
            return text
        }
    }

    /// The port a bound socket listens on.
    static func localPort(of fd: Int32) -> Int {
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

    /// Blocking getaddrinfo: call it off the loop (start-up, or the resolver thread).
    /// `passive`: addresses to listen on.
    static func resolve(host: String, port: Int, passive: Bool = false) -> Result<[SocketAddress], ResolveError> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        if passive { hints.ai_flags = AI_PASSIVE }
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            return .failure(ResolveError(message: "cannot resolve \(host): \(String(cString: gai_strerror(rc)))"))
        }
        defer { freeaddrinfo(first) }
        var out: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            if let sa = ai.pointee.ai_addr { out.append(SocketAddress(sa, length: Int(ai.pointee.ai_addrlen))) }
            cursor = ai.pointee.ai_next
        }
        return out.isEmpty ? .failure(ResolveError(message: "no address for \(host)")) : .success(out)
    }
}

struct ResolveError: Error, Sendable { let message: String }

/// A fixed block of bytes, reused (loop thread only). Owns its allocation, freed in deinit.
final class ScratchBuffer {
    let base: UnsafeMutablePointer<UInt8>
    let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(capacity: count)
    }

    deinit { base.deallocate() }
}
