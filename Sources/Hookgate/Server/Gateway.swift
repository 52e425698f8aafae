import Foundation
import Logging

/// A value handed between threads on the promise that only the loop thread touches it
/// (the checker cannot see that promise; keep every use on the loop).
struct LoopBound<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One caller request on its way through the gateway (loop thread only).
final class Exchange {
    let request: IncomingRequest
    let id: String
    let receivedAt: Date
    let started: UInt64
    let method: String
    let target: String
    let clientAddress: String
    let clientRequestID: String?
    let userAgent: String?
    var verdict = Verdict(outcome: .failure(.notFound()))
    var upstreamStatus: Int?
    var upstreamMs: Double?
    var forwarded = false
    var configVersion: String?

    init(request: IncomingRequest, id: String) {
        self.request = request
        self.id = id
        self.receivedAt = Date()
        self.started = EventLoop.monotonicNanos()
        self.method = request.method
        self.target = request.target
        self.clientAddress = request.peerAddress
        self.clientRequestID = request.headerValues("X-Request-Id").first.map { String($0.prefix(200)) }
        self.userAgent = request.headerValues("User-Agent").first.map { String($0.prefix(512)) }
    }
}

/// The gateway: the caller listener, the admin listener, policy, the upstream pool.
/// Everything here runs on the loop thread; start-up and config reads happen off it.
public final class Gateway {
    let loop: EventLoop
    private(set) var config: GatewayConfig
    private(set) var policy: Policy
    private var limiter: RateLimiter
    let tokens: TokenProvider
    /// The upstream `Host` header, made once.
    private let upstreamHostHeader: String
    let pool: UpstreamPool
    let audit: AuditWriter
    private var server: HTTPServer?
    private var admin: HTTPServer?
    private var signals: [SignalWatcher] = []
    private var drainTimer: LoopTimer?
    private let configPath: String
    let logger: Logger
    let metrics = Metrics()
    private(set) var draining = false
    private var inFlight = 0
    /// Request ids for calls (loop thread only).
    private let requestIDs = RequestIDSource()


    /// `loop` is the caller's, who keeps it alive until this gateway (and every event it
    /// created on it) is gone: an event must never outlive its base.
    init(loop: EventLoop, configPath: String, config: GatewayConfig, material: ServiceTokenMaterial, logger: Logger) throws {
        self.configPath = configPath
        self.config = config
        self.policy = Policy(config: config)
        self.limiter = RateLimiter(policy: policy)
        self.logger = logger
        self.loop = loop
        let tls = try TLSClientContext(caFile: config.upstream.caFile)
        tokens = TokenProvider(loop: loop, material: material, tls: tls, logger: logger)
        upstreamHostHeader = UpstreamOptions.hostHeader(host: config.upstream.host, port: config.upstream.port)
        let up = config.upstream
        pool = UpstreamPool(loop: loop, tls: tls, options: UpstreamOptions(
            host: up.host, port: up.port, connectTimeoutMs: up.connectTimeoutMs, timeoutMs: up.timeoutMs,
            maxConnections: up.maxConnections, idleTimeoutMs: up.idleTimeoutMs, maxResponseBytes: up.maxResponseBytes,
            queueTimeoutMs: up.queueTimeoutMs, maxQueued: up.maxQueue))
        audit = try AuditWriter(loop: loop, config: config.audit) { [logger] why in
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
                gateway = try Gateway(loop: loop, configPath: configPath, config: config, material: material, logger: logger)
                try gateway.start()
            } catch {
                logger.error("cannot start", metadata: ["error": "\(error)"])
                LineWriter.stderr.flush()
                return 1
            }
            loop.run()
            gateway.audit.flushAndStop()
            gateway.logger.info("stopped", metadata: ["in_flight": .stringConvertible(gateway.inFlight)])
            LineWriter.stderr.flush()
            return 0
        }
    }

    func start() throws {
        let resolver = Resolver(loop: loop, host: config.upstream.host, port: config.upstream.port, pool: LoopBound(pool), logger: logger)
        resolver.start(waitFirstMs: 2000)
        if let tokenPool = tokens.tokenPool {
            Resolver(loop: loop, host: tokenPool.options.host, port: tokenPool.options.port, pool: LoopBound(tokenPool),
                     logger: logger).start(waitFirstMs: 2000)
        }
        tokens.start()
        let listenTLS = try config.listen.tls.map { try TLSServerContext(certFile: $0.certFile, keyFile: $0.keyFile) }
        let limits = Self.serverLimits(config.limits)
        server = try HTTPServer(loop: loop, address: config.listen.address, port: config.listen.port, tls: listenTLS,
                                limits: limits) { [unowned self] req in
            self.handle(req)
        }
        admin = try HTTPServer(loop: loop, address: config.admin.address, port: config.admin.port, tls: nil) { [unowned self] req in
            self.handleAdmin(req)
        }
        signals = [
            SignalWatcher(loop: loop, signal: SIGTERM) { [unowned self] in self.beginDrain(signal: "SIGTERM") },
            SignalWatcher(loop: loop, signal: SIGINT) { [unowned self] in self.beginDrain(signal: "SIGINT") },
            SignalWatcher(loop: loop, signal: SIGHUP) { [unowned self] in self.reload() },
        ]
        logger.info("listening", metadata: [
            "listen.address": "\(config.listen.address)", "listen.port": .stringConvertible(server?.boundPort ?? 0),
            "listen.tls": .stringConvertible(config.listen.tls != nil),
            "admin.address": "\(config.admin.address)", "admin.port": .stringConvertible(admin?.boundPort ?? 0),
            "upstream": "\(config.upstream.baseURL)", "config.version": "\(config.version)",
            "teams": .stringConvertible(config.teams.count), "libraries": "\(BuildInfo.libraries)", "version": "\(BuildInfo.version)",
        ])
    }

    private static func serverLimits(_ limits: LimitsConfig) -> HTTPServer.Limits {
        var l = HTTPServer.Limits()
        l.maxConnections = limits.maxConnections
        l.requestDeadlineMs = limits.clientTimeoutMs
        l.backstopHeaderBytes = max(64 * 1024, limits.maxHeaderBytes * 2)
        l.backstopBodyBytes = max(1 << 20, limits.maxBodyBytes * 4)
        return l
    }

    // MARK: - Caller requests

    private func handle(_ req: IncomingRequest) {
        let exchange = Exchange(request: req, id: requestIDs.make())
        inFlight += 1
        if draining {
            refuse(exchange, .draining())
            return
        }
        if req.headBytes > config.limits.maxHeaderBytes {
            refuse(exchange, Refusal(.tooLarge, status: 431, title: "Request Header Fields Too Large",
                                     detail: "request headers exceed \(config.limits.maxHeaderBytes) bytes"))
            return
        }
        if req.bodyLength > config.limits.maxBodyBytes {
            refuse(exchange, Refusal(.tooLarge, status: 413, title: "Content Too Large",
                                     detail: "request body exceeds \(config.limits.maxBodyBytes) bytes"))
            return
        }
        let facts = RequestFacts(method: exchange.method, target: exchange.target,
                                 authorization: req.headerValues("Authorization"))
        exchange.verdict = decide(facts, policy: policy, limiter: &limiter, now: EventLoop.monotonicNanos())
        exchange.configVersion = policy.configVersion
        switch exchange.verdict.outcome {
        case .failure(let refusal):
            refuse(exchange, refusal)
        case .success(let plan):
            // Write-ahead: the request record is durable before anything goes upstream.
            record(exchange, [.request(requestRecord(exchange, decision: .forwarded))]) { [unowned self] in
                self.forward(exchange, plan)
            }
        }
    }

    /// A refusal: the request and response records in one commit, then the answer.
    private func refuse(_ exchange: Exchange, _ refusal: Refusal) {
        let items: [AuditWriter.Item] = [
            .request(requestRecord(exchange, decision: refusal.decision)),
            .response(responseRecord(exchange, decision: refusal.decision, status: refusal.status,
                                     detail: refusal.detail, upstream: nil)),
        ]
        record(exchange, items) { [unowned self] in
            self.send(exchange, refusal: refusal)
        }
    }

    private func forward(_ exchange: Exchange, _ plan: ForwardPlan) {
        let token: String
        switch tokens.current() {
        case .success(let t):
            token = t
        case .failure(let unavailable):
            // Without a valid token nothing is sent upstream.
            let refusal = Refusal.upstreamError(unavailable.description)
            record(exchange, [.response(responseRecord(exchange, decision: refusal.decision, status: refusal.status,
                                                       detail: refusal.detail, upstream: nil))]) { [unowned self] in
                self.send(exchange, refusal: refusal)
            }
            return
        }
        let call = UpstreamCall(path: plan.target.path, serviceToken: token, requestID: exchange.id,
                                hostHeader: upstreamHostHeader)
        let sentAt = EventLoop.monotonicNanos()
        exchange.forwarded = true
        pool.send(call) { [unowned self] result in
            let ms = Double(EventLoop.monotonicNanos() - sentAt) / 1_000_000
            exchange.upstreamMs = ms
            switch result {
            case .success(let response):
                exchange.upstreamStatus = response.status
                self.metrics.observeUpstream(seconds: ms / 1000, status: response.status)
                if response.status == 401 {
                    self.tokens.upstreamRejected(token)
                    let refusal = Refusal.upstreamError(
                        "Hookshot refused the gateway's service token (upstream 401); the caller's key is not at fault")
                    self.record(exchange, [.response(self.responseRecord(exchange, decision: refusal.decision, status: 502,
                                                                        detail: refusal.detail, upstream: response))]) {
                        self.send(exchange, refusal: refusal)
                    }
                } else {
                    self.record(exchange, [.response(self.responseRecord(exchange, decision: .forwarded, status: response.status,
                                                                        detail: nil, upstream: response))]) {
                        self.relay(exchange, response, plan)
                    }
                }
            case .failure(let failure):
                self.metrics.observeUpstreamFailure(failure)
                let refusal = failure.refusal
                self.record(exchange, [.response(self.responseRecord(exchange, decision: refusal.decision, status: refusal.status,
                                                                    detail: refusal.detail, upstream: nil))]) {
                    self.send(exchange, refusal: refusal)
                }
            }
        }
    }

    /// Hands records to the audit writer; `then` runs once they are durable. If they cannot
    /// be recorded the caller gets 503 and nothing more happens (fail closed).
    private func record(_ exchange: Exchange, _ items: [AuditWriter.Item], then: @escaping () -> Void) {
        let accepted = audit.submit(items) { [unowned self] result in
            switch result {
            case .success: then()
            case .failure(let error): self.auditFailed(exchange, why: error.description)
            }
        }
        if !accepted { auditFailed(exchange, why: "the audit queue is full (audit.max_queue)") }
    }

    private func auditFailed(_ exchange: Exchange, why: String) {
        let detail = exchange.forwarded
            ? "the call reached Hookshot but its outcome could not be recorded in the audit log; check before retrying"
            : "the audit log cannot record the request, so it was not forwarded; retry later"
        metrics.countAuditRefusal()
        send(exchange, refusal: .auditUnavailable(detail), auditError: why)
    }

    private func requestRecord(_ exchange: Exchange, decision: DecisionWord) -> AuditRequestRecord {
        let verdict = exchange.verdict
        let path: String
        if let plan = verdict.plan {
            path = plan.target.path
        } else if let hook = verdict.hookID, let event = verdict.eventRequestID {
            path = RedeliverTarget(hookID: hook, requestID: event).path
        } else {
            // As received, without the query, capped (byte-wise: no grapheme breaking).
            let utf8 = exchange.target.utf8
            let end = utf8.firstIndex(of: UInt8(ascii: "?")) ?? utf8.endIndex
            path = String(decoding: utf8[utf8.startIndex..<end].prefix(2048), as: UTF8.self)
        }
        return AuditRequestRecord(
            requestID: exchange.id, receivedAt: Timestamp.rfc3339(exchange.receivedAt), clientAddr: exchange.clientAddress,
            team: verdict.team, keyFingerprint: verdict.keyFingerprint, method: exchange.method, path: path,
            hookID: verdict.hookID, eventRequestID: verdict.eventRequestID, decision: decision.rawValue,
            userAgent: exchange.userAgent, clientRequestID: exchange.clientRequestID,
            configVersion: exchange.configVersion ?? policy.configVersion)
    }

    private func responseRecord(_ exchange: Exchange, decision: DecisionWord, status: Int, detail: String?,
                                upstream: UpstreamResponse?) -> AuditResponseRecord {
        AuditResponseRecord(
            requestID: exchange.id, completedAt: Timestamp.rfc3339(Date()), decision: decision.rawValue, status: status,
            upstreamStatus: upstream?.status, upstreamMs: exchange.upstreamMs.map(Self.rounded),
            totalMs: Self.rounded(Double(EventLoop.monotonicNanos() - exchange.started) / 1_000_000),
            upstreamContentType: upstream?.header("Content-Type"), upstreamBody: upstream?.body, detail: detail)
    }

    /// Hookshot's answer, unchanged: status, body and Content-Type.
    private func relay(_ exchange: Exchange, _ response: UpstreamResponse, _ plan: ForwardPlan) {
        var headers: [(String, String)] = [("X-Request-Id", exchange.id)]
        if let type = response.header("Content-Type") { headers.append(("Content-Type", type)) }
        for h in plan.rateLimitHeaders { headers.append((h.name, h.value)) }
        exchange.request.respond(status: response.status, reason: response.reason.isEmpty ? nil : response.reason,
                                 headers: headers, body: response.body, written: drainWriteTracker())
        complete(exchange, status: response.status, decision: .forwarded)
    }

    private func send(_ exchange: Exchange, refusal: Refusal, auditError: String? = nil) {
        if refusal.decision == .rateLimited {
            let scope = refusal.headers.contains { $0.name == "RateLimit" && $0.value.hasPrefix("\"global\"") } ? "global" : "team"
            metrics.countRateLimited(team: exchange.verdict.team, scope: scope)
        }
        var headers: [(String, String)] = [("Content-Type", ProblemRenderer.contentType), ("X-Request-Id", exchange.id)]
        for h in refusal.headers { headers.append((h.name, h.value)) }
        exchange.request.respond(status: refusal.status, headers: headers,
                                 body: ProblemRenderer.body(refusal, requestID: exchange.id), written: drainWriteTracker())
        complete(exchange, status: refusal.status, decision: refusal.decision, detail: auditError ?? refusal.detail)
    }

    private func complete(_ exchange: Exchange, status: Int, decision: DecisionWord, detail: String? = nil) {
        inFlight -= 1
        let totalMs = Double(EventLoop.monotonicNanos() - exchange.started) / 1_000_000
        metrics.countRequest(team: exchange.verdict.team, decision: decision, status: status)
        // The per-request line is built directly (it runs for every call; swift-log's
        // metadata dictionary costs several times more), in the same JSON shape as the others.
        var line = RequestLogLine()
        line.text("request.id", exchange.id)
        line.text("client.addr", exchange.clientAddress)
        line.text("method", exchange.method)
        line.text("path", exchange.verdict.plan?.target.path ?? String(exchange.target.prefix(256)))
        line.text("decision", decision.rawValue)
        line.number("status", Double(status))
        line.number("duration_ms", Self.rounded(totalMs))
        if let team = exchange.verdict.team { line.text("team", team) }
        if let fp = exchange.verdict.keyFingerprint { line.text("key.fingerprint", fp) }
        if let hook = exchange.verdict.hookID { line.text("hook", hook) }
        if let up = exchange.upstreamStatus { line.number("upstream.status", Double(up)) }
        if let ms = exchange.upstreamMs { line.number("upstream.ms", Self.rounded(ms)) }
        if let detail, decision != .forwarded { line.text("detail", detail) }
        if let crid = exchange.clientRequestID { line.text("client.request_id", crid) }
        LineWriter.stderr.write(line.finish())
        drainProgress()
    }

    private static func rounded(_ ms: Double) -> Double { (ms * 1000).rounded() / 1000 }

    // MARK: - Admin listener

    private func handleAdmin(_ req: IncomingRequest) {
        let path = String(req.target.prefix { $0 != "?" })
        guard req.method == "GET" || req.method == "HEAD" else {
            req.respond(status: 405, headers: [("Allow", "GET"), ("Content-Type", "text/plain; charset=utf-8")],
                        body: Array("method not allowed\n".utf8))
            return
        }
        switch path {
        case "/healthz":
            req.respond(status: 200, headers: [("Content-Type", "application/json")], body: Array(#"{"status":"ok"}"#.utf8))
        case "/readyz":
            let reasons = notReadyReasons()
            let body = reasons.isEmpty
                ? #"{"status":"ready"}"#
                : "{\"status\":\"not_ready\",\"reasons\":[\(reasons.map(JSON.string).joined(separator: ","))]}"
            req.respond(status: reasons.isEmpty ? 200 : 503, headers: [("Content-Type", "application/json")],
                        body: Array(body.utf8))
        case "/metrics":
            let text = metrics.render(gateway: self)
            req.respond(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                        body: Array(text.utf8))
        default:
            req.respond(status: 404, headers: [("Content-Type", "text/plain; charset=utf-8")], body: Array("not found\n".utf8))
        }
    }

    func notReadyReasons() -> [String] {
        var reasons: [String] = []
        if draining { reasons.append("draining") }
        if case .failure(let unavailable) = tokens.current() { reasons.append(unavailable.description) }
        let auditStatus = audit.currentStatus
        if !auditStatus.healthy { reasons.append("audit log not writable: \(auditStatus.lastError ?? "unknown error")") }
        return reasons
    }

    var inFlightCalls: Int { inFlight }

    var clientConnections: (open: Int, accepted: Int, dropped: Int) {
        (server?.openConnections ?? 0, server?.acceptedConnections ?? 0, server?.droppedSlowClients ?? 0)
    }

    // MARK: - Signals

    private func beginDrain(signal: String) {
        guard !draining else { return }
        draining = true
        logger.info("draining", metadata: ["signal": "\(signal)", "in_flight": .stringConvertible(inFlight)])
        server?.stopAccepting()
        drainTimer = loop.timer(after: config.limits.drainTimeoutMs) { [unowned self] in
            self.logger.warning("drain timeout: exiting with calls in flight", metadata: ["in_flight": .stringConvertible(self.inFlight)])
            self.shutdown()
        }
        drainProgress()
    }

    /// While draining, replies are tracked until written, so that exit never cuts one off.
    private var unwrittenReplies = 0
    private func drainWriteTracker() -> (() -> Void)? {
        guard draining else { return nil }
        unwrittenReplies += 1
        return { [unowned self] in
            self.unwrittenReplies -= 1
            self.drainProgress()
        }
    }

    private func drainProgress() {
        guard draining, inFlight == 0, unwrittenReplies == 0 else { return }
        shutdown()
    }

    private func shutdown() {
        drainTimer?.cancel()
        // Let the last replies leave before the listeners go: close on the next iteration.
        loop.execute { [bound = LoopBound(self)] in
            let gateway = bound.value
            gateway.server?.close()
            gateway.admin?.close()
            gateway.pool.closeIdle()
            gateway.signals.forEach { $0.cancel() }
            gateway.loop.stop()
        }
    }

    /// SIGHUP: read and validate the file off the loop, then swap the policy on it.
    private func reload() {
        let path = configPath
        let bound = LoopBound(self)
        Thread.detachNewThread {
            let result: Result<Reloaded, ConfigError>
            do throws(ConfigError) {
                let config = try GatewayConfig.load(path: path)
                // A token or secret file is re-read; an unreadable one rejects the reload.
                let material: ServiceTokenMaterial
                do {
                    material = try ServiceTokenMaterial.load(config.upstream.serviceToken)
                } catch {
                    throw ConfigError(problems: [ConfigProblem(path: "upstream.service_token", message: "\(error)")])
                }
                var listenTLS: TLSServerContext? = nil
                if let files = config.listen.tls {
                    do {
                        listenTLS = try TLSServerContext(certFile: files.certFile, keyFile: files.keyFile)
                    } catch {
                        throw ConfigError(problems: [ConfigProblem(path: "listen.tls", message: "\(error)")])
                    }
                }
                result = .success(Reloaded(config: config, material: material, listenTLS: listenTLS))
            } catch {
                result = .failure(error)
            }
            let outcome = LoopBound(result)
            bound.value.loop.execute { bound.value.applyReload(outcome.value) }
        }
    }

    private struct Reloaded {
        var config: GatewayConfig
        var material: ServiceTokenMaterial
        var listenTLS: TLSServerContext?
    }

    private func applyReload(_ result: Result<Reloaded, ConfigError>) {
        switch result {
        case .failure(let error):
            metrics.countReload(ok: false)
            for problem in error.problems {
                logger.error("reload rejected: invalid configuration, the old one stays in force",
                             metadata: ["config.path": "\(problem.path)", "problem": "\(problem.message)"])
            }
        case .success(let reloaded):
            let newConfig = reloaded.config
            var restart: [String] = []
            if newConfig.listen != config.listen { restart.append("listen") }
            if newConfig.admin != config.admin { restart.append("admin") }
            if newConfig.audit.path != config.audit.path { restart.append("audit.path") }
            var auditKept = newConfig.audit
            auditKept.path = config.audit.path
            if auditKept != config.audit { restart.append("audit") }
            // Every upstream setting but the token source (handled below) is fixed at start.
            var upstreamKept = newConfig.upstream
            upstreamKept.serviceToken = config.upstream.serviceToken
            if upstreamKept != config.upstream { restart.append("upstream") }
            let sameTokenKind: Bool
            switch (newConfig.upstream.serviceToken, config.upstream.serviceToken) {
            case (.oauth2(let a), .oauth2(let b)): sameTokenKind = a.tokenURL == b.tokenURL && a.clientID == b.clientID
            case (.oauth2, _), (_, .oauth2): sameTokenKind = false
            default: sameTokenKind = true
            }
            if sameTokenKind {
                tokens.replace(reloaded.material)
            } else {
                restart.append("upstream.service_token")
            }
            // A renewed listener certificate applies to new connections.
            if let tls = reloaded.listenTLS, newConfig.listen.tls != nil, config.listen.tls != nil { server?.replaceTLS(tls) }
            let newPolicy = Policy(config: newConfig)
            limiter = limiter.reconfigured(for: newPolicy)
            policy = newPolicy
            var kept = newConfig
            // Parts that need a restart keep their running values.
            kept.listen = config.listen
            kept.admin = config.admin
            kept.audit = config.audit
            kept.upstream = config.upstream
            if newConfig.limits != config.limits { server?.update(Self.serverLimits(newConfig.limits)) }
            config = kept
            metrics.countReload(ok: true)
            var meta: Logger.Metadata = ["config.version": "\(newConfig.version)", "teams": .stringConvertible(newConfig.teams.count)]
            if !restart.isEmpty { meta["needs_restart"] = "\(restart.joined(separator: ","))" }
            logger.info("configuration reloaded", metadata: meta)
        }
    }
}

/// Resolves the upstream host off the loop: once at start (waiting briefly so the first
/// calls find an address), then every 30 s, handing each result to the pool on the loop.
final class Resolver: @unchecked Sendable {
    private let loop: EventLoop
    private let host: String
    private let port: Int
    private let pool: LoopBound<UpstreamPool>
    private let logger: Logger
    static let intervalSeconds: UInt32 = 30

    init(loop: EventLoop, host: String, port: Int, pool: LoopBound<UpstreamPool>, logger: Logger) {
        self.loop = loop
        self.host = host
        self.port = port
        self.pool = pool
        self.logger = logger
    }

    func start(waitFirstMs: Int) {
        let first = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            var signalled = false
            var lastError: String? = nil
            while true {
                let result = SocketAddress.resolve(host: host, port: port)
                let bound = LoopBound(result)
                let pool = self.pool
                loop.execute {
                    switch bound.value {
                    case .success(let list): pool.value.setAddresses(list, error: nil)
                    case .failure(let error): pool.value.setAddresses([], error: error.message)
                    }
                }
                if case .failure(let error) = result, error.message != lastError {
                    logger.warning("upstream address not resolved", metadata: ["error": "\(error.message)"])
                    lastError = error.message
                } else if case .success = result {
                    lastError = nil
                }
                if !signalled { signalled = true; first.signal() }
                sleep(Resolver.intervalSeconds)
            }
        }
        thread.name = "hookgate-resolver"
        thread.start()
        _ = first.wait(timeout: .now() + .milliseconds(waitFirstMs))
    }
}

/// One JSON log line for a request: `ts`, `level`, `msg`, then the fields in order. Built as
/// bytes: this runs for every call.
struct RequestLogLine {
    private var out: [UInt8]

    init() {
        out = []
        out.reserveCapacity(512)
        out.append(contentsOf: #"{"ts":""#.utf8)
        out.append(contentsOf: Timestamp.rfc3339(Date()).utf8)
        out.append(contentsOf: #"","level":"info","msg":"request""#.utf8)
    }

    private mutating func key(_ key: String) {
        out.append(contentsOf: #",""#.utf8)
        out.append(contentsOf: key.utf8)
        out.append(contentsOf: #"":"#.utf8)
    }

    mutating func text(_ name: String, _ value: String) {
        key(name)
        if value.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            var escaped = ""
            JSON.appendString(value, to: &escaped)
            out.append(contentsOf: escaped.utf8)
        } else {
            out.append(0x22)
            out.append(contentsOf: value.utf8)
            out.append(0x22)
        }
    }

    mutating func number(_ name: String, _ value: Double) {
        key(name)
        if value == value.rounded() && abs(value) < 1e15 {
            out.append(contentsOf: String(Int64(value)).utf8)
        } else {
            out.append(contentsOf: String(value).utf8)
        }
    }

    func finish() -> String {
        var done = out
        done.append(UInt8(ascii: "}"))
        return String(decoding: done, as: UTF8.self)
    }
}
