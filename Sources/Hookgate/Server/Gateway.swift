import Foundation
import Logging

/// The gateway: its lifecycle (start, drain, stop) and what it owns — the caller listener, the
/// admin listener, policy, the upstream pool, the audit writer. Everything here runs on the loop
/// thread but `serve`'s start-up and the reload's file reading (Reload.swift), which happen off it.
///
/// A call's way, one file per step:
///   accept   Server/HTTPListener.swift, ClientConnection.swift (driven by ConnectionStateMachine.swift)
///   parse    Server/RequestParser.swift
///   decide   Server/Pipeline.swift `handle` → Policy/Decide.swift (Route, Credentials, RateLimiter)
///   audit    Server/Pipeline.swift `record` / `conclude` → Audit/AuditWriter.swift (its own thread)
///   upstream Server/Pipeline.swift `forward` → Upstream/UpstreamPool.swift (driven by
///            UpstreamPoolStateMachine.swift), UpstreamConnection.swift (driven by
///            UpstreamConnectionStateMachine.swift), ResponseParser.swift
///   answer   Server/Pipeline.swift `send` → Server/ResponseHead.swift, RequestLogLine.swift
public final class Gateway {
    let loop: EventLoop
    var config: GatewayConfig
    var policy: Policy
    var limiter: RateLimiter
    /// `shared_limits`: team and global buckets in Redis (nil: `limiter` decides alone).
    let sharedLimits: SharedLimits?
    /// `audit.ship`: the central copy in PostgreSQL, on its own thread (nil: none).
    let shipper: AuditShipper?
    let tokens: TokenProvider
    /// The upstream `Host` header, made once.
    let upstreamHostHeader: String
    let pool: UpstreamPool
    let audit: AuditWriter
    var server: HTTPListener?
    var admin: HTTPListener?
    var signals: [SignalWatcher] = []
    var resolvers: [Resolver] = []
    var drainTimer: LoopTimer?
    let configPath: String
    let logger: Logger
    let metrics = Metrics()
    private(set) var draining = false
    var inFlight = 0
    /// Request ids for calls (loop thread only).
    let requestIDs = RequestIDSource()
    /// Where each request's log line is built (loop thread only).
    let logBuffer = ByteBuffer(capacity: 1024)


    /// `loop` is the caller's, who keeps it alive until this gateway (and every event it
    /// created on it) is gone: an event must never outlive its base.
    init(loop: EventLoop, configPath: String, config: GatewayConfig, material: ServiceTokenMaterial, logger: Logger) throws {
        self.configPath = configPath
        self.config = config
        self.policy = Policy(config: config)
        self.limiter = RateLimiter(policy: policy)
        self.logger = logger
        self.loop = loop
        sharedLimits = try config.sharedLimits.map { shared in
            let password = try shared.redis.password.map { try SecretLoader.read($0, what: "shared_limits.redis.password") }
            return SharedLimits(loop: loop, config: shared, password: password, maxPending: config.limits.maxConnections, logger: logger)
        }
        shipper = try config.audit.ship.map { ship in
            let password = try ship.password.map { try SecretLoader.read($0, what: "audit.ship.password") }
            return AuditShipper(path: config.audit.path, config: ship, password: password, logger: logger)
        }
        let tls = try TLSClientContext(caFile: config.upstream.caFile)
        tokens = TokenProvider(loop: loop, material: material, tls: tls, logger: logger)
        upstreamHostHeader = UpstreamOptions.hostHeader(host: config.upstream.host, port: config.upstream.port)
        pool = UpstreamPool(loop: loop, tls: tls, options: UpstreamOptions(config: config.upstream))
        audit = try AuditWriter(loop: loop, config: config.audit, onRecovery: { [logger] in
            logger.info("audit log writable again: calls are recorded and served")
        }, onNotice: { [logger] notice in
            logger.info("\(notice)")
        }) { [logger] why in
            logger.error("audit write failed: calls are refused with 503 until it recovers", metadata: ["error": "\(why)"])
        }
    }

    /// `hookgate serve`: runs until SIGTERM/SIGINT has drained the gateway. Returns the exit code.
    public static func serve(configPath: String) -> Int32 {
        ProcessSignals.prepare()
        let logger = Logger(label: "hookgate")
        let config: GatewayConfig
        do {
            config = try GatewayConfig.load(path: configPath)
        } catch {
            for problem in error.problems {
                logger.error("invalid configuration", metadata: ["config.path": "\(problem.path)", "problem": "\(problem.message)"])
            }
            LineWriter.stderr.flush()
            return 1
        }
        let loop = EventLoop()
        return withExtendedLifetime(loop) {
            let gateway: Gateway
            do {
                let material = try ServiceTokenMaterial.load(config.upstream.serviceToken)
                let inherited = try InheritedSockets.take { logger.warning("\($0)") }
                gateway = try Gateway(loop: loop, configPath: configPath, config: config, material: material, logger: logger)
                try gateway.start(inherited: inherited)
            } catch {
                logger.error("cannot start", metadata: ["error": "\(error)"])
                LineWriter.stderr.flush()
                return 1
            }
            loop.run()
            gateway.audit.flushAndStop()
            gateway.shipper?.stop()
            gateway.logger.info("stopped", metadata: ["in_flight": .stringConvertible(gateway.inFlight)])
            LineWriter.stderr.flush()
            return 0
        }
    }

    /// Opens the listeners (on `inherited` sockets where given) and starts the loop's work.
    func start(inherited: InheritedSockets = .none) throws {
        resolvers = [Resolver(loop: loop, host: config.upstream.host, port: config.upstream.port, pool: LoopBound(pool, on: loop), logger: logger)]
        if let tokenPool = tokens.tokenPool {
            resolvers.append(Resolver(loop: loop, host: tokenPool.options.host, port: tokenPool.options.port,
                                      pool: LoopBound(tokenPool, on: loop), logger: logger))
        }
        for resolver in resolvers { resolver.start(waitFirstMs: 2000) }
        tokens.start()
        sharedLimits?.start()
        shipper?.start()
        let listenTLS = try config.listen.tls.map { try TLSServerContext(certFile: $0.certFile, keyFile: $0.keyFile) }
        let listen = config.listen
        let server = try HTTPListener(
            loop: loop, socket: inherited.main.map { .inherited(fd: $0) } ?? .bind(address: listen.address, port: listen.port, reusePort: listen.reusePort),
            tls: listenTLS, limits: Self.listenerLimits(config.limits)) { [unowned self] req in
            self.handle(req)
        }
        let admin = try HTTPListener(
            loop: loop, socket: inherited.admin.map { .inherited(fd: $0) } ?? .bind(address: config.admin.address, port: config.admin.port, reusePort: false),
            tls: nil, limits: Self.adminLimits) { [unowned self] req in
            self.handleAdmin(req)
        }
        self.server = server
        self.admin = admin
        signals = [
            SignalWatcher(loop: loop, signal: SIGTERM) { [unowned self] in self.beginDrain(signal: "SIGTERM") },
            SignalWatcher(loop: loop, signal: SIGINT) { [unowned self] in self.beginDrain(signal: "SIGINT") },
            SignalWatcher(loop: loop, signal: SIGHUP) { [unowned self] in self.reload() },
        ]
        for (name, listener, port) in [("listen", server, listen.port), ("admin", admin, config.admin.port)]
        where listener.inherited && port != 0 && listener.boundPort != port {
            logger.warning("the inherited socket, not \(name).port, is used", metadata: [
                "\(name).port": .stringConvertible(port), "socket": "\(listener.localAddress)"])
        }
        logger.info("listening", metadata: [
            "listen.address": "\(config.listen.address)", "listen.port": .stringConvertible(server.boundPort),
            "listen.tls": .stringConvertible(config.listen.tls != nil), "listen.socket": "\(server.localAddress)",
            "listen.inherited": .stringConvertible(server.inherited), "listen.reuse_port": .stringConvertible(listen.reusePort && !server.inherited),
            "admin.address": "\(config.admin.address)", "admin.port": .stringConvertible(admin.boundPort),
            "admin.inherited": .stringConvertible(admin.inherited),
            "upstream": "\(config.upstream.baseURL)", "config.version": "\(config.version)",
            "teams": .stringConvertible(config.teams.count), "libraries": "\(BuildInfo.libraries)", "version": "\(BuildInfo.version)",
        ])
    }

    static func listenerLimits(_ limits: LimitsConfig) -> HTTPListener.Limits {
        HTTPListener.Limits(maxConnections: limits.maxConnections, connection: ConnectionStateMachine.Limits(
            parser: RequestParser.Limits(maxHeadBytes: limits.maxHeaderBytes, maxBodyBytes: limits.maxBodyBytes),
            requestDeadlineMs: limits.clientTimeoutMs, lingerMs: limits.lingerMs))
    }

    /// The admin listener: loopback scrapes and probes, small and bounded.
    static let adminLimits = HTTPListener.Limits(maxConnections: 64, connection: ConnectionStateMachine.Limits(
        parser: RequestParser.Limits(maxHeadBytes: 8192, maxBodyBytes: 4096), requestDeadlineMs: 10_000, lingerMs: 1000))

    func notReadyReasons() -> [String] {
        var reasons: [String] = []
        if draining { reasons.append("draining") }
        if case .failure(let unavailable) = tokens.current() { reasons.append(unavailable.description) }
        if let shared = sharedLimits, shared.config.onUnavailable == .refuse, let why = shared.unavailableReason {
            reasons.append("shared limits unavailable: \(why)")
        }
        let auditStatus = audit.currentStatus
        if !auditStatus.healthy { reasons.append("audit log not writable: \(auditStatus.lastError ?? "unknown error")") }
        return reasons
    }

    var inFlightCalls: Int { inFlight }

    var clientConnections: (open: Int, accepted: Int, dropped: Int) {
        (server?.openConnections ?? 0, server?.acceptedConnections ?? 0, server?.timedOutRequests ?? 0)
    }

    // MARK: - Signals

    func beginDrain(signal: String) {
        guard !draining else { return }
        draining = true
        logger.info("draining", metadata: ["signal": "\(signal)", "in_flight": .stringConvertible(inFlight)])
        server?.whenDrained = { [unowned self] in self.drainProgress() }
        server?.drain()
        drainTimer = loop.timer(after: config.limits.drainTimeoutMs) { [unowned self] in
            self.logger.warning("drain timeout: exiting with calls in flight", metadata: ["in_flight": .stringConvertible(self.inFlight)])
            self.shutdown()
        }
        drainProgress()
    }

    /// While draining, replies are tracked until written, so that exit never cuts one off.
    var unwrittenReplies = 0
    func drainWriteTracker() -> (() -> Void)? {
        guard draining else { return nil }
        unwrittenReplies += 1
        return { [unowned self] in
            self.unwrittenReplies -= 1
            self.drainProgress()
        }
    }

    func drainProgress() {
        guard draining, inFlight == 0, unwrittenReplies == 0, server?.openConnections ?? 0 == 0 else { return }
        shutdown()
    }

    func shutdown() {
        drainTimer?.cancel()
        // Let the last replies leave before the listeners go: close on the next iteration.
        loop.execute { [bound = LoopBound(self, on: loop)] in
            let gateway = bound.value
            gateway.server?.close()
            gateway.admin?.close()
            gateway.pool.closeIdle()
            gateway.signals.forEach { $0.cancel() }
            gateway.resolvers.forEach { $0.stop() }
            gateway.sharedLimits?.stop()
            gateway.loop.stop()
        }
    }

}
