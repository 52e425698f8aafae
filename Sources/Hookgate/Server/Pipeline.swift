import Foundation
import Logging

// The request's way through the gateway, on the loop thread: handle (decide) -> refuse, or write
// the request record ahead and forward -> conclude (the response record) -> send (the answer and
// its log line). Every answer on the main listener leaves through `conclude` and `send`.

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

extension Gateway {

    func handle(_ req: ServerRequest) {
        let receivedAt = Date(), started = EventLoop.monotonicNanos()
        inFlight += 1
        let facts = RequestFacts(method: req.method, target: req.target, authorization: req.head.values("Authorization"))
        // A request that could not be read, or a keep-alive connection's next request while
        // draining, is refused before the decision; what can be read of it (key fingerprint,
        // team, ids) is still recorded. The first request of a connection accepted before the
        // drain is served: its caller reached a listener that took the connection.
        var preempt: Refusal? = nil
        if let error = req.error {
            preempt = Refusal.unreadable(error)
        } else if draining && !req.firstOnConnection {
            preempt = .draining()
        }
        let verdict = decide(facts, policy: policy, limiter: &limiter, now: started, refusing: preempt,
                             deferLimits: sharedLimits != nil)
        let exchange = Exchange(request: req, id: requestIDs.make(), verdict: verdict, receivedAt: receivedAt,
                                started: started, configVersion: policy.configVersion)
        switch verdict.outcome {
        case .failure(let refusal):
            conclude(exchange, refusal.answer(requestID: exchange.id))
        case .success(let plan):
            if let shared = sharedLimits {
                let teamLimit = policy.teams[plan.team]?.rateLimit, globalLimit = policy.globalRateLimit
                if teamLimit != nil || globalLimit != nil {
                    shared.admit(team: plan.team, teamLimit: teamLimit, globalLimit: globalLimit) { [unowned self] outcome in
                        self.limitsDecided(exchange, plan, outcome, shared)
                    }
                    return
                }
            }
            admitted(exchange, plan)
        }
    }

    /// Write-ahead: the request record is durable before anything goes upstream.
    func admitted(_ exchange: Exchange, _ plan: ForwardPlan) {
        record(exchange, [.request(requestRecord(exchange, decision: .forwarded))]) { [unowned self] in
            exchange.requestRecorded = true
            self.forward(exchange, plan)
        }
    }

    /// Redis's answer for a call's shared limits, or its absence (`on_unavailable`).
    func limitsDecided(_ exchange: Exchange, _ plan: ForwardPlan, _ outcome: SharedLimits.Outcome, _ shared: SharedLimits) {
        var plan = plan
        switch outcome {
        case .allowed(let headers):
            plan.rateLimitHeaders = headers
            admitted(exchange, plan)
        case .refused(let refusal):
            conclude(exchange, refusal.answer(requestID: exchange.id))
        case .unavailable(let why):
            shared.countFallback()
            switch shared.config.onUnavailable {
            case .refuse:
                var answer = Refusal.limitsUnavailable("Redis did not answer").answer(requestID: exchange.id)
                answer.detail = "shared limits unavailable: \(why)"
                conclude(exchange, answer)
            case .local:
                switch limiter.admit(team: plan.team, now: EventLoop.monotonicNanos()) {
                case .success(let headers):
                    plan.rateLimitHeaders = headers
                    admitted(exchange, plan)
                case .failure(let refusal):
                    conclude(exchange, refusal.answer(requestID: exchange.id))
                }
            }
        }
    }

    func forward(_ exchange: Exchange, _ plan: ForwardPlan) {
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
    static func relayed(_ response: UpstreamResponse, _ plan: ForwardPlan, requestID: String) -> Answer {
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
    func conclude(_ exchange: Exchange, _ answer: Answer) {
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
    func record(_ exchange: Exchange, _ items: [AuditWriter.Item], then: @escaping () -> Void) {
        let accepted = audit.submit(items) { [unowned self] result in
            switch result {
            case .success: then()
            case .failure(let error): self.auditFailed(exchange, why: error.description)
            }
        }
        if !accepted { auditFailed(exchange, why: "the audit queue is full (audit.max_queue)") }
    }

    func auditFailed(_ exchange: Exchange, why: String) {
        let detail = exchange.forwarded
            ? "the call reached Hookshot but its outcome could not be recorded in the audit log; check before retrying"
            : "the audit log cannot record the request, so it was not forwarded; retry later"
        metrics.countAuditRefusal()
        var answer = Refusal.auditUnavailable(detail).answer(requestID: exchange.id)
        answer.detail = why
        send(exchange, answer)
    }

    func requestRecord(_ exchange: Exchange, decision: DecisionWord) -> AuditRequestRecord {
        let verdict = exchange.verdict
        return AuditRequestRecord(
            requestID: exchange.id, receivedAt: Timestamp.rfc3339(exchange.receivedAt), clientAddr: exchange.clientAddress,
            team: verdict.team, keyFingerprint: verdict.keyFingerprint, method: exchange.method, path: exchange.recordedPath,
            hookID: verdict.hookID, eventRequestID: verdict.eventRequestID, decision: decision.rawValue,
            userAgent: exchange.userAgent, clientRequestID: exchange.clientRequestID,
            configVersion: exchange.configVersion)
    }

    func responseRecord(_ exchange: Exchange, _ answer: Answer) -> AuditResponseRecord {
        AuditResponseRecord(
            requestID: exchange.id, completedAt: answer.completedAt ?? Timestamp.rfc3339(Date()), decision: answer.decision.rawValue,
            status: answer.status, upstreamStatus: answer.upstream?.status, upstreamMs: exchange.upstreamMs.map(Self.rounded),
            totalMs: Self.rounded(Double(EventLoop.monotonicNanos() - exchange.started) / 1_000_000),
            upstreamContentType: answer.upstream?.header("Content-Type"), upstreamBody: answer.upstream?.body,
            detail: answer.decision == .forwarded ? nil : answer.detail)
    }

    /// Writes the answer and the request's log line.
    func send(_ exchange: Exchange, _ answer: Answer) {
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

    static func rounded(_ ms: Double) -> Double { (ms * 1000).rounded() / 1000 }

}
