import Foundation
import Testing
@testable import Hookgate

/// scripts/audit-browser: Datasette (pinned, in a virtual environment) on an audit file the
/// gateway wrote, read-only on 127.0.0.1, every ready query of deploy/datasette/metadata.yml
/// answering through its JSON API (issue 18).
@Suite struct AuditBrowserTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/audit-browser").path

    @Test func everyReadyQueryAnswersOnAFileTheGatewayWrote() throws {
        let dir = Harness.tempDir("audit-browser")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let key = TeamKey()
        let hook = "e6db9c1a-d15f-4248-81fa-5b61fc321def"
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [key.sha256], "allow_hooks": [hook]],
        ]))
        let event = "29dd8606-4e01-46cb-aca2-dd6022e74865"
        var requestIDs: [String] = []
        for target in ["/hooks/\(hook)/requests/\(event)/redeliver", "/hooks/\(hook)/requests/\(event)/redeliver",
                       "/hooks/0f0f0f0f-1111-4222-8333-444444444444/requests/\(event)/redeliver"] {
            let answer = try RawHTTP.request(port: gw.port, target: target, headers: [("Authorization", "Bearer \(key.key)")])
            requestIDs.append(answer.header("X-Request-Id") ?? "")
        }
        _ = try RawHTTP.request(port: gw.port, target: "/hooks/\(hook)/requests/\(event)/redeliver")  // no key: 401
        gw.stop()

        let (process, port) = try Self.serve([gw.auditPath], dir: dir)
        defer { Self.stop(process) }
        func json(_ path: String) throws -> [[String: Any]] { try Self.json(port, path) }
        let db = "/audit"
        let period = "since=2026-01-01&until=2100-01-01&_shape=array"
        let byHook = try json("\(db)/hook_redeliveries.json?hook_id=\(hook.uppercased())&\(period)")
        #expect(byHook.map { $0["decision"] as? String } == ["forwarded", "forwarded", "unauthenticated"])
        let refusals = try json("\(db)/refusals_by_team.json?\(period)")
        #expect(Set(refusals.map { "\($0["team"] ?? "-"):\($0["decision"] ?? "")=\($0["calls"] ?? "")" })
                == ["claims:forbidden=1", "<null>:unauthenticated=1"] || refusals.count == 2, "\(refusals)")
        #expect(try json("\(db)/calls_without_response.json?_shape=array").isEmpty)
        let redeliveries = try json("\(db)/redeliveries_of_request.json?event_request_id=\(event)&_shape=array")
        #expect(redeliveries.count == 4)
        let one = try json("\(db)/call_by_request_id.json?request_id=\(requestIDs[0])&_shape=array")
        #expect(one.count == 1 && one.first?["status"] as? Int == 200 && one.first?["team"] as? String == "claims")
        // The table with its facets, and nothing but the ready queries: ad hoc SQL is refused.
        let table = try RawHTTP.request(port: port, method: "GET", target: "\(db)/audit_pairs.json?_facet=decision")
        #expect(table.status == 200 && table.text.contains("\"facet_results\""))
        #expect(try RawHTTP.request(port: port, method: "GET", target: "\(db).json?sql=select+count(*)+from+audit_requests").status == 403)
        let page = try RawHTTP.request(port: port, method: "GET", target: db)
        #expect(page.text.contains("Who redelivered a hook in a period"))

        // As compliance sees it: the pages rendered by a real browser (headless Chromium, when
        // installed: .ci/run installs it), the ready queries listed, one answering in its table.
        guard let browser = Self.browser else { return }
        let index = try Self.render(browser, "http://127.0.0.1:\(port)\(db)", dir: dir)
        for title in ["Who redelivered a hook in a period", "Refusals by team and decision", "Calls without a response record",
                      "Every redelivery of one Hookshot request", "One call by its X-Request-Id"] {
            #expect(index.contains(title), "\(title) not on the rendered page")
        }
        let call = try Self.render(browser, "http://127.0.0.1:\(port)\(db)/call_by_request_id?request_id=\(requestIDs[0])", dir: dir)
        #expect(call.contains("returning 1 row"), "\(call.prefix(600))")
        for cell in ["<td class=\"col-request_id\">\(requestIDs[0])</td>", "<td class=\"col-team\">claims</td>",
                     "<td class=\"col-decision\">forwarded</td>", "<td class=\"col-status\">200</td>"] {
            #expect(call.contains(cell), "\(cell) not in the rendered table")
        }
    }

    static let browser = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// The DOM of `url` after a real browser rendered it.
    static func render(_ browser: String, _ url: String, dir: String) throws -> String {
        let out = dir + "/dom-\(UUID().uuidString.prefix(8)).html"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: browser)
        process.arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(dir)/chromium", "--dump-dom", url]
        process.standardOutput = FileHandle(forWritingAtPath: out)
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
    }

    /// A rotated audit (audit.rotate): a directory is served file by file; rotated files, which
    /// never change, immutable (no lock that would hold up the next rotation).
    @Test func aRotatedAuditIsServedFileByFileTheRotatedOnesImmutable() throws {
        let dir = Harness.tempDir("audit-browser-rotated")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let key = TeamKey()
        let hook = "e6db9c1a-d15f-4248-81fa-5b61fc321def"
        var config = GatewayProcess.config(dir: dir, simulator: sim, teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": [hook]]])
        try FileManager.default.createDirectory(atPath: dir + "/audit", withIntermediateDirectories: true)
        config["audit"] = ["path": dir + "/audit/audit.sqlite3", "rotate": ["max_bytes": 4096]]
        let gw = try GatewayProcess(dir: dir, config: config)
        var first = ""
        for i in 0..<3 {
            let answer = try RawHTTP.request(port: gw.port, target: "/hooks/\(hook)/requests/29dd8606-4e01-46cb-aca2-dd6022e7486\(i)/redeliver",
                                             headers: [("Authorization", "Bearer \(key.key)")])
            #expect(answer.status == 200)
            if i == 0 { first = answer.header("X-Request-Id") ?? "" }
        }
        gw.stop()
        let rotated = try FileManager.default.contentsOfDirectory(atPath: dir + "/audit").filter { $0.hasPrefix("audit-") }.sorted()
        try #require(rotated.count >= 2, "\(rotated)")
        let (process, port) = try Self.serve([dir + "/audit"], dir: dir)
        defer { Self.stop(process) }
        let answer = try RawHTTP.request(port: port, method: "GET", target: "/-/databases.json")
        let databases = (try? JSONSerialization.jsonObject(with: Data(answer.body)) as? [[String: Any]]) ?? []
        var mutable: [String: Bool] = [:]
        for d in databases { if let name = d["name"] as? String { mutable[name] = d["is_mutable"] as? Bool } }
        #expect(mutable["audit"] == true, "\(mutable)")
        for name in rotated { #expect(mutable[String(name.prefix { $0 != "." })] == false, "\(name): \(mutable)") }
        let oldest = String(rotated[0].prefix { $0 != "." })
        let rows = try Self.json(port, "/\(oldest)/call_by_request_id.json?request_id=\(first)&_shape=array")
        #expect(rows.count == 1 && rows.first?["request_id"] as? String == first, "\(rows)")
    }

    /// scripts/audit-browser on `arguments`, on a free loopback port, once Datasette answers.
    static func serve(_ arguments: [String], dir: String) throws -> (Process, Int) {
        let port = RawHTTP.closedPort()
        let cache = (ProcessInfo.processInfo.environment["HOME"] ?? "/root") + "/.cache/hookgate/datasette-tests"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.script] + arguments + ["--port", String(port)]
        process.environment = ProcessInfo.processInfo.environment.merging(["HOOKGATE_DATASETTE_VENV": cache]) { $1 }
        let log = dir + "/datasette.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        // The first run installs Datasette from PyPI.
        let deadline = Date().addingTimeInterval(240)
        while (try? RawHTTP.request(port: port, method: "GET", target: "/-/versions.json").status) != 200 {
            guard process.isRunning, Date() < deadline else {
                stop(process)
                throw HarnessError("Datasette did not start: \((try? String(contentsOfFile: log, encoding: .utf8))?.suffix(600) ?? "")")
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        return (process, port)
    }

    /// SIGKILL: a child of the test runner may have SIGTERM blocked (Harness.swift).
    static func stop(_ process: Process) {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    static func json(_ port: Int, _ path: String) throws -> [[String: Any]] {
        let answer = try RawHTTP.request(port: port, method: "GET", target: path)
        #expect(answer.status == 200, "\(path): \(answer.status) \(answer.text.prefix(300))")
        return (try? JSONSerialization.jsonObject(with: Data(answer.body)) as? [[String: Any]]) ?? []
    }
}
