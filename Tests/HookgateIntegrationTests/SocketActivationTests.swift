import Foundation
import Testing
@testable import Hookgate

/// `hookgate serve` under `systemd-socket-activate` (systemd's own tool for the socket
/// activation protocol): it serves on the sockets it is given, and binds the others (issue 20).
@Suite struct SocketActivationTests {
    static let tool = "/usr/bin/systemd-socket-activate"

    struct Activated {
        let child: ChildProcess
        let setup: RestartTests.Setup
        let configPath: String
        let adminPort: Int

        /// `systemd-socket-activate` listening on `listen` (with `--fdname` names), the gateway
        /// started on the first connection with the config's `admin.port` = `adminPort`.
        init(_ name: String, listen: [Int], names: [String], adminPort: Int) throws {
            setup = try RestartTests.Setup(name)
            self.adminPort = adminPort
            var config = setup.config(port: 8080)
            config["admin"] = ["address": "127.0.0.1", "port": adminPort]
            configPath = try setup.writeConfig(config, as: "config.json")
            var args = listen.flatMap { ["-l", "127.0.0.1:\($0)"] }
            if !names.isEmpty { args.append("--fdname=" + names.joined(separator: ":")) }
            args += ["-E", "HOOKSHOT_SERVICE_TOKEN", Harness.binary, "serve", "--config", configPath]
            child = try ChildProcess(arguments: args, environment: ["HOOKSHOT_SERVICE_TOKEN": Harness.serviceToken], executable: SocketActivationTests.tool)
            try child.wait("systemd-socket-activate listening") { child.stderrLines.filter { $0.hasPrefix("Listening on") }.count == listen.count }
        }

        func stop() {
            child.stop()
            setup.sim.stop()
        }

        var listening: [String: Any]? { ChildProcess.objects(child.stderrLines).first { $0["msg"] as? String == "listening" } }

        /// The gateway's `listening` line (its log reaches the pipe a moment after it answers).
        func waitListening() throws -> [String: Any] {
            try child.wait("the gateway's listening line") { listening != nil }
            return listening!
        }

        func call(port: Int) throws -> HTTPResponse {
            try RawHTTP.request(port: port, target: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/29dd8606-4e01-46cb-aca2-dd6022e74865/redeliver",
                                headers: [("Authorization", "Bearer \(setup.key.key)")])
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: tool)))
    func servesOnTheInheritedSocketAndBindsTheAdminListenerAsConfigured() throws {
        let main = RawHTTP.closedPort(), admin = RawHTTP.closedPort()
        let activated = try Activated("activate-main", listen: [main], names: [], adminPort: admin)
        defer { activated.stop() }
        // The first connection starts the gateway; it waits in the socket's backlog meanwhile.
        let answer = try activated.call(port: main)
        #expect(answer.status == 200, "\(answer.text)")
        let listening = try activated.waitListening()
        #expect(listening["listen.inherited"] as? Bool == true)
        #expect(listening["listen.port"] as? Int == main)
        #expect(listening["listen.socket"] as? String == "127.0.0.1:\(main)")
        #expect(listening["admin.inherited"] as? Bool == false)
        #expect(listening["admin.port"] as? Int == admin)
        let warning = ChildProcess.objects(activated.child.stderrLines).first { $0["msg"] as? String == "the inherited socket, not listen.port, is used" }
        #expect(warning?["listen.port"] as? Int == 8080, "the config says 8080: the difference is logged")
        let ready = try RawHTTP.request(port: admin, method: "GET", target: "/readyz")
        #expect(ready.status == 200)
        // The audit has the call, with its request id.
        activated.child.stop()
        let rows = try AuditQuery(path: activated.setup.dir + "/audit.sqlite3").list(AuditFilter()).rows
        #expect(rows.count == 1 && rows.first?[0] == .text(answer.header("X-Request-Id") ?? "?"))
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: tool)))
    func takesBothSocketsByName() throws {
        let admin = RawHTTP.closedPort(), main = RawHTTP.closedPort()
        // Given admin first: the names decide, not the order.
        let activated = try Activated("activate-named", listen: [admin, main], names: ["admin", "main"], adminPort: 0)
        defer { activated.stop() }
        let ready = try RawHTTP.request(port: admin, method: "GET", target: "/readyz")
        #expect(ready.status == 200, "\(ready.text)")
        let listening = try activated.waitListening()
        #expect(listening["listen.inherited"] as? Bool == true && listening["admin.inherited"] as? Bool == true)
        #expect(listening["listen.port"] as? Int == main && listening["admin.port"] as? Int == admin)
        #expect(try activated.call(port: main).status == 200)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: tool)))
    func refusesSocketsItCannotTell() throws {
        let a = RawHTTP.closedPort(), b = RawHTTP.closedPort()
        let activated = try Activated("activate-unknown", listen: [a, b], names: ["main", "metrics"], adminPort: 0)
        defer { activated.stop() }
        _ = try? RawHTTP.request(port: a, method: "GET", target: "/", timeout: 3)
        try activated.child.wait("the gateway to refuse to start") { !activated.child.process.isRunning }
        #expect(activated.child.process.terminationStatus == 1)
        let error = ChildProcess.objects(activated.child.stderrLines).first { $0["msg"] as? String == "cannot start" }
        #expect(error?["error"] as? String == "inherited socket 4 is named \"metrics\": with names, each socket must be \"main\" or \"admin\", once (FileDescriptorName=)")
    }
}
