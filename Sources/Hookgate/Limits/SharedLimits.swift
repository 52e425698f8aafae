import COpenSSL
import Foundation
import Logging

// Threads: the loop thread only.

/// Team and global token buckets kept in Redis, so that every replica naming the same Redis
/// and key prefix draws from the same buckets (Envoy's global rate limit, Kong's `redis`
/// policy; here inside the gateway, on its loop). One Lua script takes both buckets of a call
/// atomically with the in-process limiter's semantics: bucket size = burst, refill =
/// requests_per_minute, a refused call takes no token, the global bucket is charged only when the
/// team's allows. Redis's clock (`TIME`) is the only clock, so replicas' skew changes nothing.
/// Rates travel with each call (from the config in force), so a reload applies at once; a
/// changed limit keeps the bucket's tokens, capped at the new burst (no replica can reset a
/// shared bucket by running an older config).
///
/// Bucket keys: `<prefix>team:<name>` and `<prefix>global`, strings `<units>:<time>`: units of
/// which a token is 60,000,000 (a bucket gains requests_per_minute units per microsecond), as
/// of that time in Redis microseconds. A key expires once its bucket would be full again: an
/// absent key is a full bucket. Per call: TIME, one MGET, a SET with PX per bucket charged.
final class SharedLimits {
    enum Outcome: Equatable {
        /// The headers for the forwarded response.
        case allowed([Refusal.Header])
        case refused(Refusal)
        /// Redis did not answer within `timeout_ms` (or is not connected, or failed).
        case unavailable(String)
    }

    let config: SharedLimitsConfig
    private let loop: EventLoop
    private let client: RedisClient
    private let logger: Logger
    private let teamPrefix: String
    private let globalKey: String

    /// An episode of unavailability: since when, and how many calls it has touched.
    private var outage: (since: UInt64, reason: String, calls: Int)?
    private(set) var decisions = 0
    private(set) var fallbacks = 0
    private var errors: [String: Int] = ["timeout": 0, "connection": 0, "reply": 0]
    private var latency = Histogram(bounds: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25])

    init(loop: EventLoop, config: SharedLimitsConfig, password: String?, maxPending: Int, logger: Logger) {
        self.loop = loop
        self.config = config
        self.logger = logger
        teamPrefix = config.redis.keyPrefix + "team:"
        globalKey = config.redis.keyPrefix + "global"
        client = RedisClient(loop: loop, address: config.redis.address, password: password,
                             connectTimeoutMs: max(config.redis.timeoutMs, 1000), maxPending: maxPending, logger: logger)
        client.onConnect = [["SCRIPT", "LOAD", Self.script]]
        client.onStateChange = { [unowned self] up, why in
            if up { self.probe() } else { self.unavailable(why, kind: "connection") }
        }
    }

    func start() { client.start() }

    func stop() {
        probeTimer = nil
        client.stop()
    }

    private var probeTimer: LoopTimer?
    private var probing = false

    /// Whether Redis answers the script again, without waiting for a call (`/readyz` with
    /// `refuse` must turn ready while no call comes): on every new connection, and every 500 ms
    /// during an outage. The probe names no bucket and takes no token.
    private func probe() {
        guard !probing else { return }
        probing = true
        let call = Call { [unowned self] outcome in
            self.probing = false
            if case .allowed = outcome { self.recovered() } else { self.probeLater() }
        }
        call.timer = loop.timer(after: config.redis.timeoutMs) { [unowned self] in
            self.unavailable("no answer from Redis within \(self.config.redis.timeoutMs) ms", kind: "timeout")
            call.finish(.unavailable("timeout"))
        }
        send(["EVALSHA", Self.scriptSHA1, "2", teamPrefix, globalKey, "0", "0", "0", "0"], call: call,
             sent: EventLoop.monotonicNanos(), team: "", teamLimit: nil, globalLimit: nil, retried: false)
    }

    private func probeLater() {
        guard outage != nil, probeTimer == nil else { return }
        probeTimer = loop.timer(after: 500) { [unowned self] in
            self.probeTimer = nil
            if self.client.connected { self.probe() } else { self.probeLater() }
        }
    }

    /// Why calls cannot be decided in Redis now (nil: they can, as far as is known).
    var unavailableReason: String? {
        if let outage { return outage.reason }
        return client.connected ? nil : client.lastError
    }

    /// Takes a token of `team`'s bucket and the global one in Redis, or neither. `done` runs
    /// once on the loop, within `timeout_ms`.
    func admit(team: String, teamLimit: RateLimitConfig?, globalLimit: RateLimitConfig?, done: @escaping (Outcome) -> Void) {
        let arguments = [
            "EVALSHA", Self.scriptSHA1, "2", teamPrefix + team, globalKey,
            String(teamLimit?.requestsPerMinute ?? 0), String(teamLimit?.burst ?? 0),
            String(globalLimit?.requestsPerMinute ?? 0), String(globalLimit?.burst ?? 0),
        ]
        let call = Call(done: done)
        let sent = EventLoop.monotonicNanos()
        call.timer = loop.timer(after: config.redis.timeoutMs) { [unowned self] in
            self.unavailable("no answer from Redis within \(self.config.redis.timeoutMs) ms", kind: "timeout")
            call.finish(.unavailable(self.unavailableReason ?? "timeout"))
        }
        send(arguments, call: call, sent: sent, team: team, teamLimit: teamLimit, globalLimit: globalLimit, retried: false)
    }

    private func send(_ arguments: [String], call: Call, sent: UInt64, team: String, teamLimit: RateLimitConfig?,
                      globalLimit: RateLimitConfig?, retried: Bool) {
        client.send(arguments) { [unowned self] result in
            guard !call.finished else { return }  // answered after the timeout: too late
            switch result {
            case .failure(let failure):
                self.unavailable(failure.description, kind: "connection")
                call.finish(.unavailable(failure.description))
            case .success(.error(let message)) where message.hasPrefix("NOSCRIPT") && !retried:
                // The script cache was flushed: EVAL loads it again for the next calls.
                var again = arguments
                again[0] = "EVAL"
                again[1] = Self.script
                self.send(again, call: call, sent: sent, team: team, teamLimit: teamLimit, globalLimit: globalLimit, retried: true)
            case .success(let reply):
                guard let outcome = Self.outcome(reply, team: team, teamLimit: teamLimit, globalLimit: globalLimit) else {
                    let why = "unexpected reply from Redis: \(Self.describe(reply))"
                    self.unavailable(why, kind: "reply")
                    call.finish(.unavailable(why))
                    return
                }
                self.latency.observe(Double(EventLoop.monotonicNanos() - sent) / 1e9)
                if !team.isEmpty { self.decisions += 1 }
                self.recovered()
                call.finish(outcome)
            }
        }
    }

    /// One call waiting for Redis: finished once, by the reply or the timer.
    private final class Call {
        let done: (Outcome) -> Void
        var timer: LoopTimer?
        private(set) var finished = false
        init(done: @escaping (Outcome) -> Void) { self.done = done }

        func finish(_ outcome: Outcome) {
            guard !finished else { return }
            finished = true
            timer?.cancel()
            timer = nil
            done(outcome)
        }
    }

    /// A call decided without Redis (by this replica's buckets, or refused).
    func countFallback() {
        fallbacks += 1
        if outage != nil { outage?.calls += 1 }
    }

    private func unavailable(_ why: String, kind: String) {
        errors[kind, default: 0] += 1
        guard outage == nil else {
            outage?.reason = why
            return
        }
        outage = (EventLoop.monotonicNanos(), why, 0)
        probeLater()
        let mode = config.onUnavailable == .local ? "deciding calls with this replica's own buckets" : "refusing calls with 503"
        logger.warning("shared limits unavailable: \(mode) until Redis answers again",
                       metadata: ["redis": "\(config.redis.address)", "error": "\(why)"])
    }

    private func recovered() {
        guard let outage else { return }
        self.outage = nil
        probeTimer = nil
        let seconds = Double(EventLoop.monotonicNanos() - outage.since) / 1e9
        logger.info("shared limits available again", metadata: [
            "redis": "\(config.redis.address)", "unavailable_s": .stringConvertible((seconds * 1000).rounded() / 1000),
            "calls_decided_without_redis": .stringConvertible(outage.calls),
        ])
    }

    // MARK: - The script and its reply

    /// KEYS: the team's bucket, the global bucket. ARGV: team rpm, team burst, global rpm,
    /// global burst (burst 0: no such limit). Reply: {allowed (1/0), scope of the headers
    /// (1 team, 2 global, 0 none), remaining tokens, seconds until the next token, Retry-After}.
    static let script = """
        local now = redis.call('TIME')
        now = tonumber(now[1]) * 1000000 + tonumber(now[2])
        local UNIT = 60000000
        local state = redis.call('MGET', KEYS[1], KEYS[2])
        local function bucket(key, saved, rpm, burst)
          if burst <= 0 then return nil end
          local cap = burst * UNIT
          local units, at = cap, now
          if saved then
            local sep = string.find(saved, ':', 1, true)
            units, at = tonumber(string.sub(saved, 1, sep - 1)), tonumber(string.sub(saved, sep + 1))
          end
          if now > at then
            local elapsed = now - at
            if elapsed >= cap then units = cap else units = math.min(cap, units + elapsed * rpm) end
            at = now
          end
          if units > cap then units = cap end
          return {key = key, rpm = rpm, cap = cap, units = units, at = at}
        end
        local function wait(b)
          if b.units >= UNIT then return 0 end
          return math.ceil(math.ceil((UNIT - b.units) / b.rpm) / 1000000)
        end
        local team = bucket(KEYS[1], state[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
        local global = bucket(KEYS[2], state[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
        local teamEmpty = team ~= nil and team.units < UNIT
        local globalEmpty = global ~= nil and global.units < UNIT
        if teamEmpty or globalEmpty then
          local retry = 1
          if teamEmpty then retry = math.max(retry, wait(team)) end
          if globalEmpty then retry = math.max(retry, wait(global)) end
          local b, scope = global, 2
          if teamEmpty then b, scope = team, 1 end
          return {0, scope, math.floor(b.units / UNIT), wait(b), retry}
        end
        local function take(b)
          b.units = b.units - UNIT
          redis.call('SET', b.key, string.format('%.0f:%.0f', b.units, b.at),
                     'PX', math.ceil((b.cap - b.units) / b.rpm / 1000) + 1000)
        end
        if global then take(global) end
        if team then
          take(team)
          return {1, 1, math.floor(team.units / UNIT), wait(team), 0}
        end
        if global then return {1, 2, math.floor(global.units / UNIT), wait(global), 0} end
        return {1, 0, 0, 0, 0}
        """

    /// SHA-1 of the script, as `EVALSHA` names it.
    static let scriptSHA1: String = {
        var digest = [UInt8](repeating: 0, count: Int(SHA_DIGEST_LENGTH))
        let bytes = Array(script.utf8)
        _ = SHA1(bytes, bytes.count, &digest)
        return digest.map { String(format: "%02x", $0) }.joined()
    }()

    /// The outcome a script reply means (nil: not a reply of this script).
    static func outcome(_ reply: RedisReply, team: String, teamLimit: RateLimitConfig?, globalLimit: RateLimitConfig?) -> Outcome? {
        guard case .array(let items) = reply, items.count == 5 else { return nil }
        let n = items.compactMap { item -> Int? in if case .integer(let v) = item { Int(v) } else { nil } }
        guard n.count == 5 else { return nil }
        let (allowed, scopeCode, remaining, wait, retryAfter) = (n[0] == 1, n[1], n[2], n[3], n[4])
        let scope: RateLimitScope?
        let limit: RateLimitConfig?
        switch scopeCode {
        case 1: (scope, limit) = (.team, teamLimit)
        case 2: (scope, limit) = (.global, globalLimit)
        default: (scope, limit) = (nil, nil)
        }
        let reading = limit.map { RateLimitReading(limit: $0, remaining: remaining, secondsUntilNextToken: wait) }
        if allowed {
            guard let scope, let reading else { return .allowed([]) }
            return .allowed(reading.headers(policyName: scope.rawValue))
        }
        guard let scope, let reading else { return nil }
        return .refused(.rateLimited(team: team, scope: scope, bucket: reading, retryAfter: max(1, retryAfter)))
    }

    private static func describe(_ reply: RedisReply) -> String {
        switch reply {
        case .error(let message): "error \(message.prefix(200))"
        case .status(let s): "status \(s.prefix(200))"
        case .integer(let v): "integer \(v)"
        case .string(let b): "string of \(b.count) bytes"
        case .array(let a): "array of \(a.count)"
        case .null: "nil"
        }
    }

    // MARK: - Metrics

    func renderMetrics(into out: inout String) {
        out += "# HELP hookgate_shared_limits_available 1 while calls are decided in Redis (shared_limits), else 0.\n"
        out += "# TYPE hookgate_shared_limits_available gauge\n"
        out += "hookgate_shared_limits_available \(unavailableReason == nil ? 1 : 0)\n"
        out += "# HELP hookgate_shared_limits_decisions_total Calls whose limits Redis decided.\n"
        out += "# TYPE hookgate_shared_limits_decisions_total counter\n"
        out += "hookgate_shared_limits_decisions_total \(decisions)\n"
        out += "# HELP hookgate_shared_limits_fallback_total Calls decided without Redis (on_unavailable: local buckets, or refused).\n"
        out += "# TYPE hookgate_shared_limits_fallback_total counter\n"
        out += "hookgate_shared_limits_fallback_total{on_unavailable=\"\(config.onUnavailable.rawValue)\"} \(fallbacks)\n"
        out += "# HELP hookgate_shared_limits_errors_total Redis calls that failed, by kind (timeout, connection, reply).\n"
        out += "# TYPE hookgate_shared_limits_errors_total counter\n"
        for (kind, count) in errors.sorted(by: { $0.key < $1.key }) {
            out += "hookgate_shared_limits_errors_total{kind=\"\(kind)\"} \(count)\n"
        }
        out += "# HELP hookgate_shared_limits_redis_seconds Round trip of the limits script in Redis.\n"
        out += "# TYPE hookgate_shared_limits_redis_seconds histogram\n"
        latency.render(name: "hookgate_shared_limits_redis_seconds", into: &out)
    }
}
