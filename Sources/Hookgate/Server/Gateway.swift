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
    let request: ServerRequest
    let id: String
    let receivedAt: Date
    let started: UInt64
    let method: String
    /// The request-target in origin-form (absolute-form already reduced to path and query).
    let target: String
    let clientAddress: String
    let clientRequestID: String?
    let userAgent: String?
    /// The decision (and what was learnt about the caller), made before the exchange exists.
    let verdict: Verdict
    var upstreamStatus: Int?
    var upstreamMs: Double?
    var forwarded = false
    /// The request record is durable (the call was allowed and written ahead).
    var requestRecorded = false
    /// The config version in force when the request was decided.
    let configVersion: String

    init(request: ServerRequest, id: String, verdict: Verdict, receivedAt: Date, started: UInt64, configVersion: String) {
        self.request = request
        self.id = id
        self.verdict = verdict
        self.receivedAt = receivedAt
        self.started = started
        self.configVersion = configVersion
        self.method = request.method
        self.target = request.target
        self.clientAddress = request.peerAddress
        self.clientRequestID = request.head.first("X-Request-Id").map { $0.utf8Prefix(200) }
        self.userAgent = request.head.first("User-Agent").map { $0.utf8Prefix(512) }
    }

    /// The path as audited and logged: canonical once the ids parsed, else as received
    /// without the query string (which may hold a secret), capped. Made once, after the decision.
    private(set) lazy var recordedPath: String = {
        if let plan = verdict.plan { return plan.target.path }
        if let hook = verdict.hookID, let event = verdict.eventRequestID {
            return RedeliverTarget(hookID: hook, requestID: event).path
        }
        let utf8 = target.utf8
        let end = utf8.firstIndex(of: UInt8(ascii: "?")) ?? utf8.endIndex
        return String(decoding: utf8[utf8.startIndex..<end], as: UTF8.self).utf8Prefix(2048)
    }()
}

/// An answer on the main listener, with what its audit record and log line need.
struct Answer {
    var status: Int
    var decision: DecisionWord
    var headers: [(String, String)]
    var body: [UInt8]
    /// Why, for the audit record and the log line (refusals).
    var detail: String?
    /// Hookshot's answer, when there was one (audited: status, body, Content-Type).
    var upstream: UpstreamResponse?
    var reason: String?
    var keepAlive = true
    /// When its response record was made (also the log line's time).
    var completedAt: String?
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
    private var server: HTTPListener?
    private var admin: HTTPListener?
    private var signals: [SignalWatcher] = []
    private var resolvers: [Resolver] = []
    private var drainTimer: LoopTimer?
    private let configPath: String
    let logger: Logger
    let metrics = Metrics()
    private(set) var draining = false
    private var inFlight = 0
    /// Request ids for calls (loop thread only).
    private let requestIDs = RequestIDSource()
    /// Where each request's log line is built (loop thread only).
    private let logBuffer = ByteBuffer(capacity: 1024)


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
        audit = try AuditWriter(loop: loop, config: config.audit, onRecovery: { [logger] in
            logger.info("audit log writable again: calls are recorded and served")
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
        resolvers = [Resolver(loop: loop, host: config.upstream.host, port: config.upstream.port, pool: LoopBound(pool), logger: logger)]
        if let tokenPool = tokens.tokenPool {
            resolvers.append(Resolver(loop: loop, host: tokenPool.options.host, port: tokenPool.options.port,
                                      pool: LoopBound(tokenPool), logger: logger))
        }
        for resolver in resolvers { resolver.start(waitFirstMs: 2000) }
        tokens.start()
        let listenTLS = try config.listen.tls.map { try TLSServerContext(certFile: $0.certFile, keyFile: $0.keyFile) }
        server = try HTTPListener(loop: loop, address: config.listen.address, port: config.listen.port, tls: listenTLS,
                                  limits: Self.listenerLimits(config.limits)) { [unowned self] req in
            self.handle(req)
        }
        admin = try HTTPListener(loop: loop, address: config.admin.address, port: config.admin.port, tls: nil,
                                 limits: Self.adminLimits) { [unowned self] req in
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

    static func listenerLimits(_ limits: LimitsConfig) -> HTTPListener.Limits {
        HTTPListener.Limits(maxConnections: limits.maxConnections, connection: ConnectionStateMachine.Limits(
            parser: RequestParser.Limits(maxHeadBytes: limits.maxHeaderBytes, maxBodyBytes: limits.maxBodyBytes),
            requestDeadlineMs: limits.clientTimeoutMs, lingerMs: limits.lingerMs))
    }

    /// The admin listener: loopback scrapes and probes, small and bounded.
    static let adminLimits = HTTPListener.Limits(maxConnections: 64, connection: ConnectionStateMachine.Limits(
        parser: RequestParser.Limits(maxHeadBytes: 8192, maxBodyBytes: 4096), requestDeadlineMs: 10_000, lingerMs: 1000))

    // MARK: - Caller requests

    private func handle(_ req: ServerRequest) {
        let receivedAt = Date(), started = EventLoop.monotonicNanos()
        inFlight += 1
        let facts = RequestFacts(method: req.method, target: req.target, authorization: req.head.values("Authorization"))
        // A request that could not be read, or any request while draining, is refused before
        // the decision; what can be read of it (key fingerprint, team, ids) is still recorded.
        var preempt: Refusal? = nil
        if let error = req.error {
            preempt = Refusal.unreadable(error)
        } else if draining {
            preempt = .draining()
        }
        let verdict = decide(facts, policy: policy, limiter: &limiter, now: started, refusing: preempt)
        let exchange = Exchange(request: req, id: requestIDs.make(), verdict: verdict, receivedAt: receivedAt,
                                started: started, configVersion: policy.configVersion)
        switch verdict.outcome {
        case .failure(let refusal):
            conclude(exchange, refusal.answer(requestID: exchange.id))
        case .success(let plan):
            // Write-ahead: the request record is durable before anything goes upstream.
            record(exchange, [.request(requestRecord(exchange, decision: .forwarded))]) { [unowned self] in
                exchange.requestRecorded = true
                self.forward(exchange, plan)
            }
        }
    }

    private func forward(_ exchange: Exchange, _ plan: ForwardPlan) {
        let token: String
        switch tokens.current() {
        case .success(let t):
            token = t
        case .failure(let unavailable):
            // Without a valid token nothing is sent upstream.
            conclude(exchange, Refusal.upstreamError(unavailable.description).answer(requestID: exchange.id))
            return
        }
        let call = UpstreamCall(path: plan.target.path, serviceToken: token, requestID: exchange.id,
                                hostHeader: upstreamHostHeader)
        let sentAt = EventLoop.monotonicNanos()
        exchange.forwarded = true
        pool.send(call) { [unowned self] result in
            let ms = Double(EventLoop.monotonicNanos() - sentAt) / 1_000_000
            switch result {
            case .success(let response):
                exchange.upstreamMs = ms
                exchange.upstreamStatus = response.status
                self.metrics.observeUpstream(seconds: ms / 1000, status: response.status)
                if response.status == 401 {
                    self.tokens.upstreamRejected(token)
                    var answer = Refusal.upstreamError(
                        "Hookshot refused the gateway's service token (upstream 401); the caller's key is not at fault")
                        .answer(requestID: exchange.id)
                    answer.upstream = response
                    self.conclude(exchange, answer)
                } else {
                    self.conclude(exchange, Self.relayed(response, plan, requestID: exchange.id))
                }
            case .failure(let failure):
                // Nothing reached Hookshot when no connection could be made: upstream_ms stays null.
                if failure.reachedUpstream { exchange.upstreamMs = ms }
                exchange.forwarded = failure.reachedUpstream
                self.metrics.observeUpstreamFailure(failure)
                self.conclude(exchange, failure.refusal.answer(requestID: exchange.id))
            }
        }
    }

    /// Hookshot's answer, unchanged: status, reason, body and Content-Type (none if it sent none).
    private static func relayed(_ response: UpstreamResponse, _ plan: ForwardPlan, requestID: String) -> Answer {
        var headers: [(String, String)] = [("X-Request-Id", requestID)]
        if let type = response.header("Content-Type") { headers.append(("Content-Type", type)) }
        for h in plan.rateLimitHeaders { headers.append((h.name, h.value)) }
        return Answer(status: response.status, decision: .forwarded, headers: headers, body: response.body,
                      upstream: response, reason: response.reason.isEmpty ? nil : response.reason)
    }

    /// The one way an answer leaves the main listener: its audit record (with the request
    /// record, unless that was written ahead) is durable first, then the answer goes out with
    /// `X-Request-Id`, then one log line. If the record cannot be written, the caller gets 503
    /// instead (fail closed).
    private func conclude(_ exchange: Exchange, _ answer: Answer) {
        var items: [AuditWriter.Item] = []
        items.reserveCapacity(2)
        if !exchange.requestRecorded { items.append(.request(requestRecord(exchange, decision: answer.decision))) }
        var answer = answer
        answer.completedAt = Timestamp.rfc3339(Date())
        items.append(.response(responseRecord(exchange, answer)))
        record(exchange, items) { [unowned self] in
            self.send(exchange, answer)
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
        var answer = Refusal.auditUnavailable(detail).answer(requestID: exchange.id)
        answer.detail = why
        send(exchange, answer)
    }

    private func requestRecord(_ exchange: Exchange, decision: DecisionWord) -> AuditRequestRecord {
        let verdict = exchange.verdict
        return AuditRequestRecord(
            requestID: exchange.id, receivedAt: Timestamp.rfc3339(exchange.receivedAt), clientAddr: exchange.clientAddress,
            team: verdict.team, keyFingerprint: verdict.keyFingerprint, method: exchange.method, path: exchange.recordedPath,
            hookID: verdict.hookID, eventRequestID: verdict.eventRequestID, decision: decision.rawValue,
            userAgent: exchange.userAgent, clientRequestID: exchange.clientRequestID,
            configVersion: exchange.configVersion)
    }

    private func responseRecord(_ exchange: Exchange, _ answer: Answer) -> AuditResponseRecord {
        AuditResponseRecord(
            requestID: exchange.id, completedAt: answer.completedAt ?? Timestamp.rfc3339(Date()), decision: answer.decision.rawValue,
            status: answer.status, upstreamStatus: answer.upstream?.status, upstreamMs: exchange.upstreamMs.map(Self.rounded),
            totalMs: Self.rounded(Double(EventLoop.monotonicNanos() - exchange.started) / 1_000_000),
            upstreamContentType: answer.upstream?.header("Content-Type"), upstreamBody: answer.upstream?.body,
            detail: answer.decision == .forwarded ? nil : answer.detail)
    }

    /// Writes the answer and the request's log line.
    private func send(_ exchange: Exchange, _ answer: Answer) {
        if answer.decision == .rateLimited {
            let scope = answer.headers.contains { $0.0 == "RateLimit" && $0.1.hasPrefix("\"global\"") } ? "global" : "team"
            metrics.countRateLimited(team: exchange.verdict.team, scope: scope)
        }
        exchange.request.respond(status: answer.status, reason: answer.reason, headers: answer.headers, body: answer.body,
                                 keepAlive: answer.keepAlive && !draining, written: drainWriteTracker())
        inFlight -= 1
        let totalMs = Double(EventLoop.monotonicNanos() - exchange.started) / 1_000_000
        metrics.countRequest(team: exchange.verdict.team, decision: answer.decision, status: answer.status)
        // The per-request line is built directly (it runs for every call; swift-log's
        // metadata dictionary costs several times more), in the same JSON shape as the others.
        let line = RequestLogLine(into: logBuffer, timestamp: answer.completedAt ?? Timestamp.rfc3339(Date()))
        line.text("request.id", exchange.id)
        line.text("client.addr", exchange.clientAddress)
        line.text("method", exchange.method, limit: 32)
        line.text("path", exchange.recordedPath, limit: 256)
        line.text("decision", answer.decision.rawValue)
        line.number("status", Double(answer.status))
        line.number("duration_ms", Self.rounded(totalMs))
        if let team = exchange.verdict.team { line.text("team", team) }
        if let fp = exchange.verdict.keyFingerprint { line.text("key.fingerprint", fp) }
        if let hook = exchange.verdict.hookID { line.text("hook", hook) }
        if let up = exchange.upstreamStatus { line.number("upstream.status", Double(up)) }
        if let ms = exchange.upstreamMs { line.number("upstream.ms", Self.rounded(ms)) }
        if let detail = answer.detail, answer.decision != .forwarded { line.text("detail", detail) }
        if let crid = exchange.clientRequestID { line.text("client.request_id", crid) }
        line.finish()
        LineWriter.stderr.write(bytes: logBuffer.bytes)
        drainProgress()
    }

    private static func rounded(_ ms: Double) -> Double { (ms * 1000).rounded() / 1000 }

    // MARK: - Admin listener

    private func handleAdmin(_ req: ServerRequest) {
        let path = String(req.target.prefix { $0 != "?" })
        if let error = req.error {
            req.respond(status: error.status, headers: [("Content-Type", "text/plain; charset=utf-8")],
                        body: Array("\(error.detail)\n".utf8))
            return
        }
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
        (server?.openConnections ?? 0, server?.acceptedConnections ?? 0, server?.timedOutRequests ?? 0)
    }

    // MARK: - Signals

    private func beginDrain(signal: String) {
        guard !draining else { return }
        draining = true
        logger.info("draining", metadata: ["signal": "\(signal)", "in_flight": .stringConvertible(inFlight)])
        server?.drain()
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
            gateway.resolvers.forEach { $0.stop() }
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
            if !sameTokenKind { restart.append("upstream.service_token") }
            guard restart.isEmpty else {
                // Applying the rest would run a mix of two files under one config_version:
                // the whole file waits for a restart, and the audit keeps naming the file in force.
                metrics.countReload(ok: false)
                logger.error("reload rejected: these settings change only with a restart; the old configuration stays in force",
                             metadata: ["needs_restart": "\(restart.joined(separator: ","))",
                                        "config.version": "\(config.version)", "file.version": "\(newConfig.version)"])
                return
            }
            tokens.replace(reloaded.material)
            // A renewed listener certificate applies to new connections.
            if let tls = reloaded.listenTLS, newConfig.listen.tls != nil { server?.replaceTLS(tls) }
            let newPolicy = Policy(config: newConfig)
            limiter = limiter.reconfigured(for: newPolicy)
            policy = newPolicy
            if newConfig.limits != config.limits { server?.update(Self.listenerLimits(newConfig.limits)) }
            config = newConfig
            metrics.countReload(ok: true)
            logger.info("configuration reloaded", metadata: [
                "config.version": "\(newConfig.version)", "teams": .stringConvertible(newConfig.teams.count)])
        }
    }
}

/// One JSON log line for a request: `ts`, `level`, `msg`, then the fields in order. Built as
/// bytes in a buffer the gateway reuses for every line (this runs for every call).
struct RequestLogLine {
    let buffer: ByteBuffer

    init(into buffer: ByteBuffer, timestamp: String) {
        self.buffer = buffer
        buffer.reset()
        buffer.append(#"{"ts":""# as StaticString)
        buffer.append(timestamp)
        buffer.append(#"","level":"info","msg":"request""# as StaticString)
    }

    private func key(_ key: StaticString) {
        buffer.append(#",""# as StaticString)
        buffer.append(key)
        buffer.append(#"":"# as StaticString)
    }

    /// A string field, cut to `limit` bytes of UTF-8.
    func text(_ name: StaticString, _ value: String, limit: Int = 1024) {
        key(name)
        let value = value.utf8Prefix(limit)
        if JSON.needsEscaping(value) {
            var escaped = ""
            JSON.appendString(value, to: &escaped)
            buffer.append(escaped)
        } else {
            buffer.append(byte: 0x22)
            buffer.append(value)
            buffer.append(byte: 0x22)
        }
    }

    func number(_ name: StaticString, _ value: Double) {
        key(name)
        if value == value.rounded() && abs(value) < 1e15 {
            buffer.append(String(Int64(value)))
        } else {
            buffer.append(String(value))
        }
    }

    func finish() {
        buffer.append(byte: UInt8(ascii: "}"))
    }
}

extension String {
    /// At most `limit` bytes of UTF-8, cut at a scalar boundary (no grapheme work: the common
    /// case, a short string, costs one length check).
    func utf8Prefix(_ limit: Int) -> String {
        let utf8 = self.utf8
        guard utf8.count > limit else { return self }
        var end = utf8.index(utf8.startIndex, offsetBy: limit)
        while end > utf8.startIndex, UTF8.isContinuation(utf8[end]) { end = utf8.index(before: end) }
        return String(decoding: utf8[utf8.startIndex..<end], as: UTF8.self)
    }
}
