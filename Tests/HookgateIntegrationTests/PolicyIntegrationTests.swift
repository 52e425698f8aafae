import Foundation
import Testing
@testable import Hookgate

/// Keys, allow-lists and rate limits, seen from outside: the real binary, real sockets.
@Suite struct PolicyIntegrationTests {
    static let allowedHook = "e6db9c1a-d15f-4248-81fa-5b61fc321def"
    static let otherHook = "0f0f0f0f-1111-4222-8333-444444444444"
    static let eventID = "29dd8606-4e01-46cb-aca2-dd6022e74865"

    static func path(hook: String = allowedHook, request: String = eventID) -> String {
        "/hooks/\(hook)/requests/\(request)/redeliver"
    }

    /// Runs `hookgate keygen` and parses its two labelled lines.
    static func keygen() throws -> TeamKeyFromCLI {
        let child = try ChildProcess(arguments: ["keygen"])
        #expect(child.waitForExit() == 0)
        try child.wait("keygen output") { child.stdoutLines.count >= 2 }
        let key = try #require(child.stdoutLines.first { $0.hasPrefix("key:") }?.split(separator: " ").last.map(String.init))
        let hash = try #require(child.stdoutLines.first { $0.hasPrefix("key_sha256:") }?.split(separator: " ").last.map(String.init))
        return TeamKeyFromCLI(key: key, sha256: hash)
    }

    struct TeamKeyFromCLI { let key: String; let sha256: String }

    @Test func refusalsCarryTheContractStatusHeadersAndProblem() throws {
        let dir = Harness.tempDir("policy")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let claims = try Self.keygen()
        #expect(claims.key.count >= 43)
        #expect(SHA256.hex(claims.key) == claims.sha256)
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [claims.sha256], "allow_hooks": [Self.allowedHook]],
        ]))
        defer { gw.stop() }

        let none = try RawHTTP.request(port: gw.port, target: Self.path())
        #expect(none.status == 401)
        #expect(none.header("WWW-Authenticate") == "Bearer")
        #expect(none.json["type"] as? String == "urn:hookgate:problem:unauthenticated")

        let unknown = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "Bearer not-a-team-key")])
        #expect(unknown.status == 401)
        #expect(unknown.header("WWW-Authenticate") == "Bearer")

        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Token \(claims.key)"] {
            let r = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", bad)])
            #expect(r.status == 400, "\(bad)")
            #expect(r.json["type"] as? String == "urn:hookgate:problem:bad_request")
        }
        let twice = try RawHTTP.request(port: gw.port, target: Self.path(),
                                        headers: [("Authorization", "Bearer \(claims.key)"), ("Authorization", "Bearer \(claims.key)")])
        #expect(twice.status == 400)

        let forbidden = try RawHTTP.request(port: gw.port, target: Self.path(hook: Self.otherHook.uppercased()),
                                            headers: [("Authorization", "Bearer \(claims.key)")])
        #expect(forbidden.status == 403)
        #expect(forbidden.json["type"] as? String == "urn:hookgate:problem:forbidden")
        let detail = forbidden.json["detail"] as? String ?? ""
        #expect(detail.contains("claims") && detail.contains(Self.otherHook), "\(detail)")

        // Order of checks: method before key, ids before key.
        #expect(try RawHTTP.request(port: gw.port, method: "GET", target: Self.path()).status == 405)
        #expect(try RawHTTP.request(port: gw.port, target: Self.path(hook: "nope")).status == 400)

        #expect(sim.requests.isEmpty, "a refused call reached the upstream")

        let ok = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "bearer \(claims.key)")])
        #expect(ok.status == 200)
        #expect(sim.requests.count == 1)
        // Log lines are written by their own thread: wait for the last one.
        try gw.child.wait("all request log lines") { gw.requestLogs.count == 11 }
        let logs = gw.requestLogs
        #expect(logs.contains { $0["decision"] as? String == "forbidden" && $0["team"] as? String == "claims" })
        #expect(logs.contains { $0["decision"] as? String == "unauthenticated" && $0["key.fingerprint"] as? String == String(SHA256.hex("not-a-team-key").prefix(16)) })
    }

    @Test func burstThenRateLimitedWhileAnotherTeamIsUnaffected() throws {
        let dir = Harness.tempDir("burst")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let a1 = TeamKey(), a2 = TeamKey(), b = TeamKey()
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [a1.sha256, a2.sha256], "allow_hooks": ["*"],
             "rate_limit": ["requests_per_minute": 60, "burst": 3]],
            ["name": "billing", "key_sha256": [b.sha256], "allow_hooks": ["*"],
             "rate_limit": ["requests_per_minute": 60, "burst": 3]],
        ]))
        defer { gw.stop() }
        // Two keys of one team (rotation) share the team's bucket.
        let keys = [a1, a2, a1, a2]
        var statuses: [Int] = []
        var last: HTTPResponse?
        for k in keys {
            let r = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "Bearer \(k.key)")])
            statuses.append(r.status)
            last = r
        }
        #expect(statuses == [200, 200, 200, 429])
        let refused = try #require(last)
        #expect(refused.header("Retry-After") == "1")
        #expect(refused.header("RateLimit-Policy") == "\"team\";q=3;w=3")
        #expect(refused.header("RateLimit") == "\"team\";r=0;t=1")
        #expect(refused.json["type"] as? String == "urn:hookgate:problem:rate_limited")
        #expect(sim.requests.count == 3)

        let other = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "Bearer \(b.key)")])
        #expect(other.status == 200)
        #expect(other.header("RateLimit") == "\"team\";r=2;t=0")

        // One token a second comes back.
        Thread.sleep(forTimeInterval: 1.1)
        let again = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "Bearer \(a1.key)")])
        #expect(again.status == 200)
    }

    @Test func globalLimitIsSharedByAllTeams() throws {
        let dir = Harness.tempDir("global")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let a = TeamKey(), b = TeamKey()
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [a.sha256], "allow_hooks": ["*"]],
            ["name": "billing", "key_sha256": [b.sha256], "allow_hooks": ["*"], "rate_limit": ["requests_per_minute": 600, "burst": 10]],
        ], extra: ["global_rate_limit": ["requests_per_minute": 6, "burst": 2]]))
        defer { gw.stop() }
        let first = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "Bearer \(a.key)")])
        #expect(first.status == 200)
        #expect(first.header("RateLimit") == "\"global\";r=1;t=0")
        let second = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "Bearer \(b.key)")])
        #expect(second.status == 200)
        let third = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "Bearer \(b.key)")])
        #expect(third.status == 429)
        #expect(third.header("RateLimit-Policy") == "\"global\";q=2;w=20")
        #expect(third.header("RateLimit") == "\"global\";r=0;t=10")
        #expect(third.header("Retry-After") == "10")
        #expect(sim.requests.count == 2)
    }

    @Test func checkConfigNamesEveryProblemWithItsPath() throws {
        let dir = Harness.tempDir("check")
        let path = dir + "/broken.json"
        try Data("""
            {"listen": {"port": 70000}, "upstream": {"base_url": "https://h", "service_token": "inline"},
             "audit": {"path": "/tmp/a.sqlite3"},
             "teams": [{"name": "a", "key_sha256": ["\(String(repeating: "a", count: 64))"], "allow_hooks": ["*"]},
                       {"name": "b", "key_sha256": ["\(String(repeating: "b", count: 64))"], "allow_hooks": ["*"],
                        "rate_limit": {"requests_per_minute": 10, "burst": 0}}]}
            """.utf8).write(to: URL(fileURLWithPath: path))
        let child = try ChildProcess(arguments: ["check-config", "--config", path])
        #expect(child.waitForExit() == 1)
        try child.wait("problems") { child.stderrLines.count >= 3 }
        let text = child.stderrLines.joined(separator: "\n")
        #expect(text.contains("listen.port: must be at most 65535"))
        #expect(text.contains("upstream.service_token: an inline token is not allowed"))
        #expect(text.contains("teams[1].rate_limit.burst: must be at least 1"))

        let good = try ChildProcess(arguments: ["check-config", "--config", "config.example.json"])
        let status = good.waitForExit()
        try good.wait("summary") { good.stdoutLines.count >= 1 }
        #expect(status == 0, "\(good.stderrLines)")
        #expect(good.stdoutLines.first?.contains("config ok") == true)
    }
}
