/// Prometheus counters and histograms, kept on the loop thread (no locks) and rendered in
/// the text exposition format by the admin listener.
final class Metrics {
    private struct RequestKey: Hashable {
        var team: String?
        var decision: DecisionWord
        var status: Int
    }
    /// Counted per request with a cheap key; label text is made only when scraped.
    private var requests: [RequestKey: Int] = [:]
    private var rateLimited: [String: Int] = [:]
    private var upstreamFailures: [String: Int] = [:]
    private var reloads: [String: Int] = ["ok": 0, "error": 0]
    private var upstreamLatency = Histogram(bounds: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])

    func countRequest(team: String?, decision: DecisionWord, status: Int) {
        requests[RequestKey(team: team, decision: decision, status: status), default: 0] += 1
    }

    func countRateLimited(team: String?, scope: String) {
        rateLimited["team=\(Metrics.quote(team ?? "")),scope=\(Metrics.quote(scope))", default: 0] += 1
    }

    func observeUpstream(seconds: Double, status: Int) {
        upstreamLatency.observe(seconds)
    }

    func observeUpstreamFailure(_ failure: UpstreamFailure) {
        let reason: String
        switch failure {
        case .unresolved: reason = "unresolved"
        case .connect: reason = "connect"
        case .tls: reason = "tls"
        case .connectTimeout: reason = "connect_timeout"
        case .timeout: reason = "timeout"
        case .closed: reason = "closed"
        case .invalid: reason = "invalid_response"
        case .noConnection: reason = "no_connection"
        case .queueFull: reason = "queue_full"
        }
        upstreamFailures["reason=\(Metrics.quote(reason))", default: 0] += 1
    }

    private var auditRefusals = 0
    func countAuditRefusal() { auditRefusals += 1 }

    func countReload(ok: Bool) { reloads[ok ? "ok" : "error", default: 0] += 1 }

    func render(gateway: Gateway) -> String {
        var out = ""
        var requestLabels: [String: Int] = [:]
        for (key, count) in requests {
            let labels = "team=\(Metrics.quote(key.team ?? "")),decision=\(Metrics.quote(key.decision.rawValue)),status=\"\(key.status)\""
            requestLabels[labels, default: 0] += count
        }
        family(&out, "hookgate_requests_total", "counter", "Caller requests by team, decision and status.", requestLabels)
        family(&out, "hookgate_rate_limited_total", "counter", "Requests refused by a rate limit, by team and scope.", rateLimited)
        family(&out, "hookgate_upstream_failures_total", "counter", "Upstream calls that produced no response, by reason.", upstreamFailures)
        out += "# HELP hookgate_upstream_duration_seconds Time from sending a call upstream to its full response.\n"
        out += "# TYPE hookgate_upstream_duration_seconds histogram\n"
        upstreamLatency.render(name: "hookgate_upstream_duration_seconds", into: &out)
        family(&out, "hookgate_config_reloads_total", "counter", "Configuration reloads by result.",
               Dictionary(uniqueKeysWithValues: reloads.map { ("result=\(Metrics.quote($0.key))", $0.value) }))
        let audit = gateway.audit.currentStatus
        out += "# HELP hookgate_audit_commit_duration_seconds Time to commit one group of audit records.\n"
        out += "# TYPE hookgate_audit_commit_duration_seconds histogram\n"
        audit.commitLatency.render(name: "hookgate_audit_commit_duration_seconds", into: &out)
        counter(&out, "hookgate_audit_records_total", "Audit records committed.", audit.records)
        counter(&out, "hookgate_audit_derived_batches_total", "Batches of summaries and lookup rows written with the records.",
                audit.derivedBatches)
        counter(&out, "hookgate_audit_write_failures_total", "Audit commits that failed (their calls got 503).", audit.failures)
        counter(&out, "hookgate_audit_refusals_total", "Calls answered 503 because they could not be recorded.", auditRefusals)
        gauge(&out, "hookgate_audit_queue_depth", "Audit records waiting for the writer.", audit.queueDepth)
        gauge(&out, "hookgate_audit_healthy", "1 when the last audit commit succeeded.", audit.healthy ? 1 : 0)
        if gateway.config.audit.rotate != nil {
            counter(&out, "hookgate_audit_rotations_total", "Audit file rotations (audit.rotate).", audit.rotations)
            gauge(&out, "hookgate_audit_rotation_waiting", "1 while a due rotation waits for another connection to close the audit file.",
                  audit.rotationWaiting ? 1 : 0)
        }
        let tokens = gateway.tokens
        counter(&out, "hookgate_token_requests_total", "OAuth2 token requests sent to the token endpoint.", tokens.stats.requests)
        counter(&out, "hookgate_token_request_failures_total", "OAuth2 token requests that failed.", tokens.stats.failures)
        counter(&out, "hookgate_upstream_token_rejections_total", "Upstream 401 answers (Hookshot refused the service token).", tokens.stats.upstreamRejections)
        let valid: Int
        if case .success = tokens.current() { valid = 1 } else { valid = 0 }
        gauge(&out, "hookgate_token_valid", "1 while a usable upstream access token is held.", valid)
        if tokens.isOAuth2 {
            out += "# HELP hookgate_token_seconds_left Seconds the current access token is still used for.\n"
            out += "# TYPE hookgate_token_seconds_left gauge\nhookgate_token_seconds_left \(tokens.secondsLeft)\n"
        }
        gauge(&out, "hookgate_client_connections", "Open caller connections on the main listener.", gateway.clientConnections.open)
        counter(&out, "hookgate_client_connections_accepted_total", "Caller connections accepted.", gateway.clientConnections.accepted)
        counter(&out, "hookgate_client_timeouts_total", "Caller requests answered 408 for not arriving whole within limits.client_timeout_ms.", gateway.clientConnections.dropped)
        gauge(&out, "hookgate_upstream_connections", "Open upstream connections.", gateway.pool.openConnections)
        counter(&out, "hookgate_upstream_connections_opened_total", "Upstream connections opened (TLS handshakes).", gateway.pool.connectionsOpened)
        gauge(&out, "hookgate_upstream_idle_connections", "Idle upstream connections.", gateway.pool.idleConnections)
        gauge(&out, "hookgate_upstream_queued_calls", "Calls waiting for an upstream connection.", gateway.pool.queuedCalls)
        gauge(&out, "hookgate_in_flight_calls", "Calls sent upstream and not yet answered.", gateway.inFlightCalls)
        gauge(&out, "hookgate_draining", "1 while the gateway drains after SIGTERM.", gateway.draining ? 1 : 0)
        gateway.sharedLimits?.renderMetrics(into: &out)
        if let ship = gateway.shipper?.status {
            // The writer's own head is fresher than the shipper's last look at the file.
            let head = max(ship.head, audit.lastSeq)
            gauge(&out, "hookgate_audit_ship_lag_records", "Committed audit records not yet in PostgreSQL (audit.ship).",
                  Int(max(0, head - (ship.shipped ?? 0))))
            out += "# HELP hookgate_audit_ship_lag_seconds Age of the oldest audit record not yet in PostgreSQL (0 when none).\n"
            out += "# TYPE hookgate_audit_ship_lag_seconds gauge\nhookgate_audit_ship_lag_seconds \((ship.lagSeconds * 1000).rounded() / 1000)\n"
            counter(&out, "hookgate_audit_shipped_records_total", "Audit records copied into PostgreSQL by this process.", ship.records)
            counter(&out, "hookgate_audit_ship_failures_total", "Shipping attempts that failed (PostgreSQL unreachable or failing).", ship.failures)
            gauge(&out, "hookgate_audit_ship_stopped", "1 when shipping stopped for good: PostgreSQL holds a record that differs from the file.",
                  ship.stopped == nil ? 0 : 1)
        }
        out += "# HELP hookgate_config_info The configuration in force (version: SHA-256 of the file).\n# TYPE hookgate_config_info gauge\n"
        out += "hookgate_config_info{version=\(Metrics.quote(gateway.config.version))} 1\n"
        out += "# HELP hookgate_build_info Build information.\n# TYPE hookgate_build_info gauge\n"
        out += "hookgate_build_info{version=\(Metrics.quote(BuildInfo.version))} 1\n"
        return out
    }

    private func family(_ out: inout String, _ name: String, _ type: String, _ help: String, _ values: [String: Int]) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for key in values.keys.sorted() { out += "\(name){\(key)} \(values[key]!)\n" }
    }

    private func counter(_ out: inout String, _ name: String, _ help: String, _ value: Int) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) counter\n\(name) \(value)\n"
    }

    private func gauge(_ out: inout String, _ name: String, _ help: String, _ value: Int) {
        out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name) \(value)\n"
    }

    static func quote(_ value: String) -> String {
        var s = "\""
        for c in value {
            switch c {
            case "\\": s += "\\\\"
            case "\"": s += "\\\""
            case "\n": s += "\\n"
            default: s.append(c)
            }
        }
        return s + "\""
    }
}

struct Histogram {
    let bounds: [Double]
    private var counts: [Int]
    private var sum = 0.0
    private var total = 0

    init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count)
    }

    mutating func observe(_ value: Double) {
        for (i, b) in bounds.enumerated() where value <= b { counts[i] += 1 }
        sum += value
        total += 1
    }

    func render(name: String, into out: inout String) {
        for (i, b) in bounds.enumerated() { out += "\(name)_bucket{le=\"\(b)\"} \(counts[i])\n" }
        out += "\(name)_bucket{le=\"+Inf\"} \(total)\n\(name)_sum \(sum)\n\(name)_count \(total)\n"
    }
}
