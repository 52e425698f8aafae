import Testing
@testable import Hookgate

/// The main listener's HTTP/1.1 request parser: framing (RFC 9112 §6.3), limits, and what a
/// refused request still tells the audit.
@Suite struct RequestParserTests {
    static let path = "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/29dd8606-4e01-46cb-aca2-dd6022e74865/redeliver"

    enum Outcome {
        case request(ParsedRequest)
        case error(RequestError)
        case incomplete
    }

    /// Feeds `text` (in pieces of `chunk` bytes) and returns the first outcome.
    static func parse(_ text: String, limits: RequestParser.Limits = RequestParser.Limits(), chunk: Int = .max) -> Outcome {
        var parser = RequestParser(limits: limits)
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            let end = min(bytes.count, i + max(1, min(chunk, bytes.count)))
            parser.append(bytes[i..<end])
            i = end
            while true {
                switch parser.parse() {
                case .needMore: break
                case .awaitingBody: continue
                case .complete(let r): return .request(r)
                case .failed(let e): return .error(e)
                }
                break
            }
        }
        return .incomplete
    }

    static func request(_ text: String, _ limits: RequestParser.Limits = RequestParser.Limits()) throws -> ParsedRequest {
        guard case .request(let r) = parse(text, limits: limits) else { throw ParserTestError("no request from \(text.debugDescription): \(parse(text, limits: limits))") }
        return r
    }

    static func error(_ text: String, _ limits: RequestParser.Limits = RequestParser.Limits()) throws -> RequestError {
        guard case .error(let e) = parse(text, limits: limits) else { throw ParserTestError("no error from \(text.debugDescription)") }
        return e
    }

    @Test func parsesARequestInAnySplit() throws {
        let text = "POST \(Self.path) HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer k1\r\nX-Request-Id: abc\r\nContent-Length: 5\r\n\r\nhello"
        for chunk in [1, 2, 3, 7, 64, .max] {
            guard case .request(let r) = Self.parse(text, chunk: chunk) else {
                Issue.record("chunk \(chunk): no request")
                continue
            }
            #expect(r.head.method == "POST")
            #expect(r.head.target == Self.path)
            #expect(r.head.version == .http11)
            #expect(r.head.keepAlive)
            #expect(r.head.values("authorization") == ["Bearer k1"])
            #expect(r.head.first("X-REQUEST-ID") == "abc")
            #expect(r.bodyLength == 5)
            #expect(r.body.isEmpty, "bodies are dropped unless retained")
        }
    }

    @Test func retainsTheBodyWhenAsked() throws {
        let r = try Self.request("POST /t HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", RequestParser.Limits(retainBody: true))
        #expect(r.body == Array("abc".utf8))
    }

    @Test func pipelinedRequestsComeOneAfterTheOther() throws {
        var parser = RequestParser(limits: RequestParser.Limits())
        parser.append(Array("POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyGET /b HTTP/1.1\r\n\r\nPOST /c HT".utf8))
        guard case .complete(let a) = parser.parse() else { Issue.record("no first request"); return }
        #expect(a.head.target == "/a" && a.bodyLength == 2)
        parser.next()
        guard case .complete(let b) = parser.parse() else { Issue.record("no second request"); return }
        #expect(b.head.method == "GET" && b.head.target == "/b")
        parser.next()
        guard case .needMore = parser.parse() else { Issue.record("third request is incomplete"); return }
        #expect(parser.started)
        parser.append(Array("TP/1.1\r\nConnection: close\r\n\r\n".utf8))
        guard case .complete(let c) = parser.parse() else { Issue.record("no third request"); return }
        #expect(c.head.target == "/c" && !c.head.keepAlive)
    }

    @Test func decodesChunkedBodiesWithinTheLimit() throws {
        let r = try Self.request("POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
                                 RequestParser.Limits(retainBody: true))
        #expect(r.bodyLength == 15)
        #expect(String(decoding: r.body, as: UTF8.self) == "hello0123456789")
        let tooLong = try Self.error("POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n", RequestParser.Limits(maxBodyBytes: 15))
        #expect(tooLong.kind == .bodyTooLarge && tooLong.status == 413)
        #expect(try Self.error("POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").kind == .badFraming)
        #expect(try Self.error("POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n").kind == .badFraming)
        #expect(try Self.error("POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n").kind == .badFraming)
    }

    @Test func conflictingOrInvalidFramingIsRefused() throws {
        let cases = [
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: 3\r\nContent-Length: 3",
            "Content-Length: 3, 3",
            "Content-Length: +3",
            "Content-Length: -1",
            "Content-Length: 0x3",
            "Content-Length: ",
            "Content-Length: 3\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: chunked, gzip",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: identity",
            "Transfer-Encoding: chunked\r\nContent-Length: 3",
        ]
        for fields in cases {
            let e = try Self.error("POST \(Self.path) HTTP/1.1\r\nHost: gw\r\n\(fields)\r\n\r\nabc")
            #expect(e.kind == .badFraming && e.status == 400, "\(fields.debugDescription): \(e.kind)")
            #expect(e.head.target == Self.path, "the target is kept for the record")
        }
        // Transfer-Encoding is an HTTP/1.1 feature.
        #expect(try Self.error("POST /t HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").kind == .badFraming)
    }

    @Test func malformedHeadsAreRefused() throws {
        let cases: [(String, RequestError.Kind)] = [
            ("POST /t HTTP/1.1\r\nBad Name: x\r\n\r\n", .malformed),
            ("POST /t HTTP/1.1\r\nName : x\r\n\r\n", .malformed),
            ("POST /t HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", .malformed),
            ("POST /t HTTP/1.1\r\nNo colon\r\n\r\n", .malformed),
            ("POST /t HTTP/1.1\r\nA: b\u{0}c\r\n\r\n", .malformed),
            ("POST /t HTTP/1.1\r\nA: b\rc\r\n\r\n", .malformed),
            ("POST /t HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .malformed),
            ("POST  /t HTTP/1.1\r\n\r\n", .malformed),
            ("POST /t  HTTP/1.1\r\n\r\n", .malformed),
            ("POST /t\r\n\r\n", .malformed),
            ("POST /t HTTP/1.1 extra\r\n\r\n", .malformed),
            ("POST /t http/1.1\r\n\r\n", .malformed),
            ("PO(ST /t HTTP/1.1\r\n\r\n", .malformed),
            ("POST /t\u{7F} HTTP/1.1\r\n\r\n", .malformed),
            ("POST /t HTTP/1.1\nHost: x\n\n\r\n\r\n", .malformed),
            ("POST /t HTTP/3.0\r\n\r\n", .unsupportedVersion),
            ("POST /t HTTP/2.0\r\n\r\n", .unsupportedVersion),
            ("POST /t HTTP/0.9\r\n\r\n", .unsupportedVersion),
            ("POST ftp://x/t HTTP/1.1\r\n\r\n", .malformed),
        ]
        for (text, kind) in cases {
            let e = try Self.error(text)
            #expect(e.kind == kind, "\(text.debugDescription): \(e.kind) \(e.detail)")
        }
        #expect(try Self.error("POST /t HTTP/3.0\r\n\r\n").status == 505)
    }

    @Test func theHeadLimitIsExactAndA431KeepsTheFieldsReadSoFar() throws {
        let head = "POST \(Self.path) HTTP/1.1\r\nAuthorization: Bearer k1\r\n\r\n"
        let exact = head.utf8.count
        #expect(try Self.request(head, RequestParser.Limits(maxHeadBytes: exact)).head.size == exact)
        let over = try Self.error(head, RequestParser.Limits(maxHeadBytes: exact - 1))
        #expect(over.kind == .headTooLarge && over.status == 431)
        // 70 KB of headers, never finished: refused as soon as the limit is crossed.
        let big = "POST \(Self.path) HTTP/1.1\r\nAuthorization: Bearer k1\r\nX-Pad: " + String(repeating: "a", count: 70_000)
        let e = try Self.error(big)
        #expect(e.kind == .headTooLarge)
        #expect(e.head.method == "POST" && e.head.target == Self.path)
        #expect(e.head.values("Authorization") == ["Bearer k1"])
        #expect(!e.head.complete)
    }

    @Test func aBodyOverTheLimitIsRefusedAsSoonAsItIsKnown() throws {
        let limits = RequestParser.Limits(maxBodyBytes: 10)
        // Declared: refused on the head alone, before any body byte.
        let declared = try Self.error("POST \(Self.path) HTTP/1.1\r\nAuthorization: Bearer k\r\nContent-Length: 11\r\n\r\n", limits)
        #expect(declared.kind == .bodyTooLarge)
        #expect(declared.head.values("Authorization") == ["Bearer k"])
        #expect(try Self.request("POST /t HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", limits).bodyLength == 10)
    }

    @Test func expectContinueIsAnnouncedOnceBeforeTheBody() throws {
        var parser = RequestParser(limits: RequestParser.Limits())
        parser.append(Array("POST /t HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n".utf8))
        guard case .awaitingBody(let head) = parser.parse() else { Issue.record("no announcement"); return }
        #expect(head.expectsContinue)
        guard case .needMore = parser.parse() else { Issue.record("announced twice"); return }
        parser.append(Array("abc".utf8))
        guard case .complete(let r) = parser.parse() else { Issue.record("no request"); return }
        #expect(r.bodyLength == 3)
    }

    @Test func absoluteFormTargetsBecomeOriginForm() throws {
        #expect(try Self.request("POST http://gw.example:8080\(Self.path) HTTP/1.1\r\n\r\n").head.target == Self.path)
        #expect(try Self.request("POST HTTPS://gw.example\(Self.path)?a=b HTTP/1.1\r\n\r\n").head.target == Self.path + "?a=b")
        #expect(try Self.request("GET http://gw.example HTTP/1.1\r\n\r\n").head.target == "/")
        #expect(try Self.request("OPTIONS * HTTP/1.1\r\n\r\n").head.target == "*")
        #expect(try Self.request("CONNECT gw.example:443 HTTP/1.1\r\n\r\n").head.target == "gw.example:443")
    }

    @Test func connectionPersistenceFollowsTheVersion() throws {
        #expect(try Self.request("GET / HTTP/1.1\r\n\r\n").head.keepAlive)
        #expect(try !Self.request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").head.keepAlive)
        #expect(try !Self.request("GET / HTTP/1.0\r\n\r\n").head.keepAlive)
        #expect(try Self.request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").head.keepAlive)
        #expect(try Self.request("\r\n\r\nGET / HTTP/1.1\r\n\r\n").head.target == "/", "leading empty lines are skipped")
    }

    @Test func aPartialHeadKeepsItsCompleteFieldsOnly() throws {
        var parser = RequestParser(limits: RequestParser.Limits())
        parser.append(Array("POST \(Self.path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k9\r\nX-Slow: aaa".utf8))
        guard case .needMore = parser.parse() else { Issue.record("complete?"); return }
        let partial = parser.partialHead()
        #expect(partial.method == "POST" && partial.target == Self.path)
        #expect(partial.values("Authorization") == ["Bearer k9"])
        #expect(partial.values("X-Slow").isEmpty)
        // A garbage request line still gives something to record.
        let garbage = RequestParser.lenientHead(Array("\u{1}\u{2} junk".utf8))
        #expect(garbage.method == "" && garbage.target == "junk")
    }
}

struct ParserTestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
