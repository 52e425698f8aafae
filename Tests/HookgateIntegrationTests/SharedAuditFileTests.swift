import Foundation
import Testing
@testable import Hookgate

/// Two gateway processes on one audit file (the overlap of a rolling restart on one host, or a
/// blue/green pair): every call answered, one chain, every pair (issue 20).
@Suite struct SharedAuditFileTests {
    @Test func twoGatewaysAlternatingOnOneAuditFileAnswerEveryCallIntoOneChain() throws {
        let dir = Harness.tempDir("shared-audit")
        let shared = dir + "/audit.sqlite3"
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let key = TeamKey()
        func gateway(_ name: String) throws -> GatewayProcess {
            let home = dir + "/" + name
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            return try GatewayProcess(dir: home, config: GatewayProcess.config(
                dir: home, simulator: sim, teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"]]],
                extra: ["audit": ["path": shared]]))
        }
        let blue = try gateway("blue"), green = try gateway("green")
        defer {
            blue.stop()
            green.stop()
        }
        var answered: [String] = []
        for i in 0..<40 {
            let gw = i % 2 == 0 ? blue : green
            let event = String(format: "29dd8606-4e01-46cb-aca2-%012d", i)
            let answer = try RawHTTP.request(port: gw.port, target: "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/\(event)/redeliver",
                                             headers: [("Authorization", "Bearer \(key.key)")])
            #expect(answer.status == 200, "call \(i) through \(i % 2 == 0 ? "blue" : "green"): \(answer.status) \(answer.text)")
            answered.append(answer.header("X-Request-Id") ?? "?")
        }
        blue.stop()
        green.stop()
        let query = try AuditQuery(path: shared)
        let result = try query.verify()
        #expect(result.isIntact, "\(result.broken ?? "")")
        #expect((result.records, result.pairs, result.incomplete) == (80, 40, 0))
        #expect(result.derivedMismatch == nil)
        let rows = try query.list(AuditFilter()).rows
        let recorded = rows.compactMap { row -> String? in if case .text(let id) = row[0] { id } else { nil } }
        #expect(Set(recorded) == Set(answered), "every answered call has its pair")
        #expect(rows.allSatisfy { $0[AuditSchema.pairColumns.firstIndex(of: "status")!] == .int(200) })
    }
}
