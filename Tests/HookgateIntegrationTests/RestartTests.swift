import Foundation
import Testing
@testable import Hookgate

/// Restarts and upgrades under a steady stream of calls (issue 20): on a socket the service
/// manager holds, and with two processes overlapping on one port (`listen.reuse_port`). No
/// caller may see a refused connection or a failed call, and every answered call is in the
/// one audit chain.
@Suite(.serialized) struct RestartTests {
    /// A simulator, a team and the config both gateways run (one audit file).
    struct Setup {
        let dir: String
        let sim: SimulatorProcess
        let key = TeamKey()

        init(_ name: String) throws {
            dir = Harness.tempDir(name)
            sim = try SimulatorProcess(dir: dir)
        }

        func config(port: Int, reusePort: Bool = false) -> [String: Any] {
            var config = GatewayProcess.config(dir: dir, simulator: sim,
                                               teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"]]])
            config["listen"] = ["address": "127.0.0.1", "port": port, "reuse_port": reusePort]
            return config
        }

        func writeConfig(_ config: [String: Any], as name: String) throws -> String {
            let path = dir + "/" + name
            try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted]).write(to: URL(fileURLWithPath: path))
            return path
        }

        /// The audit file holds one whole chain with a pair for every answered call.
        func expectAudited(_ outcomes: [CallStream.Outcome]) throws {
            let query = try AuditQuery(path: dir + "/audit.sqlite3")
            let result = try query.verify()
            #expect(result.isIntact, "\(result.broken ?? "")")
            #expect(result.incomplete == 0 && result.derivedMismatch == nil)
            let recorded = Set(try query.list(AuditFilter()).rows.compactMap { row -> String? in
                if case .text(let id) = row[0] { id } else { nil }
            })
            let answered = outcomes.compactMap { outcome -> String? in
                if case .answered(_, let id) = outcome { id } else { nil }
            }
            #expect(result.pairs == answered.count, "one pair per answered call, none besides")
            #expect(Set(answered).isSubset(of: recorded), "every answered call has its pair")
        }
    }

    /// `systemctl restart` of a socket-activated gateway, done twice (a restart, then an
    /// upgrade is the same steps with a new binary): the old process drains, the new one takes
    /// the same socket; connections that arrive between wait in its backlog.
    @Test func restartsOnAHeldSocketRefuseNoCallAndFailNone() throws {
        let setup = try Setup("restart-activated")
        defer { setup.sim.stop() }
        let socket = try HeldSocket()
        let configPath = try setup.writeConfig(setup.config(port: socket.port), as: "config.json")
        func start(_ n: Int) throws -> ActivatedGateway {
            let gateway = try ActivatedGateway(socket: socket, configPath: configPath, logPath: setup.dir + "/gateway-\(n).log",
                                               environment: ["HOOKSHOT_SERVICE_TOKEN": Harness.serviceToken])
            let listening = try gateway.waitListening()
            #expect(listening["listen.inherited"] as? Bool == true)
            #expect(listening["listen.port"] as? Int == socket.port)
            return gateway
        }
        var gateway = try start(1)
        let stream = CallStream(port: socket.port, key: setup.key)
        var outcomes: [CallStream.Outcome] = []
        do {
            defer { outcomes = stream.stop() }
            for n in 2...3 {
                try stream.waitFor(calls: 150)
                gateway.signal(SIGTERM)
                #expect(gateway.waitForExit() == 0)
                let requestsServed = gateway.logObjects.filter { $0["msg"] as? String == "request" }.count
                #expect(requestsServed > 0, "gateway \(n - 1) served calls")
                gateway = try start(n)
            }
            try stream.waitFor(calls: 150)
        }
        gateway.stop()
        #expect(outcomes.count >= 450)
        #expect(CallStream.problems(outcomes) == [:], "\(outcomes.count) calls")
        try setup.expectAudited(outcomes)
    }

    /// Two processes on one port with `listen.reuse_port`: the new one starts while the old
    /// one still serves, then the old one is sent SIGTERM and drains.
    @Test func anOverlappingRestartWithReusePortRefusesNoCallAndFailsNone() throws {
        try Self.withRequestMigration { migrating in try overlappingRestart(migrating: migrating) }
    }

    func overlappingRestart(migrating: Bool) throws {
        let setup = try Setup("restart-reuse-port")
        defer { setup.sim.stop() }
        let old = try GatewayProcess(dir: setup.dir, config: setup.config(port: 0, reusePort: true))
        defer { old.stop() }
        let stream = CallStream(port: old.port, key: setup.key, callers: 16)
        var outcomes: [CallStream.Outcome] = []
        var new: GatewayProcess?
        do {
            defer { outcomes = stream.stop() }
            try stream.waitFor(calls: 150)
            let home = setup.dir + "/new"
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            var config = setup.config(port: old.port, reusePort: true)
            config["audit"] = ["path": setup.dir + "/audit.sqlite3"]
            new = try GatewayProcess(dir: home, config: config)
            try stream.waitFor(calls: 150)
            old.child.signal(SIGTERM)
            #expect(old.child.waitForExit(seconds: 40) == 0)
            try stream.waitFor(calls: 150)
        }
        new?.stop()
        #expect(old.requestLogs.count > 0 && (new?.requestLogs.count ?? 0) > 0, "both served calls")
        var problems = CallStream.problems(outcomes)
        if !migrating, let reset = problems[CallStream.closedWithoutAnswer], reset <= 2 {
            // The kernel's race (docs/operations.md): a connection queued on the old socket in
            // the instant between its last accept and its close is reset. Never refused, never
            // answered wrongly.
            problems[CallStream.closedWithoutAnswer] = nil
        }
        #expect(problems == [:], "\(outcomes.count) calls; \(Self.errors(old.child.stderrLines + (new?.child.stderrLines ?? [])))")
        try setup.expectAudited(outcomes)
    }

    /// Runs `body` with `net.ipv4.tcp_migrate_req = 1` (connections queued on a closing
    /// `SO_REUSEPORT` listener move to another; docs/operations.md) where the test may set it
    /// (root), restoring the value after; `body` learns whether it is on.
    static func withRequestMigration(_ body: (Bool) throws -> Void) throws {
        let path = "/proc/sys/net/ipv4/tcp_migrate_req"
        let before = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        guard before == "0" else { return try body(before == "1") }
        let set = (try? "1".write(toFile: path, atomically: false, encoding: .utf8)) != nil
        defer { if set { try? "0".write(toFile: path, atomically: false, encoding: .utf8) } }
        try body(set)
    }

    static func errors(_ lines: [String]) -> [String] {
        lines.filter { $0.contains("\"error\"") || $0.contains("warning") || $0.contains("\"status\":503") }.prefix(6).map { String($0.prefix(400)) }
    }
}
