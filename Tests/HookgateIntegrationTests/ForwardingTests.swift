import Foundation
import Testing
@testable import Hookgate

/// End to end: a real gateway process in front of the real simulator over verified TLS.
@Suite(.serialized) struct ForwardingTests {
    static let hook = "E6DB9C1A-D15F-4248-81FA-5B61FC321DEF"
    static let hookLower = "e6db9c1a-d15f-4248-81fa-5b61fc321def"

    static func redeliver(_ requestID: String, hook: String = hook) -> String {
        "/hooks/\(hook)/requests/\(requestID)/redeliver"
    }

    /// Starts a simulator and a gateway with one team allowed every hook; always stops both.
    func withGateway(simulatorNames: [String] = ["localhost", "127.0.0.1"],
                     upstream: [String: Any] = [:], upstreamPort: Int? = nil, gatewayToken: String = Harness.serviceToken,
                     _ body: (GatewayProcess, SimulatorProcess, TeamKey) throws -> Void) throws {
        let dir = Harness.tempDir("fwd")
        let sim = try SimulatorProcess(dir: dir, names: simulatorNames)
        defer { sim.stop() }
        let key = TeamKey()
        let config = GatewayProcess.config(dir: dir, simulator: sim, upstreamPort: upstreamPort,
                                           teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"]]],
                                           upstream: upstream)
        let gw = try GatewayProcess(dir: dir, config: config, environment: ["HOOKSHOT_SERVICE_TOKEN": gatewayToken])
        defer { gw.stop() }
        try body(gw, sim, key)
    }

    @Test func relaysAnAllowedCallUnchanged() throws {
        try withGateway { gw, sim, key in
            let requestID = "29DD8606-4E01-46CB-ACA2-DD6022E74865"
            let r = try RawHTTP.request(port: gw.port, target: Self.redeliver(requestID),
                                        headers: [("Authorization", "Bearer \(key.key)")])
            #expect(r.status == 200)
            #expect(r.header("Content-Type") == "application/json; charset=utf-8")
            let gatewayID = try #require(r.header("X-Request-Id"))
            #expect(UUIDText.canonical(gatewayID) == gatewayID)
            let event = r.json
            #expect(event["id"] as? String == requestID.lowercased())
            #expect(event["hook_id"] as? String == Self.hookLower)
            #expect(event["redelivery"] as? Bool == true)
            #expect((event["delivery_id"] as? String).flatMap(UUIDText.canonical) != nil)
            // Byte for byte: the body the simulator sent is what the caller got.
            #expect(r.text.hasPrefix("{\"id\":\"\(requestID.lowercased())\""))
        }
    }

    @Test func upstreamReceivesExactlyTheContractRequest() throws {
        try withGateway { gw, sim, key in
            let requestID = "29dd8606-4e01-46cb-aca2-dd6022e74865"
            let r = try RawHTTP.request(port: gw.port, target: Self.redeliver(requestID.uppercased()),
                                        headers: [("Authorization", "Bearer \(key.key)"), ("Cookie", "session=abc"),
                                                  ("X-Request-Id", "caller-chosen-id"), ("Proxy-Authorization", "Basic eHg6eXk="),
                                                  ("Keep-Alive", "timeout=5"), ("X-Custom", "do-not-forward")],
                                        body: Array("caller body must not travel".utf8))
            #expect(r.status == 200)
            let gatewayID = try #require(r.header("X-Request-Id"))
            #expect(gatewayID != "caller-chosen-id")
            let seen = sim.requests
            try #require(seen.count == 1)
            let got = seen[0]
            #expect(got["method"] as? String == "POST")
            #expect(got["target"] as? String == "/hooks/\(Self.hookLower)/requests/\(requestID)/redeliver")
            #expect(got["body_bytes"] as? Int == 0)
            let headers = SimulatorProcess.headers(of: got)
            let names = Set(headers.map { $0.0.lowercased() })
            #expect(names == ["host", "authorization", "x-request-id", "user-agent", "accept", "content-length"])
            let auth = headers.first { $0.0.lowercased() == "authorization" }?.1
            #expect(auth == "Bearer sha256:\(SHA256.hex(Harness.serviceToken).prefix(16))")
            #expect(headers.first { $0.0.lowercased() == "x-request-id" }?.1 == gatewayID)
            #expect(headers.first { $0.0.lowercased() == "host" }?.1 == "localhost:\(sim.port)")
        }
    }

    @Test func relaysUpstreamErrorsByteForByte() throws {
        try withGateway { gw, _, key in
            let r500 = try RawHTTP.request(port: gw.port, target: Self.redeliver("00000500-4e01-46cb-aca2-dd6022e74865"),
                                           headers: [("Authorization", "Bearer \(key.key)")])
            #expect(r500.status == 500)
            #expect(r500.header("Content-Type") == "text/plain; charset=utf-8")
            #expect(r500.text == "upstream exploded: simulated failure\n")
            #expect(r500.header("X-Request-Id") != nil)
            let r404 = try RawHTTP.request(port: gw.port, target: Self.redeliver("00000404-4e01-46cb-aca2-dd6022e74865"),
                                           headers: [("Authorization", "Bearer \(key.key)")])
            #expect(r404.status == 404)
            #expect(r404.header("Content-Type") == "application/json; charset=utf-8")
            #expect(r404.text == #"{"error":"not_found","message":"hook or request not found"}"#)
            // Log lines are written by their own thread: wait for them.
            try gw.child.wait("two forwarded log lines") {
                gw.requestLogs.filter { $0["decision"] as? String == "forwarded" }.count == 2
            }
        }
    }

    @Test func upstreamRefusingTheServiceTokenIs502() throws {
        try withGateway(gatewayToken: "not-the-token-the-simulator-accepts") { gw, sim, key in
            let r = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                        headers: [("Authorization", "Bearer \(key.key)")])
            #expect(r.status == 502)
            #expect(r.header("Content-Type") == "application/problem+json")
            #expect((r.json["detail"] as? String)?.contains("service token") == true)
            #expect(r.json["request_id"] as? String == r.header("X-Request-Id"))
            #expect(sim.requests.count == 1)
        }
    }

    @Test func certificateForAnotherHostIs502AndNothingIsSent() throws {
        try withGateway(simulatorNames: ["wrong.example"]) { gw, sim, key in
            let r = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                        headers: [("Authorization", "Bearer \(key.key)")])
            #expect(r.status == 502)
            #expect(r.json["type"] as? String == "urn:hookgate:problem:upstream_error")
            let detail = r.json["detail"] as? String ?? ""
            #expect(detail.contains("verification failed"), "\(detail)")
            #expect(detail.contains("hostname mismatch"), "\(detail)")
            Thread.sleep(forTimeInterval: 0.2)
            #expect(sim.requests.isEmpty)
        }
    }

    @Test func unreachableUpstreamIs502() throws {
        let closedPort = RawHTTP.closedPort()
        try withGateway(upstreamPort: closedPort) { gw, _, key in
            let r = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                        headers: [("Authorization", "Bearer \(key.key)")])
            #expect(r.status == 502)
            #expect(r.json["title"] as? String == "Bad Gateway")
            let detail = r.json["detail"] as? String ?? ""
            #expect(detail == "upstream unreachable: 127.0.0.1:\(closedPort): Connection refused", "\(detail)")
            // Nothing reached Hookshot: no upstream time.
            gw.stop()
            let row = try #require(try AuditIntegrationTests.pairs(gw.auditPath)[r.header("X-Request-Id") ?? ""])
            #expect(row["upstream_ms"] == .null && row["upstream_status"] == .null)
            #expect(row["decision"] == .text("upstream_error"))
        }
    }

    @Test func anUpstreamThatStallsInTheTLSHandshakeIs502WithNothingSent() throws {
        // A listener that completes TCP handshakes (the kernel's backlog) and never speaks TLS.
        let (fd, port) = RawHTTP.boundSocket()
        defer { close(fd) }
        #expect(listen(fd, 16) == 0)
        try withGateway(upstream: ["connect_timeout_ms": 400], upstreamPort: port) { gw, _, key in
            let started = Date()
            let r = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                        headers: [("Authorization", "Bearer \(key.key)")])
            #expect(r.status == 502)
            #expect(r.json["type"] as? String == "urn:hookgate:problem:upstream_error")
            #expect(Date().timeIntervalSince(started) < 2.5)
            gw.stop()
            let row = try #require(try AuditIntegrationTests.pairs(gw.auditPath)[r.header("X-Request-Id") ?? ""])
            #expect(row["upstream_ms"] == .null)
        }
    }

    @Test func interimAnswersAreSkippedAndAMissingContentTypeStaysMissing() throws {
        try withGateway { gw, sim, key in
            let auth = [("Authorization", "Bearer \(key.key)")]
            for id in ["00000103-4e01-46cb-aca2-dd6022e74865", "00000100-4e01-46cb-aca2-dd6022e74865"] {
                let r = try RawHTTP.request(port: gw.port, target: Self.redeliver(id), headers: auth)
                #expect(r.status == 200, "\(id): \(r.text)")
                #expect(r.header("Content-Type") == "application/json; charset=utf-8")
                #expect(r.json["id"] as? String == id, "Hookshot's final answer is relayed")
            }
            let bare = try RawHTTP.request(port: gw.port, target: Self.redeliver("0000e0c7-4e01-46cb-aca2-dd6022e74865"), headers: auth)
            #expect(bare.status == 200)
            #expect(bare.header("Content-Type") == nil, "no Content-Type is invented: \(bare.headers)")
            #expect(bare.json["id"] as? String == "0000e0c7-4e01-46cb-aca2-dd6022e74865")
            #expect(sim.requests.count == 3, "each call sent once")
        }
    }

    @Test func aStaticTokenHookshotRefusedIsNeverSentAgainUntilAReload() throws {
        let dir = Harness.tempDir("static-401")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let tokenFile = dir + "/token"
        try "a-token-hookshot-refuses".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let key = TeamKey()
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(
            dir: dir, simulator: sim, teams: [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": ["*"]]],
            upstream: ["service_token": ["file": tokenFile]]))
        defer { gw.stop() }
        let auth = [("Authorization", "Bearer \(key.key)")]
        let first = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"), headers: auth)
        #expect(first.status == 502)
        #expect(sim.requests.count == 1)
        let second = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74866"), headers: auth)
        #expect(second.status == 502)
        #expect((second.json["detail"] as? String)?.contains("not sent again") == true, "\(second.text)")
        #expect(sim.requests.count == 1, "the refused token was sent again")
        let ready = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/readyz")
        #expect(ready.status == 503 && ready.text.contains("refused the service token"))
        // Ops put the right token in place and reload.
        try Harness.serviceToken.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        gw.child.signal(SIGHUP)
        try gw.child.wait("reload") { gw.child.stderrLines.contains { $0.contains("configuration reloaded") } }
        #expect(try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74867"), headers: auth).status == 200)
    }

    @Test func slowUpstreamIs504AfterExactlyOneUpstreamRequest() throws {
        try withGateway { gw, sim, key in
            let started = Date()
            let r = try RawHTTP.request(port: gw.port, target: Self.redeliver("00005100-4e01-46cb-aca2-dd6022e74865"),
                                        headers: [("Authorization", "Bearer \(key.key)")])
            let elapsed = Date().timeIntervalSince(started)
            #expect(r.status == 504)
            #expect(r.json["type"] as? String == "urn:hookgate:problem:upstream_timeout")
            #expect(elapsed >= 1.4 && elapsed < 3.0, "timeout_ms is 1500; took \(elapsed) s")
            // Wait past the simulator's own delay: still exactly one request upstream.
            Thread.sleep(forTimeInterval: 2.0)
            #expect(sim.requests.filter { ($0["target"] as? String)?.contains("00005100") == true }.count == 1)
        }
    }

    @Test func aCallThatFindsNoFreePoolConnectionIs502AfterTheQueueTimeout() throws {
        try withRig("pool-queue", upstream: ["max_connections": 1, "queue_timeout_ms": 300, "timeout_ms": 6000]) { rig in
            let port = rig.gw.port, key = rig.key
            let slowDone = DispatchSemaphore(value: 0)
            let slow = LockedBox<HTTPResponse?>(nil)
            Thread.detachNewThread {
                slow.set(try? RawHTTP.request(port: port, target: Self.redeliver("00005100-4e01-46cb-aca2-dd6022e74865"),
                                              headers: [("Authorization", "Bearer \(key.key)")]))
                slowDone.signal()
            }
            // The slow call holds the only connection; the next one waits 300 ms for it, then 502.
            try rig.gw.child.wait("the slow call to reach the upstream") { !rig.sim.requests.isEmpty }
            let started = Date()
            let r = try RawHTTP.request(port: port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                        headers: rig.auth)
            let elapsed = Date().timeIntervalSince(started)
            #expect(r.status == 502)
            #expect(r.json["detail"] as? String == "no upstream connection became free within 300 ms", "\(r.text)")
            #expect(elapsed >= 0.25 && elapsed < 2.0, "queue_timeout_ms is 300; took \(elapsed) s")
            #expect(slowDone.wait(timeout: .now() + 10) == .success)
            #expect(slow.get()?.status == 200)
            // Only the slow call ever reached Hookshot.
            #expect(rig.sim.requests.count == 1)
        }
    }

    @Test func upstreamClosingWithoutAnAnswerIs502AndIsNotRetried() throws {
        try withGateway { gw, sim, key in
            // A first call leaves a pooled connection; the next one reuses it and the upstream hangs up.
            let ok = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                         headers: [("Authorization", "Bearer \(key.key)")])
            #expect(ok.status == 200)
            let r = try RawHTTP.request(port: gw.port, target: Self.redeliver("0000c105-4e01-46cb-aca2-dd6022e74865"),
                                        headers: [("Authorization", "Bearer \(key.key)")])
            #expect(r.status == 502)
            Thread.sleep(forTimeInterval: 0.3)
            #expect(sim.requests.filter { ($0["target"] as? String)?.contains("0000c105") == true }.count == 1)
        }
    }

    @Test func reusesPooledUpstreamConnections() throws {
        try withGateway { gw, _, key in
            for i in 0..<5 {
                let r = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e7486\(i)"),
                                            headers: [("Authorization", "Bearer \(key.key)")])
                #expect(r.status == 200)
            }
            let metrics = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text
            #expect(metrics.contains("\nhookgate_upstream_connections 1\n"), "\(metrics)")
            #expect(metrics.contains("hookgate_upstream_connections_opened_total 1\n"), "\(metrics)")
        }
    }

    @Test func routeAndMethodRefusalsAreProblemJSON() throws {
        try withGateway { gw, sim, key in
            let auth = [("Authorization", "Bearer \(key.key)")]
            let cases: [(String, String, Int, String)] = [
                ("POST", "/hooks/not-a-uuid/requests/29dd8606-4e01-46cb-aca2-dd6022e74865/redeliver", 400, "bad_request"),
                ("POST", Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865") + "?x=1", 400, "bad_request"),
                ("POST", "/hooks", 404, "not_found"),
                ("GET", "/", 404, "not_found"),
                ("GET", Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"), 405, "method_not_allowed"),
                ("DELETE", Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"), 405, "method_not_allowed"),
            ]
            for (method, target, status, decision) in cases {
                let r = try RawHTTP.request(port: gw.port, method: method, target: target, headers: auth)
                #expect(r.status == status, "\(method) \(target)")
                #expect(r.header("Content-Type") == "application/problem+json")
                let id = try #require(r.header("X-Request-Id"))
                let problem = r.json
                #expect(problem["type"] as? String == "urn:hookgate:problem:\(decision)")
                #expect(problem["status"] as? Int == status)
                #expect(problem["request_id"] as? String == id)
                #expect(problem["title"] is String && problem["detail"] is String)
                if status == 405 { #expect(r.header("Allow") == "POST") }
            }
            #expect(sim.requests.isEmpty)
        }
    }

    @Test func noSecretIsLoggedOrEchoed() throws {
        try withGateway { gw, sim, key in
            let bogus = "bogus-key-\(UUID().uuidString)"
            _ = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                    headers: [("Authorization", "Bearer \(key.key)")])
            let refused = try RawHTTP.request(port: gw.port, target: Self.redeliver("29dd8606-4e01-46cb-aca2-dd6022e74865"),
                                              headers: [("Authorization", "Bearer \(bogus)")])
            #expect(refused.status == 401)
            #expect(!refused.text.contains(bogus))
            gw.stop()
            let all = gw.child.stderrLines.joined(separator: "\n")
            #expect(all.contains("\"request\""))
            #expect(!all.contains(key.key))
            #expect(!all.contains(bogus))
            #expect(!all.contains(Harness.serviceToken))
        }
    }
}
