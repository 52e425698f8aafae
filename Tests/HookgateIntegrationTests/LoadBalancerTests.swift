import Foundation
import Testing
@testable import Hookgate

let haproxyPath = "/usr/sbin/haproxy"

/// The shipped HAProxy example (deploy/haproxy/hookgate.cfg) in front of two replicas sharing
/// their limits through Redis, as docs/operations.md "Running several replicas" sets it up.
@Suite(.enabled(if: RedisProcess.available && FileManager.default.isExecutableFile(atPath: haproxyPath)))
struct LoadBalancerTests {
    @Test func callsThroughTheBalancerShareOneBurstAndSurviveAReplicaGoingAway() throws {
        let replicas = try SharedLimitsIntegrationTests.Replicas("load-balancer")
        defer { replicas.stop() }
        let claims = TeamKey(), billing = TeamKey()
        try replicas.start(2, teams: [
            ["name": "claims", "key_sha256": [claims.sha256], "allow_hooks": ["*"], "rate_limit": ["requests_per_minute": 1, "burst": 3]],
            ["name": "billing", "key_sha256": [billing.sha256], "allow_hooks": ["*"]],
        ])
        let port = RawHTTP.closedPort()
        let config = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("deploy/haproxy/hookgate.cfg").path
        var environment = ["HOOKGATE_LB_BIND": "127.0.0.1:\(port)"]
        for (n, gw) in replicas.gateways.enumerated() {
            environment["HOOKGATE_GW\(n + 1)"] = "127.0.0.1:\(gw.port)"
            environment["HOOKGATE_GW\(n + 1)_ADMIN_ADDR"] = "127.0.0.1"
            environment["HOOKGATE_GW\(n + 1)_ADMIN_PORT"] = String(gw.adminPort)
        }
        let balancer = try ChildProcess(arguments: ["-f", config, "-db"], environment: environment, executable: haproxyPath)
        defer { balancer.stop() }
        func call(_ key: TeamKey, _ n: Int) throws -> HTTPResponse {
            let event = String(format: "1b000000-0000-4000-8000-%012d", n)
            return try RawHTTP.request(port: port, target: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/\(event)/redeliver",
                                       headers: [("Authorization", "Bearer \(key.key)")])
        }
        // Both replicas up in HAProxy's eyes (health checks every 250 ms while changing).
        try balancer.wait("both replicas up", seconds: 15) { (try? call(billing, 0).status) == 200 && replicas.gateways.allSatisfy { !$0.requestLogs.isEmpty } }

        let answers = try (1...4).map { try call(claims, $0) }
        #expect(answers.map(\.status) == [200, 200, 200, 429], "the 4th call of a burst-3 team is refused whichever replica gets it")
        #expect(replicas.gateways.allSatisfy { gw in gw.requestLogs.contains { $0["team"] as? String == "claims" } }, "both replicas took claims' calls")

        // A replica drains (SIGTERM): /readyz turns 503, HAProxy stops sending, calls go on.
        let stream = CallStream(port: port, key: billing, callers: 2)
        var outcomes: [CallStream.Outcome] = []
        do {
            defer { outcomes = stream.stop() }
            try stream.waitFor(calls: 40)
            replicas.gateways[0].child.signal(SIGTERM)
            #expect(replicas.gateways[0].child.waitForExit(seconds: 40) == 0)
            try stream.waitFor(calls: 40)
        }
        #expect(CallStream.problems(outcomes) == [:], "\(outcomes.count) calls through the balancer while a replica left")
    }
}
