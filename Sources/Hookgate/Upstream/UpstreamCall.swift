// Threads: any (values).

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
