import Foundation
import Testing
@testable import Hookgate

let promtoolPath = "/usr/bin/promtool"

/// deploy/prometheus: the alert rules pass `promtool check rules` and their unit tests, and every
/// metric they name is one a live gateway exports (issue 18). The gateway scraped has every
/// optional part on: an OAuth2 token, limits shared in Redis, its audit shipped to PostgreSQL.
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: promtoolPath) && RedisProcess.available && PostgresProcess.available))
struct AlertRulesTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy/prometheus").path

    static func promtool(_ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: promtoolPath)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    @Test func theRulesPassPromtoolAndTheirUnitTests() throws {
        let (checked, checkOutput) = try Self.promtool(["check", "rules", "hookgate.rules.yml"])
        #expect(checked == 0, "\(checkOutput)")
        #expect(checkOutput.contains("SUCCESS: 23 rules found"))
        let (tested, testOutput) = try Self.promtool(["test", "rules", "hookgate.rules.test.yml"])
        #expect(tested == 0, "\(testOutput)")
    }

    /// deploy/grafana/hookgate.json: what Grafana's importer needs of a dashboard, and its queries.
    static func dashboardQueries() throws -> [String] {
        let path = directory + "/../grafana/hookgate.json"
        let dashboard = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        #expect(dashboard["title"] as? String == "Hookgate" && dashboard["uid"] as? String == "hookgate")
        #expect((dashboard["schemaVersion"] as? Int ?? 0) >= 36)
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        #expect(panels.count >= 10)
        #expect(Set(panels.compactMap { $0["id"] as? Int }).count == panels.count, "unique panel ids")
        var queries: [String] = []
        for panel in panels {
            let grid = panel["gridPos"] as? [String: Int] ?? [:]
            #expect(panel["title"] is String && panel["type"] as? String == "timeseries" && grid["w"] != nil && grid["h"] != nil)
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty, "\(panel["title"] ?? "?") has queries")
            queries += targets.compactMap { $0["expr"] as? String }
        }
        let variables = (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        queries += variables.compactMap { $0["query"] as? String }
        return queries
    }

    @Test func everyMetricTheRulesAndTheDashboardNameIsExported() throws {
        let rules = try String(contentsOfFile: Self.directory + "/hookgate.rules.yml", encoding: .utf8)
        let named = Set(rules.matches(of: /hookgate_[a-z_]+/).map { String($0.output) }).filter { !$0.hasPrefix("hookgate_replicas") }
        #expect(named.count >= 20)
        let charted = Set(try Self.dashboardQueries().flatMap { $0.matches(of: /hookgate_[a-z_]+/).map { String($0.output) } })
        #expect(charted.count >= 25)

        let dir = Harness.tempDir("alert-rules")
        let secret = "client-secret-" + UUID().uuidString
        let sim = try SimulatorProcess(dir: dir, extra: ["--client-id", "hookgate-test", "--expires-in", "3600"],
                                       token: "", environment: ["HOOKSHOT_CLIENT_SECRET": secret])
        defer { sim.stop() }
        let redis = try RedisProcess(dir: dir)
        defer { redis.stop() }
        let pg = try PostgresProcess(dir: dir)
        defer { pg.stop() }
        let key = TeamKey()
        var config = GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"], "rate_limit": ["requests_per_minute": 60, "burst": 1]],
        ], extra: ["shared_limits": ["redis": ["address": redis.address]]], upstream: ["service_token": ["oauth2": [
            "token_url": "https://localhost:\(sim.port)/auth/token", "client_id": "hookgate-test",
            "client_secret": ["env": "HOOKSHOT_CLIENT_SECRET"],
        ]]])
        config["audit"] = ["path": dir + "/audit.sqlite3", "ship": ["postgres": pg.uri, "password": ["env": "PG_PASSWORD"], "replica": "gw-1"]]
        let gw = try GatewayProcess(dir: dir, config: config,
                                    environment: ["HOOKSHOT_CLIENT_SECRET": secret, "PG_PASSWORD": PostgresProcess.password])
        defer { gw.stop() }
        try gw.child.wait("ready") { (try? RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz").status) == 200 }
        // Two calls: one forwarded, one rate-limited, so that the labelled families have series.
        for event in ["29dd8606-4e01-46cb-aca2-dd6022e74865", "29dd8606-4e01-46cb-aca2-dd6022e74866"] {
            _ = try RawHTTP.request(port: gw.port, target: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/\(event)/redeliver",
                                    headers: [("Authorization", "Bearer \(key.key)")])
        }
        let scrape = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text
        // Families the gateway declares (`# TYPE name kind`, also for a family without a series
        // yet, e.g. upstream failures) and sample names (a histogram's _bucket/_sum/_count).
        var exported = Set<String>()
        for line in scrape.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                exported.insert(String(line.split(separator: " ")[2]))
            } else if !line.hasPrefix("#"), let name = line.split(whereSeparator: { $0 == "{" || $0 == " " }).first {
                exported.insert(String(name))
            }
        }
        let missing = named.filter { !exported.contains($0) && !exported.contains($0 + "_bucket") }.sorted()
        #expect(missing.isEmpty, "named by the rules but not exported: \(missing)")
        let notCharted = charted.filter { !exported.contains($0) }.sorted()
        #expect(notCharted.isEmpty, "queried by the dashboard but not exported: \(notCharted)")
    }
}
