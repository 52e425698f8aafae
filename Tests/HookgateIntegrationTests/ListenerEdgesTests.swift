import Foundation
import Testing
@testable import Hookgate

/// The main listener as an attacker and a careless client meet it: raw bytes over a real
/// socket, each answered by Hookgate itself (X-Request-Id, problem+json) and audited.
@Suite struct ListenerEdgesTests {
    static let hook = "e6db9c1a-d15f-4248-81fa-5b61fc321def"
    static let event = "29dd8606-4e01-46cb-aca2-dd6022e74865"
    static let path = "/hooks/\(hook)/requests/\(event)/redeliver"

    /// One exchange of raw bytes; the whole answer and whether the gateway closed after it.
    static func exchange(_ port: Int, _ bytes: [UInt8]) throws -> (HTTPResponse, closed: Bool) {
        let fd = try RawSocket.connect(port: port)
        defer { close(fd) }
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }  // the gateway may stop reading once it has answered
            sent += n
        }
        var tv = timeval(tv_sec: 0, tv_usec: 500_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var raw = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        var closed = false
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { closed = true; break }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    if !raw.isEmpty { break }  // answered, connection kept open
                    continue
                }
                throw HarnessError("recv failed: errno \(errno) (a reset instead of the answer?)")
            }
            raw.append(contentsOf: buf[0..<n])
        }
        var parser = ResponseParser(maxHeaderBytes: 1 << 20, maxBodyBytes: 1 << 24)
        guard case .complete(let r) = try parser.feed(raw) else { throw HarnessError("incomplete answer: \(raw.count) bytes") }
        return (HTTPResponse(status: r.status, headers: r.headers.map { ($0.name, $0.value) }, body: r.body), closed)
    }

    @Test func everyMalformedOrHostileRequestIsAnsweredAndAuditedByTheGateway() throws {
        try withRig("edges", extra: ["limits": ["max_body_bytes": 1024]]) { rig in
            let key = rig.key.key
            let head = "POST \(Self.path) HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer \(key)\r\n"
            struct Case { let name: String; let bytes: [UInt8]; let status: Int; let decision: String; let closes: Bool; let ids: Bool }
            let cases: [Case] = [
                Case(name: "two Content-Length", bytes: Array((head + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd").utf8),
                     status: 400, decision: "bad_request", closes: true, ids: true),
                Case(name: "Content-Length +3", bytes: Array((head + "Content-Length: +3\r\n\r\nabc").utf8),
                     status: 400, decision: "bad_request", closes: true, ids: true),
                Case(name: "gzip, chunked", bytes: Array((head + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").utf8),
                     status: 400, decision: "bad_request", closes: true, ids: true),
                Case(name: "CL and chunked", bytes: Array((head + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").utf8),
                     status: 400, decision: "bad_request", closes: true, ids: true),
                Case(name: "HTTP/3.0", bytes: Array("POST \(Self.path) HTTP/3.0\r\nHost: gw\r\nAuthorization: Bearer \(key)\r\n\r\n".utf8),
                     status: 505, decision: "bad_request", closes: true, ids: true),
                Case(name: "malformed request line", bytes: Array("POST\(Self.path)HTTP/1.1\r\n\r\n".utf8),
                     status: 400, decision: "bad_request", closes: true, ids: false),
                Case(name: "unknown method on the route", bytes: Array("BREW \(Self.path) HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".utf8),
                     status: 405, decision: "method_not_allowed", closes: true, ids: true),
                Case(name: "unknown method elsewhere", bytes: Array("BREW /pot HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".utf8),
                     status: 501, decision: "method_not_allowed", closes: true, ids: false),
                Case(name: "70 KB of headers", bytes: Array((head + "X-Pad: " + String(repeating: "p", count: 70_000) + "\r\n\r\n").utf8),
                     status: 431, decision: "too_large", closes: true, ids: true),
                Case(name: "1 MB body", bytes: Array((head + "Content-Length: 1048576\r\n\r\n").utf8) + Array(repeating: 0x62, count: 1 << 20),
                     status: 413, decision: "too_large", closes: true, ids: true),
                Case(name: "1 MB chunked body", bytes: Array((head + "Transfer-Encoding: chunked\r\n\r\n100000\r\n").utf8)
                     + Array(repeating: 0x63, count: 1 << 20) + Array("\r\n0\r\n\r\n".utf8),
                     status: 413, decision: "too_large", closes: true, ids: true),
                Case(name: "folded header", bytes: Array((head + "X-A: b\r\n c\r\n\r\n").utf8),
                     status: 400, decision: "bad_request", closes: true, ids: true),
            ]
            var ids: [(Case, String)] = []
            for c in cases {
                let (r, closed) = try Self.exchange(rig.gw.port, c.bytes)
                #expect(r.status == c.status, "\(c.name): \(r.status) \(r.text)")
                #expect(r.header("Content-Type") == "application/problem+json", "\(c.name)")
                let id = try #require(r.header("X-Request-Id"), "\(c.name)")
                #expect(r.json["request_id"] as? String == id && r.json["status"] as? Int == c.status, "\(c.name)")
                #expect(r.json["type"] as? String == "urn:hookgate:problem:\(c.decision)", "\(c.name)")
                #expect(closed == c.closes, "\(c.name): closed \(closed)")
                if c.closes { #expect(r.header("Connection") == "close", "\(c.name)") }
                ids.append((c, id))
            }
            #expect(rig.sim.requests.isEmpty, "nothing reached Hookshot")
            rig.gw.stop()
            let pairs = try AuditIntegrationTests.pairs(rig.dir + "/audit.sqlite3")
            #expect(pairs.count == cases.count)
            for (c, id) in ids {
                let row = try #require(pairs[id], "\(c.name): no audit pair")
                #expect(row["status"] == .int(Int64(c.status)), "\(c.name)")
                #expect(row["decision"] == .text(c.decision), "\(c.name)")
                #expect(row["completed_at"] != .null, "\(c.name)")
                if c.ids {
                    #expect(row["hook_id"] == .text(Self.hook) && row["event_request_id"] == .text(Self.event), "\(c.name)")
                    #expect(row["path"] == .text(Self.path), "\(c.name)")
                }
                if c.ids && c.bytes.starts(with: Array(head.utf8)) {
                    #expect(row["key_fingerprint"] == .text(KeyDigest.fingerprint(key)), "\(c.name): \(row["key_fingerprint"] ?? .null)")
                    #expect(row["team"] == .text("claims"), "\(c.name)")
                }
            }
        }
    }

    @Test func aQueryStringSecretNeverReachesTheLogOrTheAudit() throws {
        try withRig("query-secret") { rig in
            let secret = "qs-secret-\(UUID().uuidString)"
            for target in [Self.path + "?access_token=\(secret)", "/elsewhere?access_token=\(secret)"] {
                let r = try RawHTTP.request(port: rig.gw.port, target: target, headers: rig.auth)
                #expect(r.status == 400 || r.status == 404)
                #expect(!r.text.contains(secret))
            }
            rig.gw.stop()
            #expect(!rig.gw.child.stderrLines.joined().contains(secret))
            #expect(!rig.gw.child.stderrLines.joined().contains("access_token"))
            let db = try Data(contentsOf: URL(fileURLWithPath: rig.dir + "/audit.sqlite3"))
            #expect(db.range(of: Data(secret.utf8)) == nil)
        }
    }

    @Test func absoluteFormPipeliningAndHeadAreServed() throws {
        try withRig("forms") { rig in
            let auth = "Authorization: Bearer \(rig.key.key)\r\n"
            let absolute = "POST http://127.0.0.1:\(rig.gw.port)\(Self.path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(auth)Connection: close\r\n\r\n"
            let (r, closed) = try Self.exchange(rig.gw.port, Array(absolute.utf8))
            #expect(r.status == 200 && closed)
            #expect(r.json["hook_id"] as? String == Self.hook)
            #expect(rig.sim.requests.last?["target"] as? String == Self.path, "forwarded in origin-form")

            // Three pipelined requests on one connection, answered in order.
            let one = "POST \(Self.path) HTTP/1.1\r\nHost: gw\r\n\(auth)X-Request-Id: n%d\r\n\r\n"
            let pipelined = (1...3).map { String(format: one, $0) }.joined() + "GET /nope HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
            let raw = try RawHTTP.roundTrip(port: rig.gw.port, bytes: Array(pipelined.utf8), timeout: 5)
            // Answers follow one another with no separator: split at each status line.
            let statuses = String(decoding: raw, as: UTF8.self).components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
            #expect(statuses == ["200", "200", "200", "404"])

            let headReq = "HEAD \(Self.path) HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
            let headRaw = String(decoding: try RawHTTP.roundTrip(port: rig.gw.port, bytes: Array(headReq.utf8), timeout: 5), as: UTF8.self)
            #expect(headRaw.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
            #expect(headRaw.contains("\r\nX-Request-Id: "))
            #expect(headRaw.hasSuffix("\r\n\r\n"), "a HEAD answer has no body")
        }
    }

    @Test func expectContinueGetsA100OrAnEarly413() throws {
        try withRig("expect", extra: ["limits": ["max_body_bytes": 1024]]) { rig in
            let head = "POST \(Self.path) HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer \(rig.key.key)\r\nExpect: 100-continue\r\n"
            let fd = try RawSocket.connect(port: rig.gw.port)
            defer { close(fd) }
            let small = Array((head + "Content-Length: 10\r\n\r\n").utf8)
            #expect(send(fd, small, small.count, Int32(MSG_NOSIGNAL)) == small.count)
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buf, buf.count, 0)
            #expect(String(decoding: buf[0..<max(n, 0)], as: UTF8.self) == "HTTP/1.1 100 Continue\r\n\r\n")
            let body = Array("0123456789".utf8)
            #expect(send(fd, body, body.count, Int32(MSG_NOSIGNAL)) == body.count)
            let m = recv(fd, &buf, buf.count, 0)
            #expect(String(decoding: buf[0..<max(m, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 200 OK\r\n"))

            let (big, closed) = try Self.exchange(rig.gw.port, Array((head + "Content-Length: 5000\r\n\r\n").utf8))
            #expect(big.status == 413 && closed)
        }
    }
}
