import Foundation
import Testing
@testable import Hookgate

/// Replicas sharing their rate limits through a real Redis (issue 15): two gateway processes,
/// one redis-server, the bundled simulator upstream; Redis stopped and started under calls.
@Suite(.enabled(if: RedisProcess.available)) struct SharedLimitsIntegrationTests {
    static let hook = "e6db9c1a-d15f-4248-81fa-5b61fc321def"

    /// A simulator, a Redis, and gateways sharing its limits, each with its own audit file.
    final class Replicas {
        let dir: String
        let sim: SimulatorProcess
        let redis: RedisProcess
        var gateways: [GatewayProcess] = []
        private var calls = 0

        init(_ name: String, redisPort: Int? = nil, password: String? = nil) throws {
            dir = Harness.tempDir(name)
            sim = try SimulatorProcess(dir: dir)
            redis = try RedisProcess(dir: dir, port: redisPort, password: password)
        }

        func start(_ count: Int, teams: [[String: Any]], global: [String: Any]? = nil, onUnavailable: String = "local",
                   environment: [String: String] = [:], password: [String: Any]? = nil, redisAddress: String? = nil) throws {
            for n in 0..<count {
                let home = dir + "/gw\(n)"
                try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
                var redisConfig: [String: Any] = ["address": redisAddress ?? redis.address, "timeout_ms": 50]
                if let password { redisConfig["password"] = password }
                var extra: [String: Any] = ["shared_limits": ["redis": redisConfig, "on_unavailable": onUnavailable]]
                if let global { extra["global_rate_limit"] = global }
                var env = environment
                env["HOOKSHOT_SERVICE_TOKEN"] = Harness.serviceToken
                gateways.append(try GatewayProcess(dir: home, config: GatewayProcess.config(dir: home, simulator: sim, teams: teams, extra: extra),
                                                   environment: env))
            }
        }

        func stop() {
            gateways.forEach { $0.stop() }
            redis.stop()
            sim.stop()
        }

        /// A redeliver call through gateway `n`, with a fresh Hookshot request id.
        func call(_ n: Int, key: TeamKey) throws -> HTTPResponse {
            calls += 1
            let event = String(format: "4a11c0de-0000-4000-8000-%012d", calls)
            return try RawHTTP.request(port: gateways[n].port, target: "/hooks/\(SharedLimitsIntegrationTests.hook)/requests/\(event)/redeliver",
                                       headers: [("Authorization", "Bearer \(key.key)")])
        }

        func metrics(_ n: Int) throws -> String { try RawHTTP.request(port: gateways[n].adminPort, method: "GET", target: "/metrics").text }

        func waitAvailable(_ n: Int, _ available: Bool) throws {
            let line = "hookgate_shared_limits_available \(available ? 1 : 0)"
            try gateways[n].child.wait("gateway \(n): \(line)") { (try? metric(n, line)) == true }
        }

        /// Whether `/metrics` of gateway `n` has this exact sample line.
        func metric(_ n: Int, _ line: String) throws -> Bool {
            try metrics(n).split(separator: "\n").contains { $0 == line }
        }

        func logs(_ n: Int, _ message: String) -> [[String: Any]] {
            ChildProcess.objects(gateways[n].child.stderrLines).filter { $0["msg"] as? String == message }
        }

        /// Every gateway's audit file verifies, and exactly the calls it forwarded reached Hookshot.
        func expectAuditedOnce(answered: Int) throws {
            var pairs = 0, forwarded = 0
            for gw in gateways {
                gw.stop()
                let query = try AuditQuery(path: gw.auditPath)
                let result = try query.verify()
                #expect(result.isIntact && result.incomplete == 0, "\(result.broken ?? "")")
                pairs += result.pairs
                let decisions = try query.list(AuditFilter()).rows.map { $0[AuditSchema.pairColumns.firstIndex(of: "decision")!] }
                forwarded += decisions.filter { $0 == .text("forwarded") }.count
            }
            #expect(pairs == answered, "one pair per answered call")
            #expect(sim.requests.count == forwarded, "each forwarded call reached Hookshot once, no other")
        }
    }

    static func rateLimit(_ response: HTTPResponse) -> String? { response.header("RateLimit") }

    /// The RateLimit field with `t` rounded to whole minutes: at 1 call a minute, `t` counts
    /// down from 60 while the test runs (59 once a second has passed, e.g. under a sanitizer).
    static func rateLimitMinutes(_ response: HTTPResponse) -> String? {
        guard let value = rateLimit(response), let t = value.split(separator: "=").last.flatMap({ Int($0) }) else { return nil }
        let minutes = t == 0 ? 0 : (t + 59) / 60
        return value.split(separator: ";").dropLast().joined(separator: ";") + ";t~\(minutes)min"
    }

    @Test func twoReplicasShareATeamsBurstAndTheGlobalLimit() throws {
        let redisPort = RawHTTP.closedPort()
        let replicas = try Replicas("shared-limits", redisPort: redisPort, password: "redis-" + UUID().uuidString)
        defer { replicas.stop() }
        let claims = TeamKey(), billing = TeamKey()
        try replicas.start(2, teams: [
            ["name": "claims", "key_sha256": [claims.sha256], "allow_hooks": ["*"], "rate_limit": ["requests_per_minute": 1, "burst": 3]],
            ["name": "billing", "key_sha256": [billing.sha256], "allow_hooks": ["*"]],
        ], global: ["requests_per_minute": 1, "burst": 5], environment: ["REDIS_PASSWORD": replicas.redis.password!],
           password: ["env": "REDIS_PASSWORD"], redisAddress: "localhost:\(redisPort)")

        // claims: burst 3 across both replicas, whichever gets the call.
        var answers: [HTTPResponse] = []
        for i in 0..<4 { answers.append(try replicas.call(i % 2, key: claims)) }
        #expect(answers.map(\.status) == [200, 200, 200, 429])
        #expect(answers.map(Self.rateLimitMinutes) == ["\"team\";r=2;t~0min", "\"team\";r=1;t~0min", "\"team\";r=0;t~1min", "\"team\";r=0;t~1min"])
        #expect(answers.allSatisfy { $0.header("RateLimit-Policy") == "\"team\";q=3;w=180" })
        #expect((50...60).contains(Int(answers[3].header("Retry-After") ?? "") ?? 0))
        #expect(answers[3].json["type"] as? String == "urn:hookgate:problem:rate_limited")

        // billing has no limit of its own: the global one (burst 5, 3 taken by claims) holds
        // across both replicas too; a refused call took no global token.
        var billed: [HTTPResponse] = []
        for i in 0..<3 { billed.append(try replicas.call(i % 2, key: billing)) }
        #expect(billed.map(\.status) == [200, 200, 429])
        #expect(billed.map(Self.rateLimitMinutes) == ["\"global\";r=1;t~0min", "\"global\";r=0;t~1min", "\"global\";r=0;t~1min"])
        #expect(billed[2].json["detail"] as? String
                == "the gateway-wide rate limit of 1 requests per minute (burst 5) is exhausted")

        // The script ran by its SHA-1, from Redis's script cache; flushed, it is loaded again.
        #expect(try replicas.redis.command(["SCRIPT", "EXISTS", SharedLimits.scriptSHA1]) == "1")
        _ = try replicas.redis.command(["SCRIPT", "FLUSH"])
        #expect(try replicas.redis.command(["SCRIPT", "EXISTS", SharedLimits.scriptSHA1]) == "0")
        let afterFlush = try replicas.call(0, key: claims)
        #expect(afterFlush.status == 429 && Self.rateLimitMinutes(afterFlush) == "\"team\";r=0;t~1min")
        #expect(try replicas.redis.command(["SCRIPT", "EXISTS", SharedLimits.scriptSHA1]) == "1")
        #expect(try replicas.metric(0, "hookgate_shared_limits_available 1"))
        try replicas.expectAuditedOnce(answered: 8)
    }

    @Test func withLocalFallbackReplicasDecideAloneWhileRedisIsDownThenShareAgain() throws {
        let replicas = try Replicas("shared-limits-local")
        defer { replicas.stop() }
        let claims = TeamKey()
        try replicas.start(2, teams: [
            ["name": "claims", "key_sha256": [claims.sha256], "allow_hooks": ["*"], "rate_limit": ["requests_per_minute": 1, "burst": 2]],
        ])
        var statuses = [try replicas.call(0, key: claims).status, try replicas.call(1, key: claims).status, try replicas.call(0, key: claims).status]
        #expect(statuses == [200, 200, 429], "shared: burst 2 across both")

        replicas.redis.stop()
        // Each replica now has its own full bucket of 2.
        statuses = try (0..<3).map { _ in try replicas.call(0, key: claims).status } + (0..<3).map { _ in try replicas.call(1, key: claims).status }
        #expect(statuses == [200, 200, 429, 200, 200, 429])
        try replicas.waitAvailable(0, false)
        #expect(try replicas.metric(0, "hookgate_shared_limits_fallback_total{on_unavailable=\"local\"} 3"))
        #expect(replicas.logs(0, "shared limits unavailable: deciding calls with this replica's own buckets until Redis answers again").count == 1,
                "once per episode")

        try replicas.redis.restart()
        try replicas.waitAvailable(0, true)
        try replicas.waitAvailable(1, true)
        // Shared again: the new Redis has a full bucket (this replica's own is empty).
        let back = try replicas.call(0, key: claims)
        #expect(back.status == 200 && Self.rateLimit(back) == "\"team\";r=1;t=0", "\(back.status) \(back.text)")
        #expect(try replicas.call(1, key: claims).status == 200)
        #expect(try replicas.call(0, key: claims).status == 429)
        #expect(replicas.logs(0, "shared limits available again").count == 1)
        try replicas.expectAuditedOnce(answered: 12)
    }

    /// Redis killed and started again under a steady stream of calls on both replicas: every
    /// call gets an answer (`local`: all allowed by the replicas' own buckets; `refuse`: 503
    /// `limits_unavailable` meanwhile), each forwarded call reached Hookshot once, every
    /// answered call is in its replica's audit.
    @Test(arguments: ["local", "refuse"])
    func redisKilledUnderTrafficLosesNoCall(onUnavailable: String) throws {
        let replicas = try Replicas("shared-limits-traffic-\(onUnavailable)")
        defer { replicas.stop() }
        let claims = TeamKey()
        try replicas.start(2, teams: [
            ["name": "claims", "key_sha256": [claims.sha256], "allow_hooks": ["*"],
             "rate_limit": ["requests_per_minute": 6_000_000, "burst": 1_000_000]],
        ], onUnavailable: onUnavailable)
        let streams = replicas.gateways.map { CallStream(port: $0.port, key: claims, callers: 2) }
        var outcomes: [CallStream.Outcome] = []
        do {
            defer { outcomes = streams.flatMap { $0.stop() } }
            try streams.forEach { try $0.waitFor(calls: 50) }
            replicas.redis.stop()
            try streams.forEach { try $0.waitFor(calls: 50) }
            try replicas.redis.restart()
            try replicas.waitAvailable(0, true)
            try replicas.waitAvailable(1, true)
            try streams.forEach { try $0.waitFor(calls: 50) }
        }
        var statuses: [Int: Int] = [:]
        for case .answered(let status, _) in outcomes { statuses[status, default: 0] += 1 }
        let failed = outcomes.filter { if case .failed = $0 { true } else { false } }
        #expect(failed.isEmpty, "\(failed.prefix(3))")
        if onUnavailable == "local" {
            #expect(Set(statuses.keys) == [200], "\(statuses)")
        } else {
            #expect(Set(statuses.keys).isSubset(of: [200, 503]) && statuses[503, default: 0] > 0, "\(statuses)")
        }
        try replicas.expectAuditedOnce(answered: outcomes.count)
    }

    @Test func withRefuseCallsGet503AndTheReplicaIsNotReadyWhileRedisIsOut() throws {
        let replicas = try Replicas("shared-limits-refuse")
        defer { replicas.stop() }
        let claims = TeamKey()
        try replicas.start(1, teams: [
            ["name": "claims", "key_sha256": [claims.sha256], "allow_hooks": ["*"], "rate_limit": ["requests_per_minute": 600, "burst": 50]],
        ], onUnavailable: "refuse")
        let gw = replicas.gateways[0]
        func ready() throws -> HTTPResponse { try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz") }
        try gw.child.wait("ready") { (try? ready().status) == 200 }
        #expect(try replicas.call(0, key: claims).status == 200)

        // Too slow: Redis paused for a second answers nothing within timeout_ms.
        _ = try replicas.redis.command(["CLIENT", "PAUSE", "1000", "ALL"])
        let slow = try replicas.call(0, key: claims)
        #expect(slow.status == 503)
        #expect(slow.header("Content-Type") == "application/problem+json")
        #expect(slow.json["type"] as? String == "urn:hookgate:problem:limits_unavailable")
        try gw.child.wait("ready again after the pause", seconds: 10) { (try? ready().status) == 200 }

        // Down: not ready, with the reason, until it is back.
        replicas.redis.stop()
        try gw.child.wait("not ready") { (try? ready().status) == 503 }
        let reasons = try ready().json["reasons"] as? [String] ?? []
        #expect(reasons.contains { $0.hasPrefix("shared limits unavailable: ") }, "\(reasons)")
        let refused = try replicas.call(0, key: claims)
        #expect(refused.status == 503 && refused.json["type"] as? String == "urn:hookgate:problem:limits_unavailable")
        try replicas.redis.restart()
        try gw.child.wait("ready once Redis is back") { (try? ready().status) == 200 }
        #expect(try replicas.call(0, key: claims).status == 200)

        let answered = 4
        try replicas.expectAuditedOnce(answered: answered)
        let rows = try AuditQuery(path: gw.auditPath).list(AuditFilter()).rows
        let decision = AuditSchema.pairColumns.firstIndex(of: "decision")!, status = AuditSchema.pairColumns.firstIndex(of: "status")!
        #expect(rows.map { $0[decision] } == [.text("forwarded"), .text("limits_unavailable"), .text("limits_unavailable"), .text("forwarded")])
        #expect(rows.map { $0[status] } == [.int(200), .int(503), .int(503), .int(200)])
    }
}
