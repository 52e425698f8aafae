import Foundation
import Testing
@testable import Hookgate

/// OAuth2 client credentials against the simulator's token endpoint, with tokens that live
/// a few seconds so that whole lifetimes pass during the test.
@Suite struct TokenLifecycleTests {
    static let secret = "client-secret-" + UUID().uuidString
    static let path = "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/29dd8606-4e01-46cb-aca2-dd6022e74865/redeliver"

    func start(expiresIn: Int, _ body: (GatewayProcess, SimulatorProcess, TeamKey) throws -> Void) throws {
        let dir = Harness.tempDir("oauth")
        // No static token: the simulator accepts only tokens its endpoint issued and that live.
        let sim = try SimulatorProcess(dir: dir, extra: ["--client-id", "hookgate-test", "--expires-in", "\(expiresIn)"],
                                       token: "", environment: ["HOOKSHOT_CLIENT_SECRET": Self.secret])
        defer { sim.stop() }
        let key = TeamKey()
        let config = GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"]],
        ], upstream: ["service_token": ["oauth2": [
            "token_url": "https://localhost:\(sim.port)/auth/token", "client_id": "hookgate-test",
            "client_secret": ["env": "HOOKSHOT_CLIENT_SECRET"], "retry_max_ms": 400,
        ]]])
        let gw = try GatewayProcess(dir: dir, config: config, environment: ["HOOKSHOT_CLIENT_SECRET": Self.secret])
        defer { gw.stop() }
        try gw.child.wait("a first token") {
            (try? RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz").status) == 200
        }
        try body(gw, sim, key)
        gw.stop()
        let logs = gw.child.stderrLines.joined(separator: "\n")
        #expect(!logs.contains(Self.secret))
        #expect(!logs.contains("sim-at-"), "an access token was logged")
        let db = try Data(contentsOf: URL(fileURLWithPath: dir + "/audit.sqlite3"))
        #expect(db.range(of: Data(Self.secret.utf8)) == nil)
        #expect(db.range(of: Data("sim-at-".utf8)) == nil)
    }

    @Test func callsFlowThroughSeveralTokenLifetimesWithOneRequestPerRefresh() throws {
        try start(expiresIn: 2) { gw, sim, key in
            var statuses: [Int] = []
            let started = Date()
            while Date().timeIntervalSince(started) < 6.5 {
                statuses.append(try RawHTTP.request(port: gw.port, target: Self.path,
                                                    headers: [("Authorization", "Bearer \(key.key)")]).status)
                Thread.sleep(forTimeInterval: 0.1)
            }
            #expect(statuses.count >= 30)
            #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
            #expect(!sim.requests.contains { $0["authorized"] as? Bool == false }, "a call reached Hookshot with a bad token")
            let tokenRequests = sim.tokenRequests
            // Refreshed at half its life: about one request a second, never one per call.
            #expect(tokenRequests.count >= 4 && tokenRequests.count <= 10, "\(tokenRequests.count) token requests")
            #expect(tokenRequests.allSatisfy { $0["grant_type"] as? String == "client_credentials" && $0["outcome"] as? String == "issued" })
        }
    }

    @Test func anOutageOfTheTokenEndpointIsBridgedThenReportedThenRecovered() throws {
        try start(expiresIn: 3) { gw, sim, key in
            let auth = [("Authorization", "Bearer \(key.key)")]
            sim.child.signal(SIGUSR1)  // token endpoint fails from now on
            try sim.child.wait("fail mode") { sim.child.stdoutLines.contains { $0.contains("\"token_mode\"") } }
            // The token in hand keeps working until shortly before it expires...
            #expect(try RawHTTP.request(port: gw.port, target: Self.path, headers: auth).status == 200)
            // ...then calls get 502 with the reason, and readiness says why.
            var refused: HTTPResponse?
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline {
                let r = try RawHTTP.request(port: gw.port, target: Self.path, headers: auth)
                if r.status != 200 { refused = r; break }
                Thread.sleep(forTimeInterval: 0.1)
            }
            let r = try #require(refused)
            #expect(r.status == 502)
            #expect((r.json["detail"] as? String)?.contains("access token unavailable") == true, "\(r.text)")
            let ready = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz")
            #expect(ready.status == 503)
            #expect(ready.text.contains("access token"))
            let reachedBefore = sim.requests.count
            #expect(try RawHTTP.request(port: gw.port, target: Self.path, headers: auth).status == 502)
            #expect(sim.requests.count == reachedBefore, "a call was sent upstream without a valid token")

            sim.child.signal(SIGUSR2)  // the endpoint is back
            try gw.child.wait("recovery", seconds: 5) {
                (try? RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz").status) == 200
            }
            #expect(try RawHTTP.request(port: gw.port, target: Self.path, headers: auth).status == 200)
            let metrics = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text
            #expect(metrics.contains("hookgate_token_valid 1"))
        }
    }

    @Test func anUpstream401MarksTheTokenStaleAndIsNotResent() throws {
        try start(expiresIn: 60) { gw, sim, key in
            let auth = [("Authorization", "Bearer \(key.key)")]
            #expect(sim.tokenRequests.count == 1)
            let target = "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/00000401-4e01-46cb-aca2-dd6022e74865/redeliver"
            let r = try RawHTTP.request(port: gw.port, target: target, headers: auth)
            #expect(r.status == 502)
            #expect((r.json["detail"] as? String)?.contains("service token") == true)
            let last = try #require(sim.requests.last)
            let refused = try #require(SimulatorProcess.headers(of: last).first { $0.0 == "Authorization" }?.1)
            // Calls right after the refusal never carry the refused token: 502 until the new one is in.
            for _ in 0..<5 { _ = try RawHTTP.request(port: gw.port, target: Self.path, headers: auth) }
            try sim.child.wait("a fresh token request") { sim.tokenRequests.count == 2 }
            try gw.child.wait("the new token") {
                (try? RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz").status) == 200
            }
            #expect(try RawHTTP.request(port: gw.port, target: Self.path, headers: auth).status == 200)
            let used = sim.requests.dropFirst().compactMap { SimulatorProcess.headers(of: $0).first { $0.0 == "Authorization" }?.1 }
            #expect(!used.contains(refused), "the refused token was sent again")
            #expect(sim.requests.filter { ($0["target"] as? String ?? "").contains("00000401") }.count == 1)
            let metrics = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text
            #expect(metrics.contains("hookgate_upstream_token_rejections_total 1"))
        }
    }
}
