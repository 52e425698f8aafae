import Foundation
import Testing
@testable import Hookgate
import HookgateSimulator

/// What ops rely on: reload, limits, slow and many clients, the audit commands.
@Suite struct OperationsTests {
    static let hookA = "e6db9c1a-d15f-4248-81fa-5b61fc321def"
    static let hookB = "0f0f0f0f-1111-4222-8333-444444444444"
    static func path(_ hook: String = hookA, _ request: String = "29dd8606-4e01-46cb-aca2-dd6022e74865") -> String {
        "/hooks/\(hook)/requests/\(request)/redeliver"
    }

    @Test func sighupAppliesAnEditedAllowListAndRejectsABrokenFile() throws {
        let dir = Harness.tempDir("reload")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let key = TeamKey()
        var config = GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [key.sha256], "allow_hooks": [Self.hookA]],
        ])
        let gw = try GatewayProcess(dir: dir, config: config)
        defer { gw.stop() }
        let auth = [("Authorization", "Bearer \(key.key)")]
        #expect(try RawHTTP.request(port: gw.port, target: Self.path(Self.hookB), headers: auth).status == 403)

        config["teams"] = [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": [Self.hookA, Self.hookB]]]
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: gw.configPath))
        let pid = gw.child.process.processIdentifier
        gw.child.signal(SIGHUP)
        try gw.child.wait("reload") { gw.child.stderrLines.contains { $0.contains("configuration reloaded") } }
        #expect(try RawHTTP.request(port: gw.port, target: Self.path(Self.hookB), headers: auth).status == 200)
        #expect(gw.child.process.processIdentifier == pid && gw.child.process.isRunning)

        try Data("{ \"teams\": [ broken".utf8).write(to: URL(fileURLWithPath: gw.configPath))
        gw.child.signal(SIGHUP)
        try gw.child.wait("rejected reload") { gw.child.stderrLines.contains { $0.contains("reload rejected") } }
        #expect(try RawHTTP.request(port: gw.port, target: Self.path(Self.hookB), headers: auth).status == 200)
        let metrics = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text
        #expect(metrics.contains("hookgate_config_reloads_total{result=\"ok\"} 1"))
        #expect(metrics.contains("hookgate_config_reloads_total{result=\"error\"} 1"))
    }

    @Test func aReloadThatNeedsARestartIsRejectedWhole() throws {
        let dir = Harness.tempDir("reload-upstream")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let key = TeamKey()
        let teams: [[String: Any]] = [["name": "claims", "key_sha256": [key.sha256], "allow_hooks": [Self.hookA]]]
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(dir: dir, simulator: sim, teams: teams))
        defer { gw.stop() }
        // A pool setting and a new hook in one file: the hook must not apply under a
        // config_version that names a file whose pool setting is not in force.
        let changed = GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [key.sha256], "allow_hooks": [Self.hookA, Self.hookB]]], upstream: ["queue_timeout_ms": 500])
        try JSONSerialization.data(withJSONObject: changed).write(to: URL(fileURLWithPath: gw.configPath))
        gw.child.signal(SIGHUP)
        try gw.child.wait("reload") { gw.child.stderrLines.contains { $0.contains("reload rejected") } }
        let line = gw.child.stderrLines.first { $0.contains("reload rejected") } ?? ""
        #expect(line.contains(#""needs_restart":"upstream""#), "\(line)")
        #expect(!gw.child.stderrLines.contains { $0.contains("configuration reloaded") })
        // The running configuration keeps serving, unchanged.
        let auth = [("Authorization", "Bearer \(key.key)")]
        #expect(try RawHTTP.request(port: gw.port, target: Self.path(), headers: auth).status == 200)
        #expect(try RawHTTP.request(port: gw.port, target: Self.path(Self.hookB), headers: auth).status == 403)
        let metrics = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text
        #expect(metrics.contains("hookgate_config_reloads_total{result=\"error\"} 1"))
    }

    @Test func oversizedHeadersAndBodiesAreRefusedAndAudited() throws {
        try withRig("limits", allowHooks: ["*"], extra: ["limits": ["max_header_bytes": 2048, "max_body_bytes": 1024]]) { rig in
            let sim = rig.sim, gw = rig.gw, key = rig.key
            let auth = [("Authorization", "Bearer \(key.key)")]
            let big = try RawHTTP.request(port: gw.port, target: Self.path(), headers: auth + [("X-Padding", String(repeating: "a", count: 3000))])
            #expect(big.status == 431)
            #expect(big.json["type"] as? String == "urn:hookgate:problem:too_large")
            let body = try RawHTTP.request(port: gw.port, target: Self.path(), headers: auth, body: Array(repeating: 65, count: 2000))
            #expect(body.status == 413)
            // A body within the limit is read and dropped: the call goes through without it.
            let small = try RawHTTP.request(port: gw.port, target: Self.path(), headers: auth, body: Array(repeating: 65, count: 500))
            #expect(small.status == 200)
            #expect(sim.requests.count == 1)
            #expect(sim.requests.first?["body_bytes"] as? Int == 0)
        }
    }

    @Test func aSlowlorisGetsAnAudited408WhileOthersAreServed() throws {
        try withRig("slowloris", allowHooks: ["*"], extra: ["limits": ["client_timeout_ms": 1000]]) { rig in
            let gw = rig.gw, key = rig.key
            let fd = try RawSocket.connect(port: gw.port)
            defer { close(fd) }
            let started = Date()
            var answeredAfter: Double?
            // The head up to a field that then trickles in, one byte every 50 ms.
            let head = Array("POST \(Self.path()) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(key.key)\r\nX-Slow: ".utf8)
            #expect(send(fd, head, head.count, Int32(MSG_NOSIGNAL)) == head.count)
            for byte in Array(repeating: UInt8(ascii: "a"), count: 60) {
                var b = byte
                if send(fd, &b, 1, Int32(MSG_NOSIGNAL)) <= 0 || RawSocket.readable(fd) {
                    answeredAfter = Date().timeIntervalSince(started)
                    break
                }
                // Meanwhile a well-behaved caller is served at once.
                if Date().timeIntervalSince(started) > 0.3 && Date().timeIntervalSince(started) < 0.45 {
                    let r = try RawHTTP.request(port: gw.port, target: Self.path(), headers: [("Authorization", "Bearer \(key.key)")])
                    #expect(r.status == 200)
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
            let after = try #require(answeredAfter, "the slow client was never answered")
            #expect(after >= 0.9 && after < 2.5, "answered after \(after) s")
            // The answer is a whole 408 problem, then the connection closes.
            let r = try RawSocket.readResponse(fd)
            #expect(r.status == 408)
            #expect(r.header("Connection") == "close")
            let id = try #require(r.header("X-Request-Id"))
            #expect(r.json["type"] as? String == "urn:hookgate:problem:bad_request")
            let metrics = try RawHTTP.request(port: gw.adminPort, method: "GET", target: "/metrics").text
            #expect(metrics.contains("hookgate_client_timeouts_total 1"))
            gw.stop()
            let row = try #require(try AuditIntegrationTests.pairs(rig.dir + "/audit.sqlite3")[id])
            #expect(row["status"] == .int(408))
            #expect(row["decision"] == .text("bad_request"))
            #expect(row["key_fingerprint"] == .text(KeyDigest.fingerprint(key.key)))
            #expect(row["team"] == .text("claims"))
        }
    }

    @Test func connectionsOverTheCapWaitUntilOneCloses() throws {
        try withRig("maxconn", allowHooks: ["*"], extra: ["limits": ["max_connections": 3, "client_timeout_ms": 20000]]) { rig in
            let gw = rig.gw, key = rig.key
            let idle = try (0..<3).map { _ in try RawSocket.connect(port: gw.port) }
            Thread.sleep(forTimeInterval: 0.2)
            let answered = LockedBox<Int?>(nil)
            let port = gw.port, k = key.key
            Thread.detachNewThread {
                let r = try? RawHTTP.request(port: port, target: Self.path(), headers: [("Authorization", "Bearer \(k)")])
                answered.set(r?.status ?? -1)
            }
            Thread.sleep(forTimeInterval: 0.7)
            #expect(answered.get() == nil, "a connection over max_connections was served")
            close(idle[0])
            let deadline = Date().addingTimeInterval(5)
            while answered.get() == nil && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
            #expect(answered.get() == 200)
            idle.dropFirst().forEach { close($0) }
        }
    }

    @Test func hundredsOfConcurrentCallersAreAllAnsweredAndAudited() throws {
        try withRig("many", allowHooks: ["*"]) { rig in
            let dir = rig.dir, gw = rig.gw, key = rig.key
            let statuses = LockedBox<[Int]>([])
            let group = DispatchGroup()
            let port = gw.port, k = key.key
            for i in 0..<300 {
                group.enter()
                Thread.detachNewThread {
                    let id = String(format: "29dd8606-4e01-46cb-aca2-%012d", i)
                    let s = (try? RawHTTP.request(port: port, target: Self.path(Self.hookA, id), headers: [("Authorization", "Bearer \(k)")]))?.status ?? -1
                    statuses.update { $0.append(s) }
                    group.leave()
                }
            }
            #expect(group.wait(timeout: .now() + 60) == .success)
            #expect(statuses.get().count == 300)
            #expect(statuses.get().allSatisfy { $0 == 200 }, "\(Dictionary(grouping: statuses.get(), by: { $0 }).mapValues(\.count))")
            gw.stop()
            let verify = try ChildProcess(arguments: ["audit", "verify", "--db", dir + "/audit.sqlite3"])
            #expect(verify.waitForExit() == 0)
            try verify.wait("verify output") { !verify.stdoutLines.isEmpty }
            #expect(verify.stdoutLines.joined().contains("600 records"), "\(verify.stdoutLines)")
        }
    }

    @Test func auditVerifyNamesTheRecordAfterAnEditWithTheStockShell() throws {
        let dir = Harness.tempDir("tamper")
        let sim = try SimulatorProcess(dir: dir)
        defer { sim.stop() }
        let key = TeamKey()
        let gw = try GatewayProcess(dir: dir, config: GatewayProcess.config(dir: dir, simulator: sim, teams: [
            ["name": "claims", "key_sha256": [key.sha256], "allow_hooks": [Self.hookA]],
        ]))
        var ids: [String] = []
        for hook in [Self.hookA, Self.hookB, Self.hookA] {
            let r = try RawHTTP.request(port: gw.port, target: Self.path(hook), headers: [("Authorization", "Bearer \(key.key)")])
            ids.append(r.header("X-Request-Id") ?? "")
        }
        gw.stop()
        let db = dir + "/audit.sqlite3"
        let ok = try ChildProcess(arguments: ["audit", "verify", "--db", db])
        #expect(ok.waitForExit() == 0)

        // Compliance-style tampering with the stock sqlite3 shell: turn the refusal into a success.
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        shell.arguments = [db, "UPDATE audit_responses SET status = 200, decision = 'forwarded' WHERE request_id = '\(ids[1])'"]
        try shell.run()
        shell.waitUntilExit()
        #expect(shell.terminationStatus == 0)

        let broken = try ChildProcess(arguments: ["audit", "verify", "--db", db])
        #expect(broken.waitForExit() == 1)
        try broken.wait("verify output") { !(broken.stdoutLines + broken.stderrLines).isEmpty }
        let text = (broken.stdoutLines + broken.stderrLines).joined(separator: "\n")
        #expect(text.contains(ids[1]), "\(text)")
        #expect(text.contains("audit_responses"), "\(text)")
    }
}

enum RawSocket {
    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw HarnessError("connect failed") }
        return fd
    }

    /// True if something (bytes or end of file) can be read without blocking.
    static func readable(_ fd: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) > 0
    }

    /// Reads until the peer closes (or 5 s pass) and parses one response.
    static func readResponse(_ fd: Int32) throws -> HTTPResponse {
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let out = RawHTTP.readToEnd(fd)
        var parser = ResponseParser(maxHeaderBytes: 1 << 20, maxBodyBytes: 1 << 24)
        let r: UpstreamResponse
        if case .complete(let done) = try parser.feed(out) { r = done } else { r = try parser.finish() }
        return HTTPResponse(status: r.status, headers: r.headers.map { ($0.name, $0.value) }, body: r.body)
    }

    /// True if the peer has closed (a zero-length read without blocking).
    static func peerClosed(_ fd: Int32) -> Bool {
        var b: UInt8 = 0
        let n = recv(fd, &b, 1, Int32(MSG_DONTWAIT | MSG_PEEK))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }
}

/// The main listener over TLS, with a renewed certificate picked up on SIGHUP (checked with
/// curl, as a caller would).
@Suite struct ListenerTLSTests {
    static func curl(_ args: [String]) throws -> (status: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        p.arguments = ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"] + args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    @Test func servesTLSAndPicksUpARenewedCertificateOnReload() throws {
        let dir = Harness.tempDir("listen-tls")
        let first = try Certificates.makeTestPKI(directory: dir + "/pki-a")
        let second = try Certificates.makeTestPKI(directory: dir + "/pki-b")
        let certPath = dir + "/listen.crt", keyPath = dir + "/listen.key"
        try FileManager.default.copyItem(atPath: first.cert, toPath: certPath)
        try FileManager.default.copyItem(atPath: first.key, toPath: keyPath)
        try withRig("tls", extra: ["listen": ["address": "127.0.0.1", "port": 0,
                                              "tls": ["cert_file": certPath, "key_file": keyPath]]]) { rig in
            let url = "https://localhost:\(rig.gw.port)/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/29dd8606-4e01-46cb-aca2-dd6022e74865/redeliver"
            let auth = ["-X", "POST", "-H", "Authorization: Bearer \(rig.key.key)"]
            #expect(try Self.curl(auth + ["--cacert", first.caCert, url]) == (0, "200"))
            // TLS 1.1 and below are refused.
            #expect(try Self.curl(["--tlsv1.0", "--tls-max", "1.1", "--cacert", first.caCert, url]).status != 0)

            for (from, to) in [(second.cert, certPath), (second.key, keyPath)] {
                try FileManager.default.removeItem(atPath: to)
                try FileManager.default.copyItem(atPath: from, toPath: to)
            }
            rig.gw.child.signal(SIGHUP)
            try rig.gw.child.wait("reload") { rig.gw.child.stderrLines.contains { $0.contains("configuration reloaded") } }
            #expect(try Self.curl(auth + ["--cacert", second.caCert, url]) == (0, "200"))
            #expect(try Self.curl(auth + ["--cacert", first.caCert, url]).status == 60)  // the old CA no longer fits
        }
    }
}
